"""Supervising at human pace: a project's supervision settings, and the scorers that rate each closed
step while a trace streams (issue 12).

``Project.supervision`` holds::

    {"mode": "live" | "paced" | "step",   # the default mode of a new trace
     "pace_tps": 8,                       # paced mode: tokens per second that reach the viewers
     "scorers": ["rule:demo_task", "prm:12", "verifier:15"],
     "pause_below": 0.5}                  # a score under this pauses the trace (null: never)

A scorer gives a closed step (and the final answer) a score in [0, 1], 1 meaning good:

- ``rule:demo_task``: the demo task's rule checker (trainer_worker/training/demo_task.py), the
  verifier a project has before it has trained one. Marked rule-based in the UI. Prompts that are not
  the demo task's get no score from it.
- ``prm:<model version id>``: a process reward model trained in the studio (stage ``prm``): the
  probability that the step is good, given the prompt and the steps before it.
- ``verifier:<model version id>``: a learned verifier (stage ``verifier``): its SafeWork score of
  the response so far.

Scores are machine labels (``StepScore``), never mixed with the supervisors' ``StepLabel`` rows.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

from annotator.errors import InvalidInput
from trainer_worker.training.heldout import user_text

log = logging.getLogger(__name__)

MODES = ("live", "paced", "step")
DEFAULT_PACE_TPS = 8.0
MIN_PACE_TPS, MAX_PACE_TPS = 0.5, 1000.0
MAX_SCORERS = 4
RULE_SCORER = "rule:demo_task"
ANSWER_INDEX = -1  # StepScore.step_index of the final answer

_RULE_SCORES = {1: (1.0, "the next right step"), 0: (0.5, "right, but redundant"), -1: (0.0, "wrong")}


@dataclass(frozen=True)
class Supervision:
    mode: str = "live"
    pace_tps: float = DEFAULT_PACE_TPS
    scorers: tuple[str, ...] = ()
    pause_below: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "pace_tps": self.pace_tps, "scorers": list(self.scorers),
                "pause_below": self.pause_below}


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"supervision.{name} must be a number.", code="invalid")
    if not low <= value <= high:
        raise InvalidInput(f"supervision.{name} must be between {low:g} and {high:g}.", code="invalid")
    return float(value)


def mode_check(mode: Any) -> str:
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}; got {mode!r:.40}.", code="bad_mode")
    return mode


def pace_check(pace: Any) -> float:
    return _number(pace, "pace_tps", MIN_PACE_TPS, MAX_PACE_TPS)


def scorer_check(name: Any, project_id: int | None = None) -> str:
    """A scorer name as stored; learned scorers must name a model version of the project."""
    if not isinstance(name, str):
        raise InvalidInput("A scorer is a string such as 'rule:demo_task' or 'prm:<model version id>'.",
                           code="bad_scorer")
    if name == RULE_SCORER:
        return name
    kind, _, ident = name.partition(":")
    if kind not in ("prm", "verifier") or not ident.isdigit() or len(ident) > 18:
        raise InvalidInput(f"Unknown scorer {name!r:.60}: use 'rule:demo_task', 'prm:<id>' or 'verifier:<id>'.",
                           code="bad_scorer")
    if project_id is not None:
        from annotator.models import ModelVersion

        if not ModelVersion.objects.filter(pk=int(ident), project_id=project_id).exists():
            raise InvalidInput(f"Scorer {name}: the project has no model version {ident}.", code="bad_scorer")
    return name


def supervision_from_json(data: Any, *, project_id: int | None = None) -> Supervision:
    """Validated settings (InvalidInput naming the bad key); {} or None is the default."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput("supervision must be an object.", code="invalid")
    unknown = sorted(set(data) - {"mode", "pace_tps", "scorers", "pause_below"})
    if unknown:
        raise InvalidInput(f"Unknown supervision setting(s): {', '.join(unknown)}.", code="invalid")
    scorers = data.get("scorers", [])
    if not isinstance(scorers, list) or len(scorers) > MAX_SCORERS:
        raise InvalidInput(f"supervision.scorers must be a list of at most {MAX_SCORERS} scorers.", code="invalid")
    pause_below = data.get("pause_below")
    return Supervision(
        mode=mode_check(data.get("mode", "live")),
        pace_tps=pace_check(data.get("pace_tps", DEFAULT_PACE_TPS)),
        scorers=tuple(dict.fromkeys(scorer_check(s, project_id) for s in scorers)),
        pause_below=None if pause_below is None else _number(pause_below, "pause_below", 0.0, 1.0),
    )


def project_supervision(project: Any) -> Supervision:
    try:
        return supervision_from_json(project.supervision or {})
    except InvalidInput:  # settings saved before a check existed: the defaults, not a failed trace
        log.warning("project %s has bad supervision settings; using the defaults", project.pk)
        return Supervision()


# --- scorers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    scorer: str
    score: float
    detail: str
    model_version_id: int | None = None


_models: dict[str, tuple[Any, Any]] = {}
_models_lock = threading.Lock()


def _learned(kind: str, model_version_id: int) -> tuple[Any, Any]:
    from annotator.models import ModelVersion

    path = ModelVersion.objects.values_list("path", flat=True).get(pk=model_version_id)
    key = f"{kind}:{path}"
    with _models_lock:
        if key not in _models:
            if kind == "prm":
                from trainer_worker.training.stages.prm import load_prm

                _models[key] = load_prm(path)
            else:
                from trainer_worker.training.stages.verifier import load_verifier

                _models[key] = load_verifier(path)
        return _models[key]


