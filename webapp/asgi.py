"""ASGI entry point: Django for HTTP, Channels for websockets (session auth, origin-checked)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django_asgi_app = get_asgi_application()

from importlib import import_module  # noqa: E402

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import CookieMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402

from annotator.routing import websocket_urlpatterns  # noqa: E402


class SocketSessionMiddleware:
    """The session of a websocket, read from its cookie at connect (as Channels' SessionMiddleware
    does) without wrapping every send: that wrapper exists to save a modified session with an HTTP
    response, and nothing saves a session over a socket (nobody logs in or out there). At 5,000 frames
    a second its checks were about a tenth of the web process's time (py-spy, bench/streaming.py)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope, receive, send):
        key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        return await self.inner(dict(scope, session=self.store(key)), receive, send)


def read_lazy_bodies(inner):
    """HTTP: a body chunk the web server queued as a placeholder (``webapp/server.py``, item 3) is
    read from the request's file when the application receives its message. A file closed under it
    (the client went away) reads as the disconnect it is."""

    async def app(scope, receive, send):
        async def receive_bytes():
            message = await receive()
            body = message.get("body")
            if body is not None and not isinstance(body, bytes | bytearray):
                try:
                    message = {**message, "body": bytes(body)}
                except ValueError:  # I/O on a closed file
                    return {"type": "http.disconnect"}
            return message

        return await inner(scope, receive_bytes, send)

    return app


application = ProtocolTypeRouter(
    {
        "http": read_lazy_bodies(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            CookieMiddleware(SocketSessionMiddleware(AuthMiddleware(URLRouter(websocket_urlpatterns))))
        ),
    }
)
