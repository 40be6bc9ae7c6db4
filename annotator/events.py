"""The one module that pushes to websocket groups.

Every event about a trace gets the next number of that trace's sequence, is kept in a capped Redis
sorted set (score = seq) and is published to the trace's channel group, all in one Lua script: Redis
runs it atomically, so viewers receive a trace's events in seq order whichever process sent them,
and a reconnecting client asks the set for everything after its last seq.

The event's JSON starts with a fixed-width `"seq"` field that the script fills in, in the stored text
and in the channel-layer message alike (same byte length, so the msgpack framing stays valid). The
web process forwards that text to each viewer as is: no decoding or re-encoding per viewer.
Presence is not sequenced (it is a fact about now, not history).

Only sending lives here. The Redis client, the key names and the flags (stop, cancel, heartbeat,
presence) are in ``annotator.flags``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from annotator.flags import redis_client, trace_events_key, trace_seq_key

log = logging.getLogger(__name__)

HISTORY = 20000  # events kept per trace for resume; older resumes get a snapshot instead
TTL_S = 7 * 24 * 3600
MARKER = "@" * 12  # replaced by the seq, right-aligned in 12 characters (JSON allows the spaces)
SEQ_PREFIX = '{"seq":'

_PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 0 and tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[1], ARGV[6])
end
local seq = redis.call('INCR', KEYS[1])
local pad = string.format('%12d', seq)
local function fill(text)
  local at = string.find(text, ARGV[4], 1, true)
  return string.sub(text, 1, at - 1) .. pad .. string.sub(text, at + 12)
end
local encoded = fill(ARGV[1])
redis.call('ZADD', KEYS[2], seq, encoded)
local n = redis.call('ZCARD', KEYS[2])
if n > tonumber(ARGV[2]) then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - tonumber(ARGV[2]) - 1) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then redis.call('PUBLISH', KEYS[3], fill(ARGV[5])) end
return encoded
"""


# Redis can go away mid-stream (a Valkey restart) and come back empty. A publish waits for it, up to
# this long, rather than failing the generation it belongs to (the viewers cannot hear anything
# meanwhile anyway). And since the sequence lived there too, each process remembers the newest seq it
# published per trace and, if the counter is gone, the script carries on from there: a viewer that
# reconnects with its last seq resumes with the next one instead of a sequence that restarted at 1
# (whose events it would drop as already seen). A web process remembers the seqs it relays too, so a
# viewer that reconnects there with the newest seq resumes even before the counter is back.
# tests/annotator/live/test_fault_valkey_restart.py.
PUBLISH_RETRY_S = 30.0
_KNOWN_SEQS_MAX = 10000
_known_seqs: dict[int, int] = {}
_known_guard = threading.Lock()


def seq_seen(trace_id: int, seq: int) -> None:
    """Remember that this process published or relayed event ``seq`` of the trace."""
    with _known_guard:
        if seq > _known_seqs.get(trace_id, 0):
            _known_seqs.pop(trace_id, None)  # re-insert: the dict's order is the order of use
            _known_seqs[trace_id] = seq
            if len(_known_seqs) > _KNOWN_SEQS_MAX:
                del _known_seqs[next(iter(_known_seqs))]


def _known_seq(trace_id: int) -> int:
    with _known_guard:
        return _known_seqs.get(trace_id, 0)


def seq_of(text: str) -> int:
    """The seq of a stored or published event text (its fixed-width first field)."""
    return int(text[len(SEQ_PREFIX) : len(SEQ_PREFIX) + 12])


def group_channel_prefix() -> str | None:
    """The Redis channel of the pub/sub layer's groups, when events can be published from the script.

    Only for the single-host, unencrypted pub/sub layer (the configured one); any other layer gets the
    message through its own group_send."""
    config = settings.CHANNEL_LAYERS["default"]
    options = config.get("CONFIG", {})
    if (
        config["BACKEND"] != "channels_redis.pubsub.RedisPubSubChannelLayer"
        or len(options.get("hosts", [])) != 1
        or options.get("symmetric_encryption_keys")
    ):
        return None
    return f"{options.get('prefix', 'asgi')}__group__"


_local = threading.local()


