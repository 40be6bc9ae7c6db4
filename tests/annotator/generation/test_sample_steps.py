"""K samples of the next step in one call (alternatives, guided generation): the local backend on a
real tiny transformers model, and the vLLM client against tests/support/fake_vllm.py (a protocol
stand-in: vLLM needs CUDA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from annotator.generation.backends import GenerationError, GenerationRequest, SamplingParams
from annotator.generation.local import LocalBackend, evict
from annotator.generation.steps import boundary_stop_strings, next_step
from annotator.generation.vllm import VLLMBackend
from tests.support.fake_vllm import FakeVLLM
from tests.support.models import SCRIPT_STEPS, build_scripted_lm
from trainer_worker.vocabulary.format import render_prefix

PROMPT = [{"role": "user", "content": "Compute 12 + 30 - 5 + 8."}]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_scripted_lm(tmp_path_factory.mktemp("sample") / "lm")
    yield path
    evict(path)
    torch.set_num_threads(before)


def _request(prefix_steps: list[str], **params) -> GenerationRequest:
    return GenerationRequest(messages=PROMPT, prefix=render_prefix(prefix_steps),
                             params=SamplingParams(**{"max_new_tokens": 48, **params}))


@pytest.mark.parametrize(
    ("rule", "text", "complete", "expected"),
    [
        ("line", "3. 37 + 8 = 45\n4. more", False, ("step", "3. 37 + 8 = 45")),
        ("line", "3. 37 + 8", False, ("incomplete", "3. 37 + 8")),
        ("line", "3. 37 + 8", True, ("step", "3. 37 + 8")),
        ("line", "</think>\n45", False, ("end", "")),
        ("blank_line", "a first line\nand a second\n\nnext", False, ("step", "a first line and a second")),
        ("numbered", "3. one\nstill three\n4.", True, ("step", "3. one still three")),
    ],
)
def test_next_step_reads_up_to_the_first_boundary(rule, text, complete, expected) -> None:
    found = next_step(rule, ["1. a", "2. b"], text, complete=complete)
    assert (found.kind, found.text) == expected


def test_an_empty_prefix_starts_inside_the_think_block() -> None:
    assert next_step("line", [], "1. 12 + 30 = 42\n", complete=False).text == "1. 12 + 30 = 42"


def test_local_greedy_samples_are_the_models_next_step_and_stop_at_the_boundary(scripted) -> None:
    samples = LocalBackend(scripted, device="cpu").sample_steps(
        _request(SCRIPT_STEPS[:2], temperature=0), n=3, rule="line", prefix_steps=SCRIPT_STEPS[:2])
    assert [(s.next.kind, s.next.text) for s in samples] == [("step", SCRIPT_STEPS[2])] * 3
    # Stopped at the newline that closes the step, not run on to the end of the chain.
    assert all(s.completion_tokens is not None and s.completion_tokens < 20 for s in samples)


def test_local_sampling_is_batched_reproducible_and_varied(scripted) -> None:
    backend = LocalBackend(scripted, device="cpu")
    hot = {"temperature": 3.0, "seed": 7}
    first = backend.sample_steps(_request(SCRIPT_STEPS[:1], **hot), n=4, rule="line", prefix_steps=SCRIPT_STEPS[:1])
    again = backend.sample_steps(_request(SCRIPT_STEPS[:1], **hot), n=4, rule="line", prefix_steps=SCRIPT_STEPS[:1])
    assert [s.next for s in first] == [s.next for s in again]  # same seed, same candidates
    assert len({s.next.text for s in first}) > 1  # a hot sample differs from row to row
    assert all("\n" not in s.next.text for s in first)


def test_local_sampling_refuses_a_bad_n(scripted) -> None:
    with pytest.raises(ValueError, match="n must be between 1 and 16"):
        LocalBackend(scripted, device="cpu").sample_steps(_request([]), n=0, rule="line", prefix_steps=[])


def test_vllm_asks_for_n_choices_that_continue_the_prefix_and_stop_at_the_boundary() -> None:
    samples = ["3. 37 + 8 = 45\n4. 45 is it\n", "3. 37 + 8 = 44\n", "</think>\n44",
               "3. 37 + 8 = 44 and so on and on and on"]
    with FakeVLLM(samples=samples) as fake:
        backend = VLLMBackend(fake.base_url, "demo")
        got = backend.sample_steps(_request(SCRIPT_STEPS[:2], temperature=1.0, seed=3, max_new_tokens=10), n=4,
                                   rule="line", prefix_steps=SCRIPT_STEPS[:2])
        backend.close()
        (path, body), = fake.requests
    assert path == "/v1/chat/completions" and "stream" not in body
    assert body["n"] == 4 and body["seed"] == 3 and body["stop"] == boundary_stop_strings("line")
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": render_prefix(SCRIPT_STEPS[:2])}
    assert [(s.next.kind, s.next.text) for s in got] == [
        ("step", "3. 37 + 8 = 45"), ("step", "3. 37 + 8 = 44"), ("end", ""),
        ("incomplete", "3. 37 + 8 = 44 and so on and o")]


def test_vllm_sampling_errors_do_not_relay_the_remote_body() -> None:
    with FakeVLLM(error_status=400, error_message="secret internals") as fake:
        backend = VLLMBackend(fake.base_url, "demo")
        with pytest.raises(GenerationError) as caught:
            backend.sample_steps(_request(["a"]), n=2, rule="line", prefix_steps=["a"])
        backend.close()
    assert caught.value.public == "vLLM answered 400" and "secret" not in caught.value.public
