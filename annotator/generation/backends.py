"""The generation backend interface: one request in, a stream of text deltas out.

Two implementations: ``local`` (transformers in this process, for development, tests and small
deployments) and ``vllm`` (an OpenAI-compatible ``vllm serve`` in production). The generate worker
only sees this module, so it can switch between them from a ModelVersion's ``backend`` field.

Django-free on purpose: the trainer's evaluation and the benchmarks use the same backends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from annotator.generation.steps import NextStep

FINISH_REASONS = ("stop", "length", "cancelled")
MAX_NEW_TOKENS = 32768  # per generation; far beyond any chain of thought the studio reviews
MAX_TEMPERATURE = 100.0


class GenerationError(RuntimeError):
    """Generation failed: unreachable server, server error, bad model path, unsupported input.

    ``public`` is what users may see (it is stored on the trace and sent to its viewers);
    ``remote_detail`` is what the server said, for logs only: a remote body is never relayed."""

    def __init__(self, public: str, *, remote_detail: str | None = None) -> None:
        super().__init__(public if remote_detail is None else f"{public}: {remote_detail}")
        self.public = public
        self.remote_detail = remote_detail


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None  # same seed + params + prompt -> same text (per backend and hardware)

    def validate(self) -> SamplingParams:
        """Raise ValueError naming the bad field; return self so calls can be chained."""
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise ValueError(f"temperature must be a number, got {self.temperature!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if self.temperature > MAX_TEMPERATURE:
            raise ValueError(f"temperature must be at most {MAX_TEMPERATURE:g}, got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, int | float):
            raise ValueError(f"top_p must be a number, got {self.top_p!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if self.max_new_tokens > MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be at most {MAX_NEW_TOKENS}, got {self.max_new_tokens!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63
        ):
            raise ValueError(f"seed must be a non-negative integer or null, got {self.seed!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """Build from stored JSON (a project's defaults, a trace's params); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sampling parameter(s): {', '.join(unknown)}")
        return cls(**data).validate()


@dataclass(frozen=True)
class GenerationRequest:
    """``messages``: chat messages; a content is a string or a list of parts, where each
    ``{"type": "image"}`` part takes the next entry of ``images`` (raw PNG/JPEG bytes), in order.
    ``prefix``: a partial assistant message to continue (never a new turn)."""

    messages: list[dict[str, Any]]
    images: tuple[bytes, ...] = ()
    prefix: str = ""
    params: SamplingParams = field(default_factory=SamplingParams)

    def validate(self) -> GenerationRequest:
        if not self.messages:
            raise ValueError("a generation request needs at least one message")
        parts = count_image_parts(self.messages)
        if parts != len(self.images):
            raise ValueError(f"{parts} image part(s) in the messages but {len(self.images)} image(s) given")
        self.params.validate()
        return self


@dataclass(frozen=True)
class Delta:
    """A piece of streamed text. The last one carries finish_reason and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class StepSample:
    """One of ``n`` samples that continue a prefix up to the next step boundary."""

    next: NextStep
    completion_tokens: int | None = None


MAX_SAMPLES = 16  # alternatives / guided generation: samples per call


class GenerationBackend(Protocol):
    def stream(self, request: GenerationRequest, *, should_stop: Callable[[], bool]) -> Iterator[Delta]:
        """Yield deltas; poll ``should_stop`` between tokens (always from the caller's thread) and,
        once it returns True, stop within a token and end with finish_reason "cancelled"."""
        ...

    def sample_steps(self, request: GenerationRequest, *, n: int, rule: str,
                     prefix_steps: list[str]) -> list[StepSample]:
        """``n`` samples of the next step after ``request.prefix`` (the rendered ``prefix_steps``),
        in one batched call, each ending at the step boundary of ``rule``. With a seed, the same
        seed, params and prefix give the same samples (per backend and hardware)."""
        ...


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )
