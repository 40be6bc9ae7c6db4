"""Redis keys and flags: the small shared state that processes read beside the event stream.

- **Stop** (``trace:<id>:stop``): ``trace_stop`` raises it once its transaction commits; the
  generate worker polls it while streaming.
- **Cancel** (``run:<id>:cancel``): ``run_cancel`` raises it once its transaction commits; the
  trainer polls it after every optimiser step.
- **Heartbeat** (``run:<id>:owner``, ``trace:<id>:owner``, ``snapshot:<id>:owner``,
  ``alternatives:<id>:owner``): the process that trains a run, generates a trace, builds a dataset
  snapshot or samples a set of alternatives keeps this key alive; when the
  process dies the key expires, and a redelivery (runs) or the sweep of lost work (traces,
  ``annotator.services.generation``; snapshots, ``annotator.services.snapshots``) knows the owner
  is gone.
- **Presence** (``trace:<id>:watchers``): a hash of the socket channels watching a trace.
- **Claim** (``trace:<id>:claim``): who controls a live trace now; it expires after the project's
  idle time unless its holder acts again (``annotator/services/claims.py`` decides; this holds it).

Flags are raised on commit, always: a worker that sees a flag may act on it at once, so the
database must already say what the flag means (``stopped``/``cancelling``), and a rolled-back
request must leave no flag behind.

Every key is namespaced by database (``key_prefix``), so two studios, or a test session beside a
dev run, can share one Redis. ``annotator.events`` keeps the trace event log under keys named here
too; it is the only module that sends events.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

from django.conf import settings
from django.db import transaction

FLAG_TTL_S = 7 * 24 * 3600  # a flag nobody clears (its worker died) goes away on its own
STOP_TTL_S = 3600
PRESENCE_TTL_S = 24 * 3600

_local = threading.local()


def redis_client() -> Any:
    """One client per thread (the generate worker runs generations in threads)."""
    client = getattr(_local, "client", None)
    if client is None:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        _local.client = client
    return client


_async_clients: Any = None


def async_redis_client() -> Any:
    """A redis.asyncio client of the running event loop (the generate worker's relay hub), one per
    loop: an asyncio connection belongs to the loop that opened it."""
    global _async_clients
    import asyncio
    import weakref

    import redis.asyncio

    if _async_clients is None:
        _async_clients = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    return client


def key_prefix() -> str:
    """Keys are namespaced by database, so two studios (or the tests) can share one Redis safely."""
    return f"safeladder:{settings.DATABASES['default']['NAME']}:"


def forget_all() -> int:
    """Delete every key of this database's namespace (tests start from a clean slate)."""
    client = redis_client()
    keys = list(client.scan_iter(match=f"{key_prefix()}*", count=1000))
    return client.delete(*keys) if keys else 0


# --- key names ------------------------------------------------------------------------------------


def trace_seq_key(trace_id: int) -> str:
    return f"{key_prefix()}trace:{trace_id}:seq"


def trace_events_key(trace_id: int) -> str:
    return f"{key_prefix()}trace:{trace_id}:events"


def stop_key(trace_id: int) -> str:
    return f"{key_prefix()}trace:{trace_id}:stop"


def watchers_key(trace_id: int) -> str:
    return f"{key_prefix()}trace:{trace_id}:watchers"


def claim_key(trace_id: int) -> str:
    return f"{key_prefix()}trace:{trace_id}:claim"


def cancel_key(run_id: int) -> str:
    return f"{key_prefix()}run:{run_id}:cancel"


def owner_key(run_id: int) -> str:
    return f"{key_prefix()}run:{run_id}:owner"


def trace_owner_key(trace_id: int) -> str:
    return f"{key_prefix()}trace:{trace_id}:owner"


def snapshot_owner_key(snapshot_id: int) -> str:
    return f"{key_prefix()}snapshot:{snapshot_id}:owner"


def alternatives_owner_key(set_id: int) -> str:
    return f"{key_prefix()}alternatives:{set_id}:owner"


# --- stop (traces) --------------------------------------------------------------------------------


def raise_stop_on_commit(trace_id: int) -> None:
    """Ask the generation of ``trace_id`` to stop, once the caller's transaction commits."""
    transaction.on_commit(lambda: redis_client().set(stop_key(trace_id), "1", ex=STOP_TTL_S))


def stop_requested(trace_id: int) -> bool:
    return bool(redis_client().exists(stop_key(trace_id)))


def clear_stop(trace_id: int) -> None:
    redis_client().delete(stop_key(trace_id))


# --- cancel (training runs) -----------------------------------------------------------------------


def raise_cancel_on_commit(run_id: int) -> None:
    """Ask the trainer of ``run_id`` to stop after its step in flight, once the transaction commits."""
    transaction.on_commit(lambda: redis_client().set(cancel_key(run_id), "1", ex=FLAG_TTL_S))


def cancel_requested(run_id: int) -> bool:
    return bool(redis_client().exists(cancel_key(run_id)))


def clear_cancel(run_id: int) -> None:
    redis_client().delete(cancel_key(run_id))


# --- heartbeat (the owner of a training run or of a generation) ----------------------------------


def owner_alive(run_id: int) -> bool:
    return bool(redis_client().exists(owner_key(run_id)))


def _owners_alive(ids: list[int], key: Any) -> dict[int, bool]:
    """For each id, whether its heartbeat key ``key(id)`` exists (one round trip for them all)."""
    if not ids:
        return {}
    pipe = redis_client().pipeline(transaction=False)
    for owned_id in ids:
        pipe.exists(key(owned_id))
    return {owned_id: bool(found) for owned_id, found in zip(ids, pipe.execute(), strict=True)}


def trace_owners_alive(trace_ids: list[int]) -> dict[int, bool]:
    """For each trace, whether a process holds its generation (one round trip for them all)."""
    return _owners_alive(trace_ids, trace_owner_key)


def snapshot_owners_alive(snapshot_ids: list[int]) -> dict[int, bool]:
    """For each snapshot, whether a process is building it (one round trip for them all)."""
    return _owners_alive(snapshot_ids, snapshot_owner_key)


def alternatives_owners_alive(set_ids: list[int]) -> dict[int, bool]:
    return _owners_alive(set_ids, alternatives_owner_key)


class Heartbeat:
    """Keeps ``run:<id>:owner`` alive while this process trains; it expires when the process dies.

    The key is set again every ``ttl / 3`` seconds, so it also comes back within that time after
    Redis lost it (a restart without the key on disk)."""

    def __init__(self, run_id: int, token: str, *, ttl_s: int) -> None:
        self.key = self._key(run_id)
        self.token = token
        self.ttl = max(2, int(ttl_s))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.key}", daemon=True)

    @staticmethod
    def _key(owned_id: int) -> str:
        return owner_key(owned_id)

    def claim(self) -> None:
        redis_client().set(self.key, self.token, ex=self.ttl)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(Exception):  # a Redis hiccup must not kill the working thread
                redis_client().set(self.key, self.token, ex=self.ttl)

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            client = redis_client()
            if client.get(self.key) == self.token:
                client.delete(self.key)


