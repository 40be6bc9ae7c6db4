"""The project socket, /ws/projects/<id>/: what the team's pages need to hear while they are open.

Events (not sequenced; a page that connects reads the current state over REST, then applies them):
``queue.reviewed`` {trace, prompt, review_count, verdict, disputed, by}, ``queue.assigned``
{annotators, prompts, created}, ``queue.trace`` {trace, prompt, status} (a trace was created or
ended), ``queue.adjudicated`` {trace, verdict}, ``run.finished`` {run, status, stage, output_model,
error}. Members only (the same handshake as every studio socket); read-only.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from annotator import events
from annotator.consumers import accept_member
from annotator.models import Project


class ProjectConsumer(AsyncWebsocketConsumer):
    project_id: int
    joined: bool = False

    async def connect(self) -> None:
        member = await accept_member(self, Project, "project_id")
        if member is None:
            return
        self.project_id, role = member
        await self.channel_layer.group_add(events.project_group(self.project_id), self.channel_name)
        self.joined = True
        await self.send(text_data=json.dumps({"type": "hello", "project": self.project_id, "role": role}))

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(events.project_group(self.project_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=json.dumps({"type": "error", "code": "read_only",
                                              "detail": "This socket only streams project events."}))

    async def project_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message["event"]))
