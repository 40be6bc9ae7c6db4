"""The live stack for websocket tests: a real Daphne, a real Celery `generate` worker, Redis, and
small real models. Tests here use `transactional_db`: the worker and Daphne see committed rows."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets

from tests.support.livefixtures import Live

pytestmark = pytest.mark.slow


class Socket:
    """A websocket client that keeps every event it received, in order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, live: Live, trace_id: int, user: str | None = "viewer", last_seq: int | None = None):
        ws = await websockets.connect(
            live.url(trace_id, last_seq), additional_headers=live.headers(user), max_size=2**22
        )
        return cls(ws)

    async def recv(self, timeout: float = 20) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, predicate, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event; got {[e.get('type') for e in self.events][-20:]}")
            event = await self.recv(timeout=left)
            if predicate(event):
                return event

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def act(self, timeout: float = 20, **message: Any) -> dict[str, Any]:
        """Send an action and wait for its ack or error (other events keep being recorded)."""
        rid = message.setdefault("request_id", f"r{time.monotonic_ns()}")
        await self.send(**message)
        return await self.until(lambda e: e.get("type") in ("ack", "error") and e.get("request_id") == rid, timeout)

    def sequenced(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "seq" in e and e["type"] != "snapshot"]

    async def close(self) -> None:
        await self.ws.close()


def finished(event: dict[str, Any]) -> bool:
    return event.get("type") == "trace.status" and event["status"] in ("finished", "stopped", "failed")