class Scorers:
    """The scorers of one trace's generation. A scorer that fails (a deleted model, a bad checkpoint)
    is logged and skipped for the rest of the trace: scoring never fails a generation."""

    def __init__(self, names: tuple[str, ...], messages: list[dict[str, Any]]) -> None:
        self.names = list(names)
        self.messages = messages
        self.text = user_text(messages)

    def _one(self, name: str, steps: list[str], answer: str | None) -> Score | None:
        if name == RULE_SCORER:
            from trainer_worker.training import demo_task

            try:
                if answer is not None:
                    right = demo_task.check_answer(self.text, answer)
                    return Score(name, 1.0 if right else 0.0, "matches the reference" if right else "not the reference")
                rating = demo_task.judge_steps(self.text, steps)[-1]
            except ValueError:
                return None  # not one of the demo task's prompts: the rule checker has no reference
            value, detail = _RULE_SCORES[rating]
            return Score(name, value, detail)
        kind, _, ident = name.partition(":")
        model, tokenizer = _learned(kind, int(ident))
        if kind == "prm":
            if answer is not None:
                return None  # a PRM scores steps
            from trainer_worker.training.stages.prm import prm_step_scores

            value = prm_step_scores(model, tokenizer, self.messages, steps)[-1]
            return Score(name, float(value), "P(step is good)", int(ident))
        from trainer_worker.training.stages.verifier import verifier_score
        from trainer_worker.vocabulary.format import render_prefix

        response = render_prefix(steps) if answer is None else f"{render_prefix(steps)}</think>\n{answer}"
        return Score(name, float(verifier_score(model, tokenizer, self.messages, response)), "verifier score",
                     int(ident))

    def end_value(self, name: str, steps: list[str]) -> float | None:
        """What ending the think block after ``steps`` is worth to the scorer ``name`` (guided
        generation), or None when it cannot say: the rule checker gives 1 when the chain is complete
        and right, 0 when it ends early or after a wrong step; learned scorers rate steps only."""
        if name != RULE_SCORER:
            return None
        from trainer_worker.training import demo_task

        try:
            reference = demo_task.solve(self.text).steps
            ratings = demo_task.judge_steps(self.text, steps)
        except ValueError:
            return None
        return 1.0 if -1 not in ratings and ratings.count(1) == len(reference) else 0.0

    def score(self, steps: list[str], answer: str | None = None) -> list[Score]:
        """Scores of the last of ``steps`` (or, given ``answer``, of the final answer)."""
        out: list[Score] = []
        for name in list(self.names):
            try:
                score = self._one(name, steps, answer)
            except Exception:
                log.warning("scorer %s failed; it is skipped for this trace", name, exc_info=True)
                self.names.remove(name)
                continue
            if score is not None:
                out.append(score)
        return out


# --- guided generation (annotator/generation/guided.py) -------------------------------------------

GUIDE_KEYS = ("k", "by")


@dataclass(frozen=True)
class Guide:
    """Best of ``k`` sampled candidates per step, chosen by the scorer ``by``."""

    k: int
    by: str

    def as_json(self) -> dict[str, Any]:
        return {"k": self.k, "by": self.by}


def guide_check(data: Any, *, project_id: int | None = None, prompt_text: str | None = None) -> Guide:
    """A validated guide (InvalidInput saying what is wrong). ``prompt_text``: the rule checker can
    only guide the demo task's prompts, so a guide by it on another prompt is refused."""
    from annotator.generation.guided import MAX_K

    if not isinstance(data, dict):
        raise InvalidInput('guide must be an object such as {"k": 4, "by": "rule:demo_task"}.', code="bad_guide")
    unknown = sorted(set(data) - set(GUIDE_KEYS))
    if unknown:
        raise InvalidInput(f"Unknown guide setting(s): {', '.join(map(str, unknown))}; a guide has k and by.",
                           code="bad_guide")
    k = data.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"guide.k must be an integer from 1 to {MAX_K} (candidates per step); got {k!r:.40}.",
                           code="bad_guide")
    if "by" not in data:
        raise InvalidInput("guide.by names the scorer that picks each step: 'rule:demo_task', 'prm:<id>' or "
                           "'verifier:<id>'.", code="bad_guide")
    by = scorer_check(data["by"], project_id)
    if by == RULE_SCORER and prompt_text is not None:
        from trainer_worker.training import demo_task

        try:
            demo_task.solve(prompt_text)
        except ValueError:
            raise InvalidInput("The rule checker (rule:demo_task) only knows the demo task's prompts; guide this "
                               "prompt by a PRM or a verifier.", code="bad_guide") from None
    return Guide(k=k, by=by)


def guide_score_fn(by: str, messages: list[dict[str, Any]]) -> Any:
    """The guide's score of a candidate next step (``guided.ScoreFn``). Unlike the live scorers, a
    guide that fails raises: a guided generation without its guide would be plain sampling."""
    scorers = Scorers((by,), messages)

    def score(steps: list[str], candidate: Any) -> float | None:
        if candidate.kind == "end":
            return scorers.end_value(by, steps)
        found = scorers._one(by, [*steps, candidate.text], None)
        return None if found is None else found.score

    return score