class TraceHeartbeat(Heartbeat):
    """Keeps ``trace:<id>:owner`` alive while this process generates the trace."""

    @staticmethod
    def _key(owned_id: int) -> str:
        return trace_owner_key(owned_id)


class SnapshotHeartbeat(Heartbeat):
    """Keeps ``snapshot:<id>:owner`` alive while this process builds the snapshot's files."""

    @staticmethod
    def _key(owned_id: int) -> str:
        return snapshot_owner_key(owned_id)


class AlternativesHeartbeat(Heartbeat):
    """Keeps ``alternatives:<id>:owner`` alive while this process samples and scores the set."""

    @staticmethod
    def _key(owned_id: int) -> str:
        return alternatives_owner_key(owned_id)


# --- presence (who watches a trace) ---------------------------------------------------------------


def presence_join(trace_id: int, channel: str, user: dict[str, Any]) -> None:
    """Record that ``user`` ({id, username}) watches the trace through socket ``channel``."""
    client = redis_client()
    client.hset(watchers_key(trace_id), channel, json.dumps(user))
    client.expire(watchers_key(trace_id), PRESENCE_TTL_S)


def presence_leave(trace_id: int, channel: str) -> None:
    redis_client().hdel(watchers_key(trace_id), channel)


def presence_list(trace_id: int) -> list[dict[str, Any]]:
    """The trace's watchers, one entry per user (a user may watch from several tabs), by name."""
    raw = redis_client().hvals(watchers_key(trace_id))
    unique = {w["id"]: w for w in map(json.loads, raw)}
    return sorted(unique.values(), key=lambda w: w["username"])


# --- claim (who controls a live trace) ------------------------------------------------------------

# Take or refresh atomically: two supervisors acting at once cannot both win. Returns the holder
# after the call and whether the caller holds it.
_CLAIM_TAKE = """
local held = redis.call('GET', KEYS[1])
if held then
  local holder = cjson.decode(held)
  if tostring(holder['id']) ~= ARGV[1] then
    return {held, redis.call('PTTL', KEYS[1]), 0}
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {ARGV[2], tonumber(ARGV[3]), 1}
"""

_CLAIM_RELEASE = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
if ARGV[1] ~= '' and tostring(cjson.decode(held)['id']) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1
"""


def claim_take(trace_id: int, user: dict[str, Any], *, ttl_s: float) -> tuple[dict[str, Any], float, bool]:
    """Take (or refresh) the claim for ``user`` ({id, username}) unless someone else holds it.

    Returns (holder, seconds left, whether ``user`` holds it now)."""
    client = redis_client()
    raw, pttl, mine = client.eval(
        _CLAIM_TAKE, 1, claim_key(trace_id), str(user["id"]), json.dumps(user), str(max(1, int(ttl_s * 1000)))
    )
    return json.loads(raw), max(0, int(pttl)) / 1000, bool(mine)


def claim_release(trace_id: int, user_id: int | None) -> int:
    """Drop the claim: 1 released, 0 nobody held it, -1 someone else holds it. ``user_id`` None:
    whoever holds it (a reviewer or owner taking over)."""
    return int(redis_client().eval(_CLAIM_RELEASE, 1, claim_key(trace_id), "" if user_id is None else str(user_id)))


def claim_get(trace_id: int) -> tuple[dict[str, Any], float] | None:
    """(holder, seconds left) or None when nobody controls the trace."""
    client = redis_client()
    pipe = client.pipeline()
    pipe.get(claim_key(trace_id))
    pipe.pttl(claim_key(trace_id))
    raw, pttl = pipe.execute()
    if raw is None:
        return None
    return json.loads(raw), max(0, int(pttl)) / 1000
