"""A simulated supervisor that works the studio as a person in the review screen does, through the
studio's own services: it starts a trace, rates its steps, corrects the first wrong step, lets the
model continue on the branch, repeats (at most ``supervisor.MAX_EDITS`` corrections) and gives the
final chain its verdict and labels. What it leaves behind (step labels, corrections, branches,
reviews) is what a person's work leaves, so snapshots take it exactly as they take a person's.

Generation runs here, in this process, through ``trace_generate`` (the body of the generate
worker's task), so a benchmark needs no generate worker; the on-commit message that asks a worker
for the same trace finds it already finished and does nothing. The policy (what to rate, what to
write) is ``trainer_worker.training.supervisor``; it knows the demo task only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from annotator.models import Project, Prompt, Trace, TraceStatus
from annotator.services.corrections import correction_create
from annotator.services.generation import trace_create, trace_generate
from annotator.services.labels import step_label_set, trace_review_set
from trainer_worker.training import demo_task, supervisor
from trainer_worker.training.heldout import user_text


@dataclass
class Supervised:
    """The outcome of supervising one trace: human labels spent, corrections made, the final
    chain (the last branch, or the trace itself) and whether it ended right."""

    trace_id: int
    final_trace_id: int
    labels: int = 0
    edits: int = 0
    right: bool = False
    klass: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


def _steps(trace: Trace) -> list[str]:
    return list(trace.steps.order_by("index").values_list("text", flat=True))


class StudioSupervisor:
    """One supervisor (a project member) working one project."""

    def __init__(self, project: Project, user: Any) -> None:
        self.project = project
        self.user = user

    def generate(self, trace: Trace) -> Trace:
        """Run the trace's generation here (see the module docstring) and return it finished."""
        trace_generate(trace_id=trace.pk, owner="simulation")
        trace.refresh_from_db()
        if trace.status != TraceStatus.FINISHED:
            raise RuntimeError(f"trace {trace.pk} ended {trace.status}: {trace.error}")
        return trace

    def start(self, prompt: Prompt, *, sampling_params: dict[str, Any] | None = None) -> Trace:
        """A new trace of the serving model for ``prompt``, generated to its end."""
        # Full speed: a simulated supervisor reads at once and pauses by its own policy.
        trace = trace_create(project=self.project, prompt=prompt, actor=self.user, sampling_params=sampling_params,
                             mode="live")
        return self.generate(trace)

    def _rate(self, trace: Trace, ratings: list[int], start: int) -> None:
        steps = {s.index: s for s in trace.steps.all()}
        for offset, rating in enumerate(ratings):
            step_label_set(step=steps[start + offset], annotator=self.user, rating=rating)

    def _review(self, trace: Trace, verdict: str, labels: dict[str, str | None]) -> None:
        trace_review_set(trace=trace, annotator=self.user, verdict=verdict,
                         **{name: value or "" for name, value in labels.items()})

    def supervise(self, trace: Trace) -> Supervised:
        """Review ``trace`` (finished) to the end: correct, continue, repeat; then the verdict."""
        text = user_text(trace.prompt.messages)
        result = Supervised(trace_id=trace.pk, final_trace_id=trace.pk, klass=demo_task.solve(text).klass)
        current, rate_from = trace, 0
        while True:
            steps = _steps(current)
            decision = supervisor.decide(text, steps, current.final_answer,
                                         edits_left=supervisor.MAX_EDITS - result.edits, rate_from=rate_from)
            self._rate(current, decision.ratings, rate_from)
            result.labels += decision.labels
            if decision.correct_at is None:
                self._review(current, decision.verdict, {"safety_label": decision.safety_label,
                                                         "value_label": decision.value_label,
                                                         "knowledge_label": decision.knowledge_label})
                result.final_trace_id = current.pk
                result.right = decision.verdict == "accept"
                return result
            current.refresh_from_db()
            correction = correction_create(trace=current, step_index=decision.correct_at, text=decision.text,
                                           author=self.user, expected_version=current.version)
            result.edits += 1
            result.history.append({"trace": current.pk, "step": decision.correct_at, "text": decision.text})
            # The branch's steps before the corrected one were rated on the chain it came from; the
            # corrected step is the supervisor's own. The model's continuation is rated next.
            current = self.generate(Trace.objects.get(pk=correction.corrected_trace_id))
            rate_from = decision.correct_at + 1
            for step in current.steps.filter(index__lt=decision.correct_at, copied_from__isnull=False):
                label = step.copied_from.labels.filter(annotator=self.user).first()
                if label is not None:  # the UI shows the earlier rating on the branch; not a new label
                    step_label_set(step=step, annotator=self.user, rating=label.rating)

    def outcome_label(self, trace: Trace) -> bool:
        """The cheap label: right or wrong for the whole answer (one label; a verdict, no steps)."""
        text = user_text(trace.prompt.messages)
        right = demo_task.check_answer(text, trace.final_answer)
        self._review(trace, "accept" if right else "reject", supervisor.review_labels(text, trace.final_answer, right))
        return right
