from django.urls import re_path

from annotator.consumers import TraceConsumer

websocket_urlpatterns = [
    re_path(r"^ws/traces/(?P<trace_id>\d+)/$", TraceConsumer.as_asgi()),
]
