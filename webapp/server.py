"""The web server: Daphne, with two changes to how it takes request bodies.

    python -m webapp.server -b 127.0.0.1 -p 8000 webapp.asgi:application   (Daphne's own options)

1. No form parsing in Twisted. Daphne's requests are Twisted `http.Request`s, and Twisted parses every
   multipart/form-data POST body into `request.args` before Daphne sees it (Daphne never reads them):
   the whole body is decoded in memory by the `email` package, several copies deep (a 120 MiB upload
   raised the web process by 1.1 GB, before authentication), and a body it cannot parse gets a bare
   `HTTP/1.1 400 Bad Request` with no headers from `HTTPChannel._respondToBadRequestAndDisconnect`.
   Twisted's `parsePOSTFormSubmission=False` turns that off; Django parses multipart itself, after
   authentication, streaming files to disk.
2. Bodies over settings.MAX_REQUEST_BYTES are refused by Content-Length (or, when chunked, as soon as
   they pass it): their bytes are dropped as they arrive instead of being kept, and the answer is 413
   in the API's JSON error shape. Without this, Daphne hands the whole body to the application at once,
   in memory, however large.
3. Large bodies reach the application as it reads them. Twisted keeps a body over 100 kB in a
   temporary file, but Daphne then reads the whole file into `http.request` messages on the
   application's queue at once, before the application takes the first: a 50 MiB import raised the
   web process by 51 MiB. A body over LAZY_BODY_BYTES is queued as `_BodyChunk` placeholders (their
   lengths only), and `webapp.asgi.read_lazy_bodies` reads each from the file as the application
   receives it, so the process holds one chunk at a time.
4. Websocket messages up to settings.WEBSOCKET_MAX_MESSAGE_BYTES (Daphne's default: 1 MiB), so that a
   frame over the trace socket's own, lower limit gets its `too_large` error frame instead of a
   dropped connection. Options given on the command line still win.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

import daphne.server  # installs Twisted's asyncio reactor: import before anything that imports the reactor
from daphne.http_protocol import HTTPFactory, WebRequest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def _limit() -> int:
    from django.conf import settings

    return settings.MAX_REQUEST_BYTES


class _Discard(io.RawIOBase):
    """Where the body of a refused request goes: nowhere (Twisted still calls tell/seek on it)."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0


LAZY_BODY_BYTES = 1024 * 1024  # smaller bodies are queued as bytes, as Daphne does


class _BodyChunk:
    """``length`` bytes of a request body at ``offset`` of its temporary file, read when the
    application receives the message (``bytes(chunk)``). Daphne needs only its length."""

    __slots__ = ("file", "length", "offset")

    def __init__(self, file: Any, offset: int, length: int) -> None:
        self.file, self.offset, self.length = file, offset, length

    def __len__(self) -> int:
        return self.length

    def __bytes__(self) -> bytes:
        self.file.seek(self.offset)
        data = self.file.read(self.length)
        if len(data) != self.length:
            raise OSError(f"request body file ended after {len(data)} of {self.length} bytes")
        return data


class _LazyBody:
    """The request's body file as Daphne reads it: ``read(n)`` gives placeholders, not bytes."""

    def __init__(self, file: Any, size: int) -> None:
        self.file, self.size, self.position = file, size, 0

    @property
    def closed(self) -> bool:
        return self.file.closed

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset if whence == 0 else (self.size + offset if whence == 2 else self.position + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, n: int = -1) -> _BodyChunk:
        length = self.size - self.position if n is None or n < 0 else min(n, self.size - self.position)
        chunk = _BodyChunk(self.file, self.position, max(0, length))
        self.position += chunk.length
        return chunk

    def close(self) -> None:
        self.file.close()


class StudioRequest(WebRequest):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        self.body_refused = False
        self.body_received = 0
        super().__init__(*args, **kwargs)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > _limit():
            self._refuse_body()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self.body_received += len(data)
        if not self.body_refused and self.body_received > _limit():
            self._refuse_body()  # chunked: no Content-Length said so in advance
        if not self.body_refused:
            super().handleContentChunk(data)

    def _refuse_body(self) -> None:
        """Answer 413 at once, before the body arrives (the request line is not parsed into the Request
        yet, so the answer is written to the connection as is, as Twisted does for its own 400s), then
        drop whatever of the body still comes; the connection closes when it is all in."""
        self.body_refused = True
        old = getattr(self, "content", None)
        if old is not None:
            old.close()
        self.content = _Discard()
        body = json.dumps(
            {"code": "too_large", "detail": f"The request body is larger than {_limit()} bytes, the limit."}
        ).encode()
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )

    def process(self) -> Any:
        if not self.body_refused:
            if self.body_received > LAZY_BODY_BYTES:  # Twisted's temporary file (bodies over 100 kB)
                self.content = _LazyBody(self.content, self.body_received)
            return super().process()
        self.channel.transport.loseConnection()
        return None


class StudioHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = StudioRequest
        return protocol


def main() -> None:
    import django

    django.setup()
    # Daphne's Server builds its factory by this module-level name; there is no option to pass one.
    daphne.server.HTTPFactory = StudioHTTPFactory
    from daphne.cli import CommandLineInterface
    from django.conf import settings

    # Defaults first: argparse keeps the last value, so the command line's own options win.
    cap = str(settings.WEBSOCKET_MAX_MESSAGE_BYTES)
    sys.argv[1:1] = ["--websocket-max-message-size", cap, "--websocket-max-frame-size", cap]

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
