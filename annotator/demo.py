"""The demo: a model trained here (no hub) and a project that serves it, seeded on first start."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from annotator.models import Membership, ModelVersion, Project, Prompt, Role

log = logging.getLogger(__name__)

DEMO_PROJECT = "Demo: arithmetic with refusals"
DEMO_MODEL = "demo-v0"
HELD_OUT_PROMPTS = 60
GUIDELINES = """\
Each step is one line of arithmetic. Rate a step -1 if its arithmetic is wrong or it does not follow
from the step before, 0 if it is correct but useless, +1 if it is correct and moves the solution on.
Unsafe requests must be refused: the final answer of a refusal is "I can't help with that."
When a step is wrong: stop the model, correct that step, and let the model continue.
"""


def demo_model_dir() -> Path:
    return Path(settings.MODEL_STORE) / "demo"


def build_model(*, out_dir: Path | None = None, budget_s: float = 240, seed: int = 0, force: bool = False,
                progress: Any = None) -> dict[str, Any]:
    """Train the demo model unless one is already there; returns its report."""
    from trainer_worker.training.demo_model import REPORT_FILE, build_demo_model

    out_dir = out_dir or demo_model_dir()
    report_path = out_dir / REPORT_FILE
    if report_path.exists() and not force:
        return json.loads(report_path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    return build_demo_model(out_dir, time_budget_s=budget_s, seed=seed, progress=progress).to_dict()


@transaction.atomic
def seed_project(admin: Any, model_dir: Path) -> Project:
    """The demo project: held-out prompts of the demo task, the demo model serving. Idempotent."""
    from trainer_worker.training import demo_task

    project = Project.objects.filter(name=DEMO_PROJECT).first()
    if project is None:
        from annotator.services.projects import project_create

        project = project_create(owner=admin, name=DEMO_PROJECT, guidelines=GUIDELINES,
                                 generation_defaults={"temperature": 0.7, "max_new_tokens": 160})
    Membership.objects.get_or_create(project=project, user=admin, defaults={"role": Role.OWNER})
    model, _ = ModelVersion.objects.get_or_create(
        project=project, name=DEMO_MODEL,
        defaults={"base_model": str(model_dir), "path": str(model_dir), "backend": "local",
                  "notes": "Tiny Llama trained on the synthetic demo task by build_demo_model."},
    )
    if project.serving_model_id is None:
        project.serving_model = model
        project.save(update_fields=["serving_model"])
    if not Prompt.objects.filter(project=project).exists():
        problems = demo_task.make_problems(HELD_OUT_PROMPTS, seed=7, split="heldout")
        Prompt.objects.bulk_create([
            Prompt(project=project, messages=[{"role": "user", "content": p.prompt}], category=p.category,
                   reference_answer=p.answer, metadata={"source": "demo_task", "kind": p.kind}, created_by=admin)
            for p in problems
        ])
    return project


def ensure_demo(admin: Any) -> Project:
    from trainer_worker.training.demo_model import progress_bar

    model_dir = demo_model_dir()
    if not (model_dir / "config.json").exists():
        print("[run] building the demo model (first start only; about 5 minutes on 2 cores)", flush=True)
        report = build_model(out_dir=model_dir, progress=progress_bar)
        print(f"\n[run] demo model: held-out accuracy {report['accuracy']:.0%}, "
              f"refusals {report['refusal_rate']:.0%}, format {report['format_rate']:.0%}", flush=True)
    return seed_project(admin, model_dir)
