"""Websocket routes. The live trace protocol (/ws/traces/<id>/) is added by the live-review work."""

websocket_urlpatterns: list = []
