"""The web process's fan-out of trace events: one Redis subscription per process, one delivery per
event and viewer, no queue in between.

The channel layer (channels_redis pub/sub) delivers a group message by putting it on a queue of each
viewer in the group; each viewer's consumer then decodes it, dispatches it in a new task and sends
it. At 20 traces x 5 viewers (about 5,000 sends a second) that machinery was most of the web
process's time, and its queues grew for the whole run: the added token latency's tail (py-spy and
the lag at dispatch, bench/streaming.py). Here the process subscribes once to each trace group that
has viewers in it (the same Redis channel the layer uses: the publish script is unchanged), decodes
each message once, and hands it to each viewer's ``deliver`` in arrival order, in one task.

A viewer that must wait for something (its replay at connect, a gap to fill from the event log)
keeps what arrives meanwhile in a backlog of its own and sends it after, in order
(``annotator.consumers.TraceConsumer``); the others are not held up. Redis going away: the
subscription is opened again, and each viewer then reads the events it missed meanwhile from the
event log (or gets a snapshot when the log no longer has them).

``settings.TRACE_FANOUT = "layer"`` keeps the channel layer's path (the baseline of
bench/streaming.py, and what other channel layers get).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

RECONNECT_S = (0.1, 0.2, 0.5, 1.0, 2.0)


class Viewer(Protocol):
    async def deliver(self, message: dict[str, Any]) -> None: ...

    async def resync(self) -> None: ...


def enabled() -> bool:
    from annotator.events import group_channel_prefix

    return settings.TRACE_FANOUT == "process" and group_channel_prefix() is not None


def group_channel(group: str) -> str:
    from annotator.events import group_channel_prefix

    return f"{group_channel_prefix()}{group}"


class TraceFanout:
    """The fan-out of the running event loop (Daphne's): ``get()``."""

    _instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TraceFanout] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.viewers: dict[str, dict[Viewer, None]] = {}  # Redis channel -> its viewers, in join order
        self.layer = get_channel_layer()
        self.pubsub: Any = None
        self.reader: asyncio.Task | None = None
        self.broken = False  # the subscription failed: the reader opens a new one with every channel
        self.wake = asyncio.Event()

    @classmethod
    def get(cls) -> TraceFanout:
        loop = asyncio.get_running_loop()
        fanout = cls._instances.get(loop)
        if fanout is None:
            fanout = cls._instances[loop] = cls()
        return fanout

    async def join(self, group: str, viewer: Viewer) -> None:
        """From now on, ``viewer.deliver`` gets every message of ``group`` this process receives."""
        channel = group_channel(group)
        viewers = self.viewers.setdefault(channel, {})
        viewers[viewer] = None
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._read(), name="trace-fanout")
        if len(viewers) == 1:
            await self._pubsub().subscribe(channel)
            self.wake.set()

    async def leave(self, group: str, viewer: Viewer) -> None:
        channel = group_channel(group)
        viewers = self.viewers.get(channel)
        if viewers is None or viewer not in viewers:
            return
        del viewers[viewer]
        if not viewers:
            del self.viewers[channel]
            if self.pubsub is not None:
                try:
                    await self.pubsub.unsubscribe(channel)
                except Exception:  # Redis away: the next subscription is opened without it
                    log.warning("could not unsubscribe from %s", channel, exc_info=True)

    def _pubsub(self) -> Any:
        if self.pubsub is None:
            import redis.asyncio

            host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
            self.pubsub = redis.asyncio.Redis.from_url(host).pubsub(ignore_subscribe_messages=True)
        return self.pubsub

    async def _reopen(self) -> None:
        old, self.pubsub = self.pubsub, None
        if old is not None:
            try:
                await old.aclose()
            except Exception:
                log.debug("closing the old subscription failed", exc_info=True)
        if self.viewers:
            await self._pubsub().subscribe(*self.viewers)

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                if self.broken:
                    await self._reopen()
                    self.broken = False
                    # What was published while the subscription was down reached nobody here, and
                    # a trace that ended meanwhile sends nothing more that would show the gap: each
                    # viewer reads what it missed from the event log.
                    for viewers in list(self.viewers.values()):
                        for viewer in list(viewers):
                            await viewer.resync()
                    continue
                if self.pubsub is None or not self.pubsub.subscribed:  # nobody watches here: wait for a join
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                message = await self.pubsub.get_message(timeout=1.0)
                failures = 0
                if message is not None and message.get("type") == "message":
                    await self._deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.broken = True
                pause = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
                failures += 1
                log.warning("trace fan-out: the subscription failed; opening it again in %.1f s", pause,
                            exc_info=failures == 1)
                await asyncio.sleep(pause)

    async def _deliver(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        viewers = self.viewers.get(channel.decode() if isinstance(channel, bytes) else channel)
        if not viewers:
            return
        event = self.layer.deserialize(message["data"])
        for viewer in list(viewers):
            try:
                await viewer.deliver(event)
            except Exception:  # one viewer's failure is not the others'
                log.exception("trace fan-out: delivering to %r failed", viewer)
