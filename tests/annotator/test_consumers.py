"""The trace consumer in process (channels' WebsocketCommunicator): what the live server cannot be made
to do on purpose, a bug inside an action, answers a generic error frame, is logged, and keeps the
socket. Bad client input is tested over real sockets in tests/annotator/live/test_socket_input.py."""

from __future__ import annotations

import asyncio
import logging

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from annotator.routing import websocket_urlpatterns
from annotator.services import labels
from tests.factories import make_project, make_prompt, make_trace


def test_a_bug_in_an_action_answers_internal_and_keeps_the_socket(transactional_db, monkeypatch, caplog):
    owner = get_user_model().objects.create_user(username="owner", password="pw-long-enough-123")
    project = make_project(owner=owner)
    trace = make_trace(project, make_prompt(project, actor=owner), steps=["1. 12 + 30 = 42"], answer="45")

    def broken(**kwargs):
        raise KeyError("secret-internals")

    monkeypatch.setattr(labels, "step_label_set", broken)

    async def scenario():
        socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/traces/{trace.pk}/")
        socket.scope["user"] = owner
        connected, _ = await socket.connect()
        assert connected
        replies = []
        for action in ("label", "unreview"):
            await socket.send_json_to({"action": action, "step_index": 0, "rating": 1, "request_id": action})
            while (reply := await socket.receive_json_from(10))["type"] not in ("ack", "error"):
                pass
            replies.append(reply)
        await socket.disconnect()
        return replies

    with caplog.at_level(logging.ERROR, logger="annotator.consumers"):
        failed, after = asyncio.run(scenario())
    assert (failed["type"], failed["code"], failed["request_id"]) == ("error", "internal", "label")
    assert "secret-internals" not in failed["detail"]
    assert (after["type"], after["request_id"]) == ("ack", "unreview")
    assert any(r.exc_info and "secret-internals" in str(r.exc_info[1]) for r in caplog.records)
