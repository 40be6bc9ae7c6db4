"""The vLLM client against a protocol-level fake server (vLLM itself needs CUDA)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from annotator.generation.backends import (
    Delta,
    GenerationError,
    GenerationRequest,
    SamplingParams,
)
from annotator.generation.factory import make_backend
from annotator.generation.steps import StepSegmenter
from annotator.generation.vllm import VLLMBackend
from tests.support.fake_vllm import FakeVLLM

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    with FakeVLLM() as server:
        yield server


def never() -> bool:
    return False


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(params=["thread", "asyncio"])
def how(request) -> str:
    """Read the stream as the thread relay does (``stream``) or as the relay hub does (``astream``)."""
    return request.param


def collect(backend: VLLMBackend, request: GenerationRequest, how: str = "thread",
            should_stop=never) -> list[Delta]:
    if how == "thread":
        return list(backend.stream(request, should_stop=should_stop))

    async def read() -> list[Delta]:
        try:
            return [delta async for delta in backend.astream(request, should_stop=should_stop)]
        finally:
            await backend.aclose()

    return asyncio.run(read())


def test_streamed_text_equals_the_served_completion(fake: FakeVLLM, how: str) -> None:
    backend = VLLMBackend(fake.base_url, "safeladder-demo")
    deltas = collect(backend, GenerationRequest(messages=QUESTION), how)
    assert "".join(d.text for d in deltas) == fake.state.completion
    assert len(deltas) > 5  # it really streamed in pieces
    last = deltas[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 11, fake.state.chunks_sent)
    assert all(d.finish_reason is None for d in deltas[:-1])
    # The stream feeds the segmenter exactly like the local backend does.
    seg = StepSegmenter()
    steps = [s.text for d in deltas for s in seg.feed(d.text)]
    assert (steps, seg.finish()[1]) == (["Step one.", "Step two."], "Done.")


def test_request_body_carries_sampling_and_a_fresh_turn(fake: FakeVLLM) -> None:
    backend = make_backend("vllm", base_url=fake.base_url + "/v1", model="adapter-7")
    params = SamplingParams(temperature=0.3, top_p=0.9, max_new_tokens=100, seed=42)
    collect(backend, GenerationRequest(messages=QUESTION, params=params))
    path, body = fake.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["model"] == "adapter-7"
    assert body["messages"] == QUESTION
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.9, 100, 42)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["add_generation_prompt"] is True
    assert "continue_final_message" not in body


def test_prefix_is_continued_in_place_not_as_a_new_turn(fake: FakeVLLM) -> None:
    backend = VLLMBackend(fake.base_url, "m")
    prefix = "<think>\nFirst add 2 and 3.\n"
    collect(backend, GenerationRequest(messages=QUESTION, prefix=prefix))
    body = fake.requests[-1][1]
    assert body["messages"] == [*QUESTION, {"role": "assistant", "content": prefix}]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


def test_images_are_sent_as_data_url_parts_in_order(fake: FakeVLLM) -> None:
    backend = VLLMBackend(fake.base_url, "m")
    png = png_bytes()
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]}
    ]
    collect(backend, GenerationRequest(messages=messages, images=(png, jpeg.getvalue()), prefix="<think>\n"))
    body = fake.requests[-1][1]
    first, text, second = body["messages"][0]["content"]
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert first == {"type": "image_url", "image_url": {"url": url}}
    assert text == {"type": "text", "text": "and"}
    assert second["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # With list contents, the continued assistant message is a list too.
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "<think>\n"}]}


def test_max_tokens_reached_reports_length(how: str) -> None:
    with FakeVLLM(completion="x" * 90, chunk_size=1) as server:
        deltas = collect(VLLMBackend(server.base_url, "m"), GenerationRequest(messages=QUESTION,
                         params=SamplingParams(max_new_tokens=20)), how)
    assert "".join(d.text for d in deltas) == "x" * 20
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 20)


def test_stop_closes_the_stream_promptly(how: str) -> None:
    with FakeVLLM(completion="tok " * 200, chunk_size=4, delay_s=0.02) as server:
        backend = VLLMBackend(server.base_url, "m")
        seen: list[Delta] = []
        started = time.monotonic()

        def stop() -> bool:
            return len(seen) >= 3

        if how == "thread":
            for delta in backend.stream(GenerationRequest(messages=QUESTION), should_stop=stop):
                seen.append(delta)
        else:
            async def read() -> None:
                async for delta in backend.astream(GenerationRequest(messages=QUESTION), should_stop=stop):
                    seen.append(delta)
                await backend.aclose()

            asyncio.run(read())
        elapsed = time.monotonic() - started
        assert seen[-1].finish_reason == "cancelled"
        assert len(seen) == 4  # three tokens, then the cancelled marker
        assert elapsed < 1.0  # the whole completion would take 4 s
        # The server notices the hang-up (this is what makes vLLM abort the request).
        assert server.state.client_disconnected.wait(2.0)
        assert server.state.chunks_sent < 20


def test_server_error_becomes_a_generation_error_with_its_message(how: str) -> None:
    with FakeVLLM(error_status=404, error_message="The model `nope` does not exist.") as server:
        backend = VLLMBackend(server.base_url, "nope")
        with pytest.raises(GenerationError, match=r"404.*The model `nope` does not exist") as caught:
            collect(backend, GenerationRequest(messages=QUESTION), how)
    assert caught.value.public == "vLLM answered 404"  # what users see: no remote body


def test_unreachable_server_is_a_generation_error(how: str) -> None:
    with FakeVLLM() as server:
        url = server.base_url
    backend = VLLMBackend(url, "m", timeout=2.0, connect_timeout=1.0)
    with pytest.raises(GenerationError, match="cannot stream from vLLM"):
        collect(backend, GenerationRequest(messages=QUESTION), how)


@pytest.mark.parametrize("fail_how, public", [
    ("error", "vLLM reported an error during generation"),
    ("drop", "(cannot stream from vLLM|the vLLM stream ended before the completion finished)"),
])
def test_a_server_failing_mid_stream_is_a_generation_error_after_the_text_so_far(how: str, fail_how: str,
                                                                                   public: str) -> None:
    with FakeVLLM(completion="abcdefghijklmnopqrstuvwxyz", chunk_size=2, fail_after=5, fail_how=fail_how) as server:
        backend = VLLMBackend(server.base_url, "m")
        seen: list[Delta] = []

        async def read() -> None:
            try:
                async for delta in backend.astream(GenerationRequest(messages=QUESTION), should_stop=never):
                    seen.append(delta)
            finally:
                await backend.aclose()

        with pytest.raises(GenerationError) as caught:
            if how == "thread":
                for delta in backend.stream(GenerationRequest(messages=QUESTION), should_stop=never):
                    seen.append(delta)
            else:
                asyncio.run(read())
    assert re.fullmatch(public, caught.value.public) or re.match(public, caught.value.public)
    assert "".join(d.text for d in seen) == "abcdefghij"  # the five pieces sent before the failure


def test_load_lora_adapter_posts_name_and_path(fake: FakeVLLM) -> None:
    backend = VLLMBackend(fake.base_url, "base")
    backend.load_lora_adapter("run-12", "/models/run-12/adapter")
    assert fake.requests[-1] == (
        "/v1/load_lora_adapter",
        {"lora_name": "run-12", "lora_path": "/models/run-12/adapter"},
    )
    with pytest.raises(GenerationError, match="already been loaded"):
        backend.load_lora_adapter("run-12", "/models/run-12/adapter")
    backend.unload_lora_adapter("run-12")
    assert fake.state.loaded_adapters == {}


def test_mismatched_image_count_is_rejected_before_any_request(fake: FakeVLLM) -> None:
    backend = VLLMBackend(fake.base_url, "m")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    with pytest.raises(ValueError, match="1 image part"):
        collect(backend, GenerationRequest(messages=messages))
    assert fake.requests == []
