"""The in-process transformers backend, on tiny random models built in a fixture."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from annotator.generation.backends import Delta, GenerationError, GenerationRequest, SamplingParams
from annotator.generation.factory import make_backend
from annotator.generation.local import LocalBackend, evict
from trainer_worker.training.tiny import build_tiny_lm, build_tiny_vlm

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]
DIMS = {"hidden_size": 32, "layers": 1, "heads": 2}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine run several times faster without intra-op threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = build_tiny_lm(tmp_path_factory.mktemp("local") / "lm", **DIMS)
    yield path
    evict(path)


@pytest.fixture(scope="module")
def vlm_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = build_tiny_vlm(tmp_path_factory.mktemp("local") / "vlm")
    yield path
    evict(path)


def never() -> bool:
    return False


def run(backend: LocalBackend, request: GenerationRequest) -> tuple[str, Delta]:
    deltas = list(backend.stream(request, should_stop=never))
    assert all(d.finish_reason is None for d in deltas[:-1])
    return "".join(d.text for d in deltas), deltas[-1]


def reference(path: Path, prompt_text: str, max_new_tokens: int, seed: int) -> tuple[int, str]:
    """Prompt length and seeded sampled text straight from transformers, for comparison.

    Sampled rather than greedy: a random tiny model's greedy output is often one token repeated."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok(prompt_text, add_special_tokens=False, return_tensors="pt")
    torch.manual_seed(seed)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0)
    new = out[0, ids["input_ids"].shape[1] :]
    return ids["input_ids"].shape[1], tok.decode(new, skip_special_tokens=True)


def test_streams_the_same_text_as_plain_generate(lm_path: Path) -> None:
    params = SamplingParams(temperature=1.0, max_new_tokens=24, seed=11)
    text, last = run(LocalBackend(lm_path), GenerationRequest(messages=QUESTION, params=params))
    tok = AutoTokenizer.from_pretrained(lm_path)
    prompt = tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    prompt_len, expected = reference(lm_path, prompt, 24, seed=11)
    assert len(set(text)) > 3  # real varied text, not one repeated token
    assert text == expected
    assert last.prompt_tokens == prompt_len
    assert last.finish_reason in ("stop", "length")
    assert last.completion_tokens == 24 if last.finish_reason == "length" else last.completion_tokens <= 24


def test_same_seed_gives_the_same_text_and_other_seeds_differ(lm_path: Path) -> None:
    backend = make_backend("local", model_path=lm_path)

    def sample(seed: int) -> str:
        params = SamplingParams(temperature=1.0, max_new_tokens=30, seed=seed)
        return run(backend, GenerationRequest(messages=QUESTION, params=params))[0]

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9, 10))
    greedy = GenerationRequest(messages=QUESTION, params=SamplingParams(temperature=0, max_new_tokens=30))
    assert run(backend, greedy)[0] == run(backend, greedy)[0]


def test_stop_ends_generation_within_a_token(lm_path: Path) -> None:
    backend = LocalBackend(lm_path)
    params = SamplingParams(temperature=1.0, max_new_tokens=400, seed=3)
    seen: list[Delta] = []
    for delta in backend.stream(GenerationRequest(messages=QUESTION, params=params),
                                should_stop=lambda: len(seen) >= 3):
        seen.append(delta)
    last = seen[-1]
    assert last.finish_reason == "cancelled"
    # Tokens already queued when the stop was seen are kept, but generation halts right after.
    assert last.completion_tokens is not None
    assert 3 <= last.completion_tokens <= 40  # of 400 allowed


def test_stop_before_start_generates_nothing(lm_path: Path) -> None:
    deltas = list(LocalBackend(lm_path).stream(GenerationRequest(messages=QUESTION), should_stop=lambda: True))
    assert [(d.text, d.finish_reason, d.completion_tokens) for d in deltas] == [("", "cancelled", 0)]


def test_prefix_is_continued_not_repeated(lm_path: Path) -> None:
    backend = LocalBackend(lm_path)
    prefix = "<think>\nFirst add 2 and 3.\n"
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=4)
    text, last = run(backend, GenerationRequest(messages=QUESTION, prefix=prefix, params=params))
    _, plain = run(backend, GenerationRequest(messages=QUESTION, params=params))
    tok = AutoTokenizer.from_pretrained(lm_path)
    continued_prompt = tok.apply_chat_template(
        [*QUESTION, {"role": "assistant", "content": prefix}], tokenize=False, continue_final_message=True
    )
    # The prompt ends inside the assistant turn, right after the prefix (no <|im_end|>).
    assert continued_prompt.endswith("<|im_start|>assistant\n" + prefix)
    prompt_len, expected = reference(lm_path, continued_prompt, 16, seed=4)
    assert last.prompt_tokens == prompt_len
    assert text == expected
    assert not text.startswith(prefix)
    assert text != plain  # the prefix conditions what comes next


def test_image_prompt_streams_through_the_tiny_vlm(vlm_path: Path) -> None:
    backend = LocalBackend(vlm_path)
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (0, 200, 0)).save(buf, format="PNG")
    with_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    text_only = [{"role": "user", "content": [{"type": "text", "text": "What colour?"}]}]
    params = SamplingParams(temperature=0, max_new_tokens=8)
    deltas = list(backend.stream(
        GenerationRequest(messages=with_image, images=(buf.getvalue(),), prefix="<think>\n", params=params),
        should_stop=never,
    ))
    _, plain = run(backend, GenerationRequest(messages=text_only, prefix="<think>\n", params=params))
    last = deltas[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.completion_tokens and last.completion_tokens <= 8
    # The <image> placeholder became 16 image tokens (32x32 image, 8x8 patches).
    assert last.prompt_tokens == plain.prompt_tokens + 16


def test_images_for_a_text_only_model_are_refused(lm_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    with pytest.raises(GenerationError, match="does not take images"):
        list(LocalBackend(lm_path).stream(GenerationRequest(messages=messages, images=(buf.getvalue(),)),
                                          should_stop=never))


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="no model checkpoint"):
        list(LocalBackend(tmp_path / "nope").stream(GenerationRequest(messages=QUESTION), should_stop=never))


def test_model_stays_warm_until_reloaded(lm_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "serving"
    shutil.copytree(lm_path, path)
    backend = LocalBackend(path)
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=1)
    request = GenerationRequest(messages=QUESTION, params=params)
    before, _ = run(backend, request)
    # A new checkpoint is promoted over the same path: the warm copy keeps serving until reload().
    build_tiny_lm(path, seed=5, **DIMS)
    assert run(LocalBackend(path), request)[0] == before
    backend.reload()
    after, _ = run(backend, request)
    evict(path)
    assert after != before


def test_request_queued_behind_another_can_be_cancelled(lm_path: Path) -> None:
    backend = LocalBackend(lm_path)
    long = GenerationRequest(messages=QUESTION, params=SamplingParams(temperature=1.0, max_new_tokens=2000, seed=3))
    first = backend.stream(long, should_stop=never)
    next(first)  # the first generation now holds the model
    polls = iter([False])  # not stopped when it starts, stopped while it waits for the model
    queued = list(backend.stream(GenerationRequest(messages=QUESTION), should_stop=lambda: next(polls, True)))
    assert [(d.finish_reason, d.completion_tokens) for d in queued] == [("cancelled", 0)]
    first.close()  # abandoning the iterator stops its generation too
    assert not any(t.name == "local-generate" and t.is_alive() for t in threading.enumerate())
