from django.urls import re_path

from annotator.consumers import TraceConsumer
from annotator.project_consumer import ProjectConsumer
from annotator.run_consumer import RunConsumer

websocket_urlpatterns = [
    re_path(r"^ws/traces/(?P<trace_id>\d+)/$", TraceConsumer.as_asgi()),
    re_path(r"^ws/runs/(?P<run_id>\d+)/$", RunConsumer.as_asgi()),
    re_path(r"^ws/projects/(?P<project_id>\d+)/$", ProjectConsumer.as_asgi()),
]
