"""Builders for test data. They go through the services where a service exists, so test data is
shaped exactly as users' data is."""

from __future__ import annotations

from annotator.models import Prompt, Step, Trace, TraceStatus
from annotator.services.projects import project_create
from annotator.services.prompts import prompt_create


def make_project(*, owner, name: str = "Project", **fields):
    return project_create(owner=owner, name=name, **fields)


def make_prompt(project, *, actor, text: str = "Compute 12 + 30 - 5 + 8.", category: str = "knowledge",
                reference: str = "45") -> Prompt:
    return prompt_create(project=project, actor=actor, messages=[{"role": "user", "content": text}],
                         category=category, reference=reference)


def make_trace(project, prompt, *, steps: list[str], answer: str | None = None,
               status: str = TraceStatus.FINISHED) -> Trace:
    """A finished model trace (generation itself is exercised by the live-review tests)."""
    trace = Trace.objects.create(project=project, prompt=prompt, status=status, final_answer=answer,
                                 sampling_params={"temperature": 0.7}, seed=1)
    Step.objects.bulk_create([Step(trace=trace, index=i, text=t) for i, t in enumerate(steps)])
    return trace
