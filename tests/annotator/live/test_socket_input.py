"""Bad input on the trace socket, over a real websocket to the real server (Daphne): every frame that
REST would answer with a 4xx gets an error frame with a clear code, the connection stays open, and
nothing changes in the database."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from rest_framework.test import APIClient

from annotator.models import Correction, StepLabel, Trace, TraceReview
from tests.annotator.live.conftest import Socket
from tests.factories import make_trace

pytestmark = pytest.mark.slow


def _labelled_trace(live) -> Trace:
    """A finished trace with two steps; the supervisor's label of step 0 is rating 1, note "keep"."""
    trace = make_trace(live.project, live.prompt, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37"], answer="45")
    StepLabel.objects.create(step=trace.steps.get(index=0), annotator=live.users["supervisor"], rating=1, note="keep")
    return trace


async def _answer(sock: Socket, frame: str | bytes) -> dict:
    """Send one raw frame and wait for the ack or error it gets (bad JSON cannot echo a request_id)."""
    await sock.ws.send(frame)
    return await sock.until(lambda e: e.get("type") in ("ack", "error"))


def _db_state(trace: Trace) -> tuple:
    label = StepLabel.objects.get(step__trace=trace, step__index=0)
    return (label.rating, label.note, label.safety_tags, Correction.objects.count(), Trace.objects.count(),
            TraceReview.objects.count(), Trace.objects.get(pk=trace.pk).version)


LABEL = '{"action": "label", "step_index": 0, "rating": -1, '
EDIT = '{"action": "edit", "step_index": 0, "expected_version": %d, '

# (frame, the error code it must get); %d in an edit frame is the trace's version
BAD_FRAMES = [
    (LABEL + '"note": "a\\u0000b"}', "invalid"),  # NUL as a JSON escape
    (EDIT + '"text": "1. 12 \\u0000 30"}', "invalid"),
    (LABEL + '"note": "half \\ud800 a pair"}', "invalid"),  # a lone surrogate
    (EDIT + '"text": "1. \\udfff"}', "invalid"),
    (LABEL + '"note": ' + "[" * 10_000 + "]" * 10_000 + "}", "bad_json"),
    (LABEL + '"note": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}', "bad_json"),
    ('{"action": "label", "step_index": 0, "rating": NaN}', "bad_json"),
    ('{"action": "label", "step_index": 0, "rating": -Infinity}', "bad_json"),
    ('{"action": "label", "step_index": 0, "rating": ' + "9" * 5000 + "}", "bad_json"),
    ('{"action": "label", "step_index": ' + str(2**63) + ', "rating": -1}', "invalid"),
    ('{"action": ["label"], "step_index": 0, "rating": -1}', "unknown_action"),
    ('{"action": {"label": 1}, "step_index": 0, "rating": -1}', "unknown_action"),
    ('{"action": null}', "unknown_action"),
    (LABEL + '"request_id": true}', "bad_request_id"),
    (LABEL + '"request_id": 1.5}', "bad_request_id"),
    (LABEL + '"request_id": {"a": 1}}', "bad_request_id"),
    (LABEL + '"request_id": [1]}', "bad_request_id"),
    ('{"action": "label", "step_index": 0, "note": "no rating"}', "invalid"),
    ('{"action": "label", "step_index": 0, "rating": 7}', "bad_rating"),
    ('{"action": "label", "step_index": 0, "rating": -1, "note": {"a": "b"}}', "invalid"),
    ('{"action": "label", "step_index": 0, "rating": -1, "safety_tags": "harm"}', "invalid"),
    ('{"action": "review", "note": "no verdict"}', "invalid"),
    ('{"action": "review", "verdict": "accept", "lead_time_s": "soon"}', "invalid"),
    ('{"action": "review", "verdict": "accept", "lead_time_s": -1}', "invalid"),
    ('{"action": "review", "verdict": "accept", "note": "a\\u0000b"}', "invalid"),
    (EDIT + '"text": 123}', "invalid"),
    (EDIT + '"text": ["1. a"]}', "invalid"),
    ("[1, 2]", "bad_message"),
    ("not json", "bad_json"),
]


def test_bad_frames_get_an_error_keep_the_socket_and_change_nothing(live):
    trace = _labelled_trace(live)
    before = _db_state(trace)

    async def scenario():
        sock = await Socket.open(live, trace.pk, user="supervisor")
        snapshot = await sock.recv()
        version = snapshot["trace"]["version"]
        answers = []
        for frame, _code in BAD_FRAMES:
            answers.append(await _answer(sock, frame % version if frame.startswith(EDIT) else frame))
        # a binary frame is refused, even one that holds a valid action
        binary = await _answer(sock, (LABEL + '"request_id": "bin"}').encode())
        # still open and still working
        ok = await sock.act(action="unreview")
        await sock.close()
        return answers, binary, ok

    answers, binary, ok = asyncio.run(scenario())
    got = [(frame[:60], answer.get("code")) for (frame, _), answer in zip(BAD_FRAMES, answers, strict=True)]
    assert got == [(frame[:60], code) for frame, code in BAD_FRAMES]
    assert all(a["type"] == "error" and a["detail"] for a in answers)
    assert not any("Traceback" in a["detail"] for a in answers)
    # an error for a frame with a valid request_id echoes it; a bad request_id is not echoed
    assert answers[[c for _, c in BAD_FRAMES].index("bad_request_id")]["request_id"] is None
    assert binary["type"] == "error" and binary["code"] == "bad_frame"
    assert ok["type"] == "ack"
    assert _db_state(trace) == before


def test_label_without_rating_is_refused_on_rest_too_and_null_means_unsure(live):
    """Socket and REST share one validation: no rating is an error; null (unsure) is a rating."""
    trace = _labelled_trace(live)
    client = APIClient()
    client.force_authenticate(live.users["supervisor"])
    url = f"/api/projects/{live.project.pk}/traces/{trace.pk}/steps/0/label/"
    missing = client.put(url, {"note": "no rating"}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "invalid"
    assert StepLabel.objects.get(step__trace=trace, step__index=0).rating == 1

    async def scenario():
        sock = await Socket.open(live, trace.pk, user="supervisor")
        await sock.recv()
        unsure = await sock.act(action="label", step_index=0, rating=None, note="not sure")
        review = await sock.act(action="review", verdict="accept", lead_time_s=12, note="fine")
        await sock.close()
        return unsure, review

    unsure, review = asyncio.run(scenario())
    assert unsure["type"] == "ack" and unsure["label"]["rating"] is None
    assert review["type"] == "ack" and review["review"]["verdict"] == "accept"
    label = StepLabel.objects.get(step__trace=trace, step__index=0)
    assert (label.rating, label.note) == (None, "not sure")
    rest_unsure = client.put(url, {"rating": None}, format="json")
    assert rest_unsure.status_code == 200, rest_unsure.content
    assert rest_unsure.json()["rating"] is None


def test_a_frame_over_the_limit_answers_too_large_and_keeps_the_socket(live):
    trace = _labelled_trace(live)
    before = _db_state(trace)

    async def scenario():
        sock = await Socket.open(live, trace.pk, user="supervisor")
        await sock.recv()
        answers = []
        for size in (70 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024):
            frame = LABEL + '"request_id": "big", "note": "' + "x" * size + '"}'
            answers.append(await _answer(sock, frame))
        ok = await sock.act(action="unreview")
        await sock.close()
        # Past the web server's own cap (settings.WEBSOCKET_MAX_MESSAGE_BYTES, 4 MiB) Daphne drops the
        # connection (it sends 1009 and resets, so the client, still sending, sees no close frame).
        sock = await Socket.open(live, trace.pk, user="supervisor")
        await sock.recv()
        with pytest.raises(websockets.ConnectionClosed):
            await sock.ws.send("x" * (5 * 1024 * 1024))
            await asyncio.wait_for(sock.ws.recv(), 20)
        return answers, ok

    answers, ok = asyncio.run(scenario())
    assert [(a["type"], a["code"]) for a in answers] == [("error", "too_large")] * 3
    assert ok["type"] == "ack"
    assert _db_state(trace) == before


def test_an_action_on_a_deleted_trace_answers_not_found(live):
    trace = _labelled_trace(live)

    async def scenario():
        sock = await Socket.open(live, trace.pk, user="supervisor")
        await sock.recv()
        await asyncio.to_thread(lambda: Trace.objects.filter(pk=trace.pk).delete())
        gone = await sock.act(action="label", step_index=0, rating=1)
        await sock.close()
        return gone

    gone = asyncio.run(scenario())
    assert gone["type"] == "error" and gone["code"] == "not_found", gone
    assert json.dumps(gone)
