"""A property-based fuzz (hypothesis) of the trace socket over a real websocket to the real server
(Daphne): arbitrary JSON-ish frames, with the real actions among random ones and fields of random
types, NUL and lone surrogates, and nesting. Every frame gets an ack or a clear error (never
`internal`), the socket never closes, and afterwards a normal action still works. Derandomized with a
fixed number of examples, so that it cannot flake."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from annotator.consumers import ACTIONS
from tests.annotator.live.conftest import Socket
from tests.factories import make_trace

pytestmark = pytest.mark.slow

EXAMPLES = 60
# The error codes of docs/websocket.md that bad input can get; `internal` (a bug) is not among them.
CLIENT_ERRORS = {"bad_json", "bad_message", "bad_frame", "bad_request_id", "unknown_action", "invalid",
                 "bad_rating", "bad_step", "unknown_step", "not_found", "forbidden", "conflict", "bad_state",
                 "already_finished", "bad_mode",
                 "unchanged", "bad_version", "stale_version", "empty_step", "too_large", "not_controller",
                 "no_model"}

text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "a\x00b", "\ud800", "half \udfff pair", "\x00", "1. 12 + 30 = 42"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                      max_leaves=8)
fields = {
    "step_index": st.one_of(st.integers(min_value=-2, max_value=4), values),
    "rating": st.one_of(st.sampled_from([-1, 0, 1, None]), values),
    "note": values, "text": values, "reason": values,
    "verdict": st.one_of(st.sampled_from(["accept", "reject"]), values),
    "lead_time_s": values, "safety_tags": values, "expected_version": values, "params": values,
    "request_id": st.one_of(st.integers(), text, values),
}
frames = st.fixed_dictionaries(
    {"action": st.one_of(st.sampled_from(sorted(ACTIONS)), values)},
    optional={**fields, **{k: values for k in ("extra", "\x00")}},
)


def test_any_frame_gets_an_ack_or_a_clear_error_and_keeps_the_socket(live):
    # A finished trace: no generation runs, so every answer is to a frame, and start/continue are refused
    # or take the claim without a worker racing the fuzz.
    trace = make_trace(live.project, live.prompt, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37"], answer="45")
    loop = asyncio.new_event_loop()
    sock = loop.run_until_complete(Socket.open(live, trace.pk, user="supervisor"))
    assert loop.run_until_complete(sock.recv())["type"] == "snapshot"
    answers: list[tuple[dict, dict]] = []

    async def answer(frame: dict) -> dict:
        await sock.ws.send(json.dumps(frame))  # json.dumps keeps NUL and lone surrogates as \u escapes
        return await sock.until(lambda e: e.get("type") in ("ack", "error"))

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(frame=frames)
    def fuzz(frame):
        got = loop.run_until_complete(answer(frame))
        answers.append((frame, got))
        if got["type"] == "error":
            assert got.get("code") in CLIENT_ERRORS and got.get("detail"), (frame, got)
        else:
            assert got["action"] == frame["action"], (frame, got)

    try:
        fuzz()
        assert sock.ws.close_code is None
        ok = loop.run_until_complete(sock.act(action="label", step_index=0, rating=1, note="after the fuzz"))
        assert ok["type"] == "ack" and ok["label"]["note"] == "after the fuzz", ok
    finally:
        loop.run_until_complete(sock.close())
        loop.close()
    assert len(answers) == EXAMPLES
    assert any(got["type"] == "ack" for _, got in answers), "the fuzz never reached a service"