class _SendLoop:
    """One event loop per process, in its own thread, for the group_sends of sync code (presence, run
    events, and trace events when the channel layer is not the direct-publish pub/sub one).

    async_to_sync would start a fresh loop per call, and channels-redis keeps its connections per loop:
    every send would open new Redis connections. Sends leave in submission order (one loop, FIFO).
    """

    _instance: _SendLoop | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="group-send", daemon=True).start()

    @classmethod
    def get(cls) -> _SendLoop:
        with cls._guard:
            if cls._instance is None or cls._instance.pid != os.getpid():  # a forked child needs its own
                cls._instance = cls()
            return cls._instance

    def send(self, group: str, message: dict[str, Any]) -> None:
        # Not awaited: a generating thread must not wait for Redis round trips of other traces'
        # events (measured: head-of-line blocking at 20 traces). Sends still leave in submission
        # order (one loop, FIFO), and the event log covers anything a viewer misses.
        future = asyncio.run_coroutine_threadsafe(get_channel_layer().group_send(group, message), self.loop)
        future.add_done_callback(_log_send_error)


def _log_send_error(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("group_send failed: %r", future.exception())


def _group_send(group: str, message: dict[str, Any]) -> None:
    _SendLoop.get().send(group, message)


def _publish_script() -> Any:
    """The publish script, registered once per thread on that thread's client."""
    script = getattr(_local, "publish", None)
    if script is None:
        script = _local.publish = redis_client().register_script(_PUBLISH)
    return script


def trace_group(trace_id: int) -> str:
    return f"trace.{trace_id}"


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def current_seq(trace_id: int) -> int:
    return int(redis_client().get(trace_seq_key(trace_id)) or 0)


def events_after(trace_id: int, last_seq: int) -> list[str] | None:
    """Texts of the events with seq > last_seq, in order; None when some are no longer kept."""
    client = redis_client()
    current = max(current_seq(trace_id), _known_seq(trace_id))
    if last_seq > current:
        return None  # a seq this server never issued (e.g. Redis was reset): start over from a snapshot
    if last_seq == current:
        return []
    oldest = client.zrange(trace_events_key(trace_id), 0, 0, withscores=True)
    if not oldest or int(oldest[0][1]) > last_seq + 1:
        return None
    return client.zrangebyscore(trace_events_key(trace_id), f"({last_seq}", "+inf")


def last_events(trace_id: int, upto: int, count: int = 50) -> list[dict[str, Any]]:
    """The newest `count` events with seq <= upto, newest first."""
    raw = redis_client().zrevrangebyscore(trace_events_key(trace_id), upto, "-inf", start=0, num=count)
    return [json.loads(item) for item in raw]


def events_between(trace_id: int, after: int, upto: int) -> list[str]:
    """Texts of the events with after < seq <= upto, in order."""
    return redis_client().zrangebyscore(trace_events_key(trace_id), f"({after}", upto)


def _encoded(trace_id: int, event_type: str, payload: dict[str, Any]) -> tuple[str, str, bytes]:
    """(event text with the seq marker, Redis channel to publish on or "", channel-layer wire message)."""
    text = SEQ_PREFIX + MARKER + "," + json.dumps({"type": event_type, "trace": trace_id, **payload})[1:]
    prefix = group_channel_prefix()
    message = {"type": "trace.event", "text": text}
    wire = get_channel_layer().serialize(message) if prefix is not None else b""
    if prefix is not None and MARKER.encode() not in wire:
        prefix, wire = None, b""  # a serializer that hides the text (e.g. encryption): use group_send
    channel = f"{prefix}{trace_group(trace_id)}" if prefix else ""
    return text, channel, wire


def publish_trace_event(trace_id: int, event_type: str, **payload: Any) -> dict[str, Any]:
    """Sequence, keep and broadcast one event of a trace. Returns the event with its seq."""
    text, channel, wire = _encoded(trace_id, event_type, payload)
    encoded = _with_redis_back(lambda: _publish_script()(
        keys=[trace_seq_key(trace_id), trace_events_key(trace_id), channel],
        args=[text, HISTORY, TTL_S, MARKER, wire, _known_seq(trace_id)],
    ))
    seq_seen(trace_id, seq_of(encoded))
    if not channel:
        _group_send(trace_group(trace_id), {"type": "trace.event", "text": encoded})
    return json.loads(encoded)


class _PublishBatch:
    """The publishes of one event loop (the relay hub's), sent to Redis together: those submitted in
    one turn of the loop leave in one pipeline (one write, one read) instead of a round trip each.
    With 20 traces streaming, the socket write of each publish was the hub loop's largest cost (py-spy
    of the generate worker, bench/streaming.py). Each trace's events keep their order: the hub awaits
    a trace's publish before it submits the next, and a pipeline runs its scripts in order.

    EVALSHA without redis-py's per-execute SCRIPT EXISTS: a NOSCRIPT reply (Redis restarted empty)
    loads the script and sends the batch again; none of its scripts ran. Redis unreachable: the batch
    is sent again, for up to PUBLISH_RETRY_S (as ``publish_trace_event``)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.script = client.register_script(_PUBLISH)
        self.pending: list[tuple[list[Any], list[Any], asyncio.Future]] = []
        self.flushing: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def _start_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self.flushing.add(task)
        task.add_done_callback(self.flushing.discard)

    def submit(self, keys: list[Any], args: list[Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.pending:  # the first of this turn: flush once the turn's other publishers joined
            loop.call_soon(self._start_flush)
        self.pending.append((keys, args, future))
        return future

    async def _flush(self) -> None:
        import redis

        batch, self.pending = self.pending, []
        deadline = time.monotonic() + PUBLISH_RETRY_S
        pause = 0.05
        while True:
            try:
                results = await self._send(batch)
                if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                    await self.client.script_load(_PUBLISH)
                    results = await self._send(batch)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + pause > deadline:
                    results = [exc] * len(batch)
                    break
                log.warning("Redis unreachable; publishing again in %.2f s", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            except Exception as exc:
                results = [exc] * len(batch)
                break
        for (_keys, _args, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _send(self, batch: list[tuple[list[Any], list[Any], asyncio.Future]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for keys, args, _future in batch:
                pipe.execute_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)


_batches: Any = None


async def apublish_trace_event(trace_id: int, event_type: str, **payload: Any) -> int:
    """``publish_trace_event`` from a running event loop (the generate worker's relay hub): the same
    script, seq and wire, through that loop's asyncio Redis client and batched with the loop's other
    publishes of the same turn (``_PublishBatch``), so a publish waiting for Redis lets the loop relay
    other traces meanwhile. Returns the seq. A trace's events keep their order as long as its
    publishes are awaited one after the other (the hub does)."""
    global _batches
    import weakref

    from annotator.flags import async_redis_client

    text, channel, wire = _encoded(trace_id, event_type, payload)
    client = async_redis_client()
    if _batches is None:
        _batches = weakref.WeakKeyDictionary()
    batch = _batches.get(client)
    if batch is None:
        batch = _batches[client] = _PublishBatch(client)
    encoded = await batch.submit([trace_seq_key(trace_id), trace_events_key(trace_id), channel],
                                 [text, HISTORY, TTL_S, MARKER, wire, _known_seq(trace_id)])
    seq = seq_of(encoded)
    seq_seen(trace_id, seq)
    if not channel:
        _group_send(trace_group(trace_id), {"type": "trace.event", "text": encoded})
    return seq


def _with_redis_back(call: Any) -> Any:
    """``call()``, retried while Redis cannot be reached, for up to PUBLISH_RETRY_S."""
    import redis

    deadline = time.monotonic() + PUBLISH_RETRY_S
    pause = 0.05
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() + pause > deadline:
                raise
            log.warning("Redis unreachable; publishing again in %.2f s", pause)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def publish_presence(trace_id: int, watchers: list[dict[str, Any]]) -> None:
    _group_send(trace_group(trace_id), {"type": "trace.event", "event": {"type": "presence", "watchers": watchers}})


def publish_run_event(run_id: int, event_type: str, **payload: Any) -> None:
    _group_send(run_group(run_id), {"type": "run.event", "event": {"type": event_type, "run": run_id, **payload}})


def publish_project_event(project_id: int, event_type: str, **payload: Any) -> None:
    """A fact for everyone with the project open (queues, run notifications). Not sequenced: a page
    that (re)connects reads the current state over REST, then applies what arrives."""
    _group_send(
        project_group(project_id),
        {"type": "project.event", "event": {"type": event_type, "project": project_id, **payload}},
    )
