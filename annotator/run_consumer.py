"""The run socket, /ws/runs/<id>/: members of the run's project watch a training run live.

On connect the client gets a snapshot (the run and every metric point so far), then the live
events the trainer publishes: ``run.progress`` {progress, status}, ``run.metrics`` {step, metrics:
{name: value}} and ``run.log`` {line}. Run events are not sequenced (unlike trace events): the group
is joined before the snapshot is read, so nothing falls between them; an event that arrives twice
(once in the snapshot, once live) carries the same step and values, so clients key metrics by
(step, name). The socket is read-only; cancelling goes through REST.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from annotator import events, selectors
from annotator.consumers import accept_member
from annotator.models import TrainingRun


def _snapshot(run_id: int) -> dict[str, Any]:
    from annotator.api.serializers import TrainingRunSerializer

    run = TrainingRun.objects.prefetch_related("snapshots").get(pk=run_id)
    return {"type": "snapshot", "run": TrainingRunSerializer(run).data, "metrics": selectors.run_metrics(run_id)}


class RunConsumer(AsyncWebsocketConsumer):
    run_id: int
    joined: bool = False

    async def connect(self) -> None:
        member = await accept_member(self, TrainingRun, "run_id")
        if member is None:
            return
        self.run_id, role = member
        await self.channel_layer.group_add(events.run_group(self.run_id), self.channel_name)
        self.joined = True
        snapshot = await database_sync_to_async(_snapshot)(self.run_id)
        snapshot["role"] = role
        await self.send(text_data=json.dumps(snapshot))

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(events.run_group(self.run_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=json.dumps({"type": "error", "code": "read_only",
                                              "detail": "This socket only streams; cancel a run through REST."}))

    async def run_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message["event"]))
