"""The live trace socket, /ws/traces/<id>/ (protocol: docs/websocket.md).

Thin: it checks access through the same gate as REST, calls the same services, and relays the
trace's sequenced events. ORM work happens only through database_sync_to_async helpers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from annotator import events, fanout, flags
from annotator import input as untrusted
from annotator.access import access_project
from annotator.errors import InvalidInput, NotFound, StudioError
from annotator.models import Role, Trace

# Far below the web server's own cap (settings.WEBSOCKET_MAX_MESSAGE_BYTES), so that a frame over
# this gets an error frame instead of a dropped connection.
MAX_FRAME_BYTES = 64 * 1024
# Actions that steer the generation: each needs the trace's claim (annotator/services/claims.py).
# A new steering action is added here and gets the same check.
CONTROL_ACTIONS = {"start", "stop", "continue", "edit", "alternatives", "pick"}
ACTIONS = CONTROL_ACTIONS | {"label", "unlabel", "review", "unreview", "claim", "release", "request_control"}
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

log = logging.getLogger(__name__)


def _snapshot(trace_id: int) -> dict[str, Any]:
    from annotator.api.serializers import TraceDetailSerializer
    from annotator.selectors import trace_detail_queryset

    seq = events.current_seq(trace_id)  # read first: anything newer arrives as a live event
    trace = trace_detail_queryset().get(pk=trace_id)
    # The newest token event carries the open step's text and the answer so far; a step or status
    # event after it means that step is closed.
    partial, answer, closed_since = "", "", False
    for event in events.last_events(trace_id, seq):
        if event["type"] == "trace.token":
            answer = event.get("answer", "")
            partial = "" if closed_since else event.get("partial", "")
            break
        if event["type"] in ("trace.step", "trace.status"):
            closed_since = True
    if trace.status != "running":
        partial = ""
    from annotator.services.claims import controller_of

    return {
        "type": "snapshot",
        "seq": seq,
        "trace": TraceDetailSerializer(trace).data,
        "partial": partial,
        "answer": answer if trace.status == "running" else (trace.final_answer or ""),
        "controller": controller_of(trace_id),
    }


async def accept_member(consumer: AsyncWebsocketConsumer, model: type, id_kwarg: str) -> tuple[int, str] | None:
    """The handshake of every studio socket: accept, then close with 4401 (anonymous) or 4404 (no such
    object, or not a member of its project). Returns (object id, the member's role) or None."""
    user = consumer.scope.get("user")
    await consumer.accept()
    if user is None or not user.is_authenticated:
        await consumer.close(code=CLOSE_UNAUTHENTICATED)
        return None

    def role_of(object_id: int) -> str:
        field = "pk" if model._meta.model_name == "project" else "project_id"
        project_id = model.objects.filter(pk=object_id).values_list(field, flat=True).first()
        if project_id is None:
            raise NotFound(f"{model.__name__} not found.")
        return access_project(user, project_id).role

    try:
        object_id = int(consumer.scope["url_route"]["kwargs"][id_kwarg])
        return object_id, await database_sync_to_async(role_of)(object_id)
    except (NotFound, ValueError):
        await consumer.close(code=CLOSE_NOT_FOUND)
        return None


def _validated(serializer_class: type, message: dict[str, Any]) -> dict[str, Any]:
    """A frame's fields through the REST input serializer for the same action, so that both refuse the
    same input; its errors become InvalidInput with REST's code and shape."""
    from rest_framework.exceptions import ValidationError

    from annotator.api.errors import summary

    serializer = serializer_class(data={k: v for k, v in message.items() if k not in ("action", "request_id")})
    try:
        serializer.is_valid(raise_exception=True)
    except ValidationError as exc:
        raise InvalidInput(summary(exc.detail), details=exc.detail) from None
    return dict(serializer.validated_data)


class TraceConsumer(AsyncWebsocketConsumer):
    trace_id: int
    role: str
    last_seq: int = 0
    joined: bool = False
    # Events the fan-out delivers while this viewer waits for something (its replay, a gap's fill):
    # sent after it, in order. None: the next event goes out as it arrives (``deliver``).
    _backlog: list[dict[str, Any]] | None = None
    _drainer: asyncio.Future | None = None
    _fanout: fanout.TraceFanout | None = None

    # --- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        member = await accept_member(self, Trace, "trace_id")
        if member is None:
            return
        self.trace_id, self.role = member
        user = self.scope["user"]
        self._backlog = []  # live events wait until the replay or the snapshot is sent
        if fanout.enabled():
            self._fanout = fanout.TraceFanout.get()
            await self._fanout.join(events.trace_group(self.trace_id), self)
        else:
            await self.channel_layer.group_add(events.trace_group(self.trace_id), self.channel_name)
        self.joined = True
        last_seq = self._query_last_seq()
        missed = None
        if last_seq is not None:
            missed = await database_sync_to_async(events.events_after)(self.trace_id, last_seq)
        if missed is None:
            await self._join_presence(user)
            await self._send_snapshot()
        else:
            self.last_seq = last_seq
            await self._join_presence(user)
            for text in missed:
                await self._relay(text)
        await self._drain()
        await database_sync_to_async(events.publish_presence)(self.trace_id, await self._watchers())

    async def _send_snapshot(self) -> None:
        user = self.scope["user"]
        snapshot = await database_sync_to_async(_snapshot)(self.trace_id)
        snapshot["role"] = self.role
        snapshot["me"] = {"id": user.pk, "username": user.username}
        snapshot["watchers"] = await self._watchers()
        self.last_seq = snapshot["seq"]
        await self._send(snapshot)

    def _query_last_seq(self) -> int | None:
        """`?last_seq=N` asks for the events after N (0: from the start); absent or bad: a snapshot."""
        from urllib.parse import parse_qs

        raw = parse_qs(self.scope.get("query_string", b"").decode()).get("last_seq")
        try:
            return max(0, int(raw[0])) if raw else None
        except ValueError:
            return None

    async def disconnect(self, code: int) -> None:
        if not self.joined:
            return
        if self._fanout is not None:
            await self._fanout.leave(events.trace_group(self.trace_id), self)
        else:
            await self.channel_layer.group_discard(events.trace_group(self.trace_id), self.channel_name)
        if self._drainer is not None:
            self._drainer.cancel()
        await database_sync_to_async(self._leave_presence)()
        await database_sync_to_async(events.publish_presence)(self.trace_id, await self._watchers())

    # --- presence (kept in Redis by annotator.flags) --------------------------------------------

    async def _join_presence(self, user: Any) -> list[dict[str, Any]]:
        me = {"id": user.pk, "username": user.username}
        await database_sync_to_async(flags.presence_join)(self.trace_id, self.channel_name, me)
        return await self._watchers()

    def _leave_presence(self) -> None:
        flags.presence_leave(self.trace_id, self.channel_name)

    async def _watchers(self) -> list[dict[str, Any]]:
        return await database_sync_to_async(flags.presence_list)(self.trace_id)

    # --- events from the group ----------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale DB connections (in a worker thread) before every message it
        # dispatches. Relaying a trace event touches no database; skipping that step took p99 token
        # latency at 20 traces x 5 viewers from ~2.4 s to ~0.2 s (py-spy, bench/streaming.py).
        if message.get("type") == "trace.event":
            await self.trace_event(message)
            return
        await super().dispatch(message)

    async def deliver(self, message: dict[str, Any]) -> None:
        """An event from the process's fan-out (annotator/fanout.py), in arrival order. The next
        event of the sequence goes out at once; one after a gap, and everything while this viewer
        waits (for its replay, a gap's fill), waits in the backlog and goes out in order after."""
        if self._backlog is not None:
            self._backlog.append(message)
            return
        text = message.get("text")
        if text is None:
            if message.get("resync"):
                self._backlog = [message]
                self._drainer = asyncio.ensure_future(self._drain())
            else:
                await self._send(message["event"])
            return
        seq = events.seq_of(text)
        if seq == self.last_seq + 1:
            self.last_seq = seq
            events.seq_seen(self.trace_id, seq)
            await self.base_send({"type": "websocket.send", "text": text})  # self.send(text_data=text), less two calls
        elif seq > self.last_seq:  # a gap: filled from the event log, off the fan-out's task
            self._backlog = [message]
            self._drainer = asyncio.ensure_future(self._drain())

    async def resync(self) -> None:
        """The fan-out's subscription was down: send what was published meanwhile, from the log
        (in order with what the fan-out delivers from now on)."""
        await self.deliver({"type": "trace.event", "resync": True})

    async def _drain(self) -> None:
        try:
            while self._backlog:
                await self.trace_event(self._backlog.pop(0))
        finally:
            self._backlog = None

    async def trace_event(self, message: dict[str, Any]) -> None:
        if message.get("resync"):
            missed = await database_sync_to_async(events.events_after)(self.trace_id, self.last_seq)
            if missed is None:  # the log no longer has them
                await self._send_snapshot()
            for text in missed or []:
                await self._relay(text)
        elif "text" in message:
            await self._relay(message["text"])
        else:  # presence: a fact about now, not part of the sequence
            await self._send(message["event"])

    async def _relay(self, text: str) -> None:
        """Send a sequenced event's text once, in order, filling any gap from the event log."""
        seq = events.seq_of(text)
        if seq <= self.last_seq:
            return  # already sent (replay and live overlap)
        if seq > self.last_seq + 1:
            gap = await database_sync_to_async(events.events_between)(self.trace_id, self.last_seq, seq - 1)
            if [events.seq_of(missing) for missing in gap] != list(range(self.last_seq + 1, seq)):
                # The log no longer has them (Redis restarted empty, or they aged out): start the
                # viewer over from a snapshot rather than skip events. It is read after this event
                # was logged, so it already includes it.
                await self._send_snapshot()
                return
            for missing in gap:
                self.last_seq = events.seq_of(missing)
                await self.send(text_data=missing)
        self.last_seq = seq
        events.seq_seen(self.trace_id, seq)
        await self.send(text_data=text)

    async def _send(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event))

    # --- actions from the client --------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The events an action causes reach this viewer after its ack (as when the channel layer fed
        # this consumer one message at a time): the fan-out's deliveries wait until it is sent.
        holding = self._backlog is None
        if holding:
            self._backlog = []
        try:
            await self._receive(text_data, bytes_data)
        finally:
            if holding:
                await self._drain()

    async def _receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        request_id = None
        action: Any = None
        try:
            if text_data is None:
                # The protocol is JSON text; a binary frame is refused, not decoded and acted on.
                raise InvalidInput("Frames are JSON text; binary frames are not accepted.", code="bad_frame")
            message = self._parse(text_data)
            request_id = message.get("request_id")
            if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
                request_id = None  # not echoed: it is not one the client can match
                raise InvalidInput("request_id must be a string or an integer.", code="bad_request_id")
            action = message.get("action")
            if not isinstance(action, str) or action not in ACTIONS:
                raise InvalidInput(
                    f"Unknown action {action!r:.80}; known: {', '.join(sorted(ACTIONS))}.", code="unknown_action"
                )
            result = await self._act(action, message)
        except StudioError as exc:
            await self._send({"type": "error", **exc.as_dict(), "request_id": request_id})
            return
        except Exception:
            # A bug, not the client's input: say so without details, log it, and keep the socket (an
            # exception escaping here would close it with 1011).
            log.exception("trace socket %s: action %r failed", getattr(self, "trace_id", None), action)
            await self._send({"type": "error", "code": "internal", "detail": "The server failed to do this (a bug; "
                              "it has been logged).", "request_id": request_id})
            return
        await self._send({"type": "ack", "action": action, "request_id": request_id, **result})

    @staticmethod
    def _parse(text: str) -> dict[str, Any]:
        """A text frame through the same checks as a REST body (annotator/input.py)."""
        # len(text) is at most the UTF-8 length, 4 * len(text) at least: encode only when in doubt.
        if len(text) > MAX_FRAME_BYTES or (
            4 * len(text) > MAX_FRAME_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES
        ):
            raise InvalidInput(f"Messages are limited to {MAX_FRAME_BYTES} bytes.", code="too_large")
        message = untrusted.loads(text, what="The message")
        if not isinstance(message, dict):
            raise InvalidInput("A message is a JSON object with an 'action'.", code="bad_message")
        return message

    @database_sync_to_async
    def _act(self, action: str, message: dict[str, Any]) -> dict[str, Any]:
        from annotator.api.serializers import (
            AlternativesPickSerializer,
            AlternativesRequestSerializer,
            StepLabelInputSerializer,
            TraceReviewInputSerializer,
        )
        from annotator.models import AlternativeSet
        from annotator.services import alternatives, claims, corrections, generation, labels

        user = self.scope["user"]
        trace = Trace.objects.select_related("project").filter(pk=self.trace_id).first()
        if trace is None:
            raise NotFound(f"Trace {self.trace_id} no longer exists.")
        # Roles can change while a socket is open: check on every action, not once at connect.
        access_project(user, trace.project_id, role=Role.SUPERVISOR)
        if action in CONTROL_ACTIONS:
            claims.control_check(trace=trace, user=user)
        if action == "claim":
            return {"controller": claims.control_claim(trace=trace, user=user)}
        if action == "release":
            claims.control_release(trace=trace, user=user)
            return {"controller": None}
        if action == "request_control":
            return {"controller": claims.control_request(trace=trace, user=user)}
        if action == "start":
            started = generation.trace_start(trace=trace, actor=user, sampling_params=message.get("params"))
            return {"status": started.status}
        elif action == "stop":
            return {"status": generation.trace_stop(trace=trace, actor=user).status}
        elif action == "continue":
            continued = generation.trace_continue(trace=trace, actor=user, mode=message.get("mode"))
            return {"status": continued.status, "mode": continued.mode}
        elif action == "edit":
            correction = corrections.correction_create(
                trace=trace,
                step_index=message.get("step_index"),
                text=message.get("text"),
                expected_version=message.get("expected_version"),
                reason=message.get("reason", ""),
                author=user,
            )
            return {
                "branch": {"id": correction.corrected_trace_id, "branch_step_index": correction.step_index},
                "correction": {"id": correction.pk},
            }
        elif action == "alternatives":
            fields = _validated(AlternativesRequestSerializer, message)  # as REST's POST .../alternatives/
            alt = alternatives.alternatives_request(trace=trace, actor=user, **fields)
            return {"set": alternatives.alternatives_json(alt)}
        elif action == "pick":
            set_id = message.get("set")
            if isinstance(set_id, bool) or not isinstance(set_id, int):
                raise InvalidInput("set must be the integer id of a set of alternatives.", code="invalid")
            alt = AlternativeSet.objects.filter(pk=set_id, trace=trace).first() if 0 < set_id < 2**63 else None
            if alt is None:
                raise NotFound(f"Trace {trace.pk} has no alternatives {set_id}.")
            fields = _validated(AlternativesPickSerializer, {k: v for k, v in message.items() if k != "set"})
            alt = alternatives.alternatives_pick(alt_set=alt, actor=user, **fields)
            return {"set": alternatives.alternatives_json(alt)}
        elif action == "label":
            step = labels.step_get(trace=trace, index=message.get("step_index"))
            fields = _validated(StepLabelInputSerializer, message)  # as REST's PUT .../label/
            label = labels.step_label_set(step=step, annotator=user, **fields)
            return {"label": labels.label_payload(label)}
        elif action == "unlabel":
            step = labels.step_get(trace=trace, index=message.get("step_index"))
            return {"removed": labels.step_label_clear(step=step, annotator=user)}
        elif action == "unreview":
            return {"removed": labels.trace_review_clear(trace=trace, annotator=user)}
        elif action == "review":
            fields = _validated(TraceReviewInputSerializer, message)  # as REST's PUT .../reviews/
            review = labels.trace_review_set(trace=trace, annotator=user, **fields)
            return {"review": labels.review_payload(review)}
        return {}
