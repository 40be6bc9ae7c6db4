"""Control of a live trace: one supervisor at a time stops, edits, continues or steers it.

The first control action on a live trace (queued, running or stopped) takes its claim; each later
action by the holder refreshes it; it lapses after the project's ``claim_idle_s`` idle seconds.
Anyone else's control action gets ``not_controller`` (409) and changes nothing. Watchers may ask
for control (``control.requested`` reaches the holder), and the holder may release it.

Every control action, on REST and on the socket, calls ``control_check`` first and nothing else:
new actions (guided supervision's accept / alternatives) join by calling it too. Labels and reviews
are each annotator's own and need no claim. The claim itself lives in Redis (``annotator.flags``),
because it is about now, not history; taking one is atomic there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from annotator import events, flags
from annotator.errors import Conflict
from annotator.models import Trace, TraceStatus

LIVE = (TraceStatus.QUEUED, TraceStatus.RUNNING, TraceStatus.STOPPED)


def _me(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username}


def _expires_at(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def controller_of(trace_id: int) -> dict[str, Any] | None:
    """{user, expires_at} of whoever controls the trace now, or None (for snapshots and REST)."""
    held = flags.claim_get(trace_id)
    if held is None:
        return None
    holder, left = held
    return {"user": holder, "expires_at": _expires_at(left)}


def _take(trace: Trace, user: Any) -> dict[str, Any]:
    idle = trace.project.claim_idle_s
    holder, left, mine = flags.claim_take(trace.pk, _me(user), ttl_s=idle)
    if not mine:
        raise Conflict(
            f"{holder['username']} controls this trace; ask them for control, or wait until it lapses "
            f"(in {left:.0f} s at most).",
            code="not_controller",
            details={"controller": holder, "expires_at": _expires_at(left)},
        )
    events.publish_trace_event(
        trace.pk, "trace.claimed", controller=holder, expires_at=_expires_at(left), idle_s=idle
    )
    return holder


def control_check(*, trace: Trace, user: Any) -> None:
    """Call before every control action. On a live trace: take or refresh the claim, or raise
    Conflict ``not_controller`` when someone else holds it. Finished and failed traces need none
    (an edit there makes a branch, and stale edits are refused by the trace version)."""
    if trace.status in LIVE:
        _take(trace, user)


def control_claim(*, trace: Trace, user: Any) -> dict[str, Any]:
    """Take control explicitly (the socket's ``claim`` action), whatever the trace's status."""
    _take(trace, user)
    return controller_of(trace.pk) or {"user": _me(user), "expires_at": _expires_at(0)}


def control_release(*, trace: Trace, user: Any) -> None:
    """Give control up. Releasing a claim you do not hold is refused; nobody holding it is fine."""
    outcome = flags.claim_release(trace.pk, user.pk)
    if outcome == -1:
        held = flags.claim_get(trace.pk)
        name = held[0]["username"] if held else "someone else"
        raise Conflict(f"{name} controls this trace, not you.", code="not_controller")
    if outcome == 1:
        events.publish_trace_event(trace.pk, "trace.released", by=_me(user))


def control_request(*, trace: Trace, user: Any) -> dict[str, Any] | None:
    """Ask the controller for control. Returns the current controller (None: nobody; take it)."""
    current = controller_of(trace.pk)
    if current is not None and current["user"]["id"] != user.pk:
        events.publish_trace_event(trace.pk, "control.requested", by=_me(user), controller=current["user"])
    return current
