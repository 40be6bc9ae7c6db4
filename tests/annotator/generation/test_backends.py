"""Sampling parameter validation, request validation and the backend factory."""

from __future__ import annotations

import pytest

from annotator.generation.backends import GenerationRequest, SamplingParams
from annotator.generation.factory import make_backend


def test_defaults_are_valid_and_round_trip_through_json_dicts() -> None:
    params = SamplingParams(temperature=0.2, top_p=0.95, max_new_tokens=64, seed=9)
    assert SamplingParams.from_dict(params.to_dict()) == params
    assert SamplingParams().validate() == SamplingParams()
    assert SamplingParams.from_dict({}) == SamplingParams()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be >= 0"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": True}, "seed must be a non-negative integer"),
    ],
)
def test_bad_sampling_values_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs).validate()
    with pytest.raises(ValueError, match=message):
        SamplingParams.from_dict(kwargs)


def test_unknown_sampling_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown sampling parameter.*top_k"):
        SamplingParams.from_dict({"temperature": 0.5, "top_k": 40})


def test_request_checks_image_parts_against_images() -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    with pytest.raises(ValueError, match=r"1 image part.*0 image"):
        GenerationRequest(messages=messages).validate()
    with pytest.raises(ValueError, match="at least one message"):
        GenerationRequest(messages=[]).validate()
    ok = GenerationRequest(messages=messages, images=(b"\x89PNG\r\n\x1a\n",))
    assert ok.validate() is ok


def test_unknown_backend_kind() -> None:
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        make_backend("tgi")
