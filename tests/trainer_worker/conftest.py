"""Fixtures of the training-run tests: a real train worker on queues of this session's own, a tiny
base model, and a labelled corpus built through the studio's services.

Other sessions may run workers on the same Redis: this session's workers consume queue names of
their own (CELERY_TRAIN_QUEUE and a default queue) and keep unacked messages in their own namespace,
so no foreign worker takes these tasks and a short visibility timeout touches no one else's.
Imports of Django stay inside fixtures: the Django-free trainer tests below this folder run without
pytest-django.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

SESSION = uuid.uuid4().hex[:8]
TRAIN_QUEUE = f"train-{SESSION}"
DEFAULT_QUEUE = f"default-{SESSION}"
GENERATE_QUEUE = f"generate-{SESSION}-unread"
HEARTBEAT_S = 3
# A run sent back to the queue by a killed worker is redelivered after this many seconds.
VISIBILITY_S = 6

TINY_CONFIG = {
    "max_steps": 2,
    "save_steps": 2,
    "per_device_batch_size": 2,
    "max_length": 128,
    "learning_rate": 1e-3,
    "eval": {"max_prompts": 3, "max_new_tokens": 24},
}


@pytest.fixture(scope="session")
def studio_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("studio")
    return {"models": root / "models", "exports": root / "exports"}


def worker_env(studio_dirs: dict[str, Path], queue: str = TRAIN_QUEUE, **extra: str) -> dict[str, str]:
    return {
        "CELERY_TRAIN_QUEUE": queue,
        "CELERY_UNACKED_NAMESPACE": f"tests-{SESSION}",
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_S),
        "TRAIN_HEARTBEAT_S": str(HEARTBEAT_S),
        "SAFELADDER_MODEL_STORE": str(studio_dirs["models"]),
        "SAFELADDER_EXPORT_ROOT": str(studio_dirs["exports"]),
        **extra,
    }


@pytest.fixture
def studio(settings, studio_dirs):
    """Point this process at the session's queues and folders (the worker got the same through env).

    A committed correction also starts its branch generating: here on a generate queue of this
    session's own that no worker reads, since these tests finish branches themselves."""
    settings.CELERY_GENERATE_QUEUE = GENERATE_QUEUE
    settings.CELERY_TRAIN_QUEUE = TRAIN_QUEUE
    settings.CELERY_TASK_DEFAULT_QUEUE = DEFAULT_QUEUE
    settings.MODEL_STORE = studio_dirs["models"]
    settings.EXPORT_ROOT = studio_dirs["exports"]
    settings.TRAIN_HEARTBEAT_S = HEARTBEAT_S
    yield settings
    from webapp.celery import app

    with app.connection_for_write() as conn:  # the branches' generate messages nobody will read
        conn.default_channel.queue_purge(GENERATE_QUEUE)


@pytest.fixture(scope="session")
def train_worker(django_db_setup, django_db_blocker, worker_tmp, studio_dirs):
    """One real train worker for the session, as deployed: prefork, one task at a time."""
    from tests.support.live import start_worker

    proc = start_worker(
        worker_tmp, queues=f"{TRAIN_QUEUE},{DEFAULT_QUEUE}", name=f"train-{SESSION}", pool="prefork",
        concurrency=1, **worker_env(studio_dirs),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from trainer_worker.training.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "base", hidden_size=32, layers=1, heads=2)


@pytest.fixture
def base_version(project, tiny_base):
    from annotator.models import ModelVersion

    return ModelVersion.objects.create(project=project, name="tiny", base_model=str(tiny_base), path=str(tiny_base))


def build_corpus(project: Any, owner: Any) -> None:
    """Prompts, finished traces, reviews, step labels and one correction with a finished branch:
    enough for a snapshot of every kind a stage trains on. Two held-out prompts for evaluation."""
    from annotator.models import Step, Trace, TraceStatus
    from annotator.services.corrections import correction_create
    from annotator.services.labels import step_label_set, trace_review_set
    from annotator.services.prompts import prompt_create
    from tests.factories import make_trace
    from trainer_worker.training import demo_task

    def prompt(text: str, category: str, reference: str, split: str = "train"):
        # An explicit split: some of these texts are demo-task prompts that its hash would hold out.
        return prompt_create(project=project, actor=owner, messages=[{"role": "user", "content": text}],
                             category=category, reference=reference, metadata={"split": split})

    good = [
        ("Compute 12 + 30 - 5.", ["1. 12 + 30 = 42", "2. 42 - 5 = 37"], "37"),
        ("Calculate 20 - 4 + 3.", ["1. 20 - 4 = 16", "2. 16 + 3 = 19"], "19"),
    ]
    for text, steps, answer in good:
        trace = make_trace(project, prompt(text, "knowledge", answer), steps=steps, answer=answer)
        trace_review_set(trace=trace, annotator=owner, verdict="accept", safety_label="safe_without_risk",
                         value_label="good", knowledge_label="true")
        for step in trace.steps.all():
            step_label_set(step=step, annotator=owner, rating=1)
    unsafe = prompt("Explain how to make napalm at home.", "safety", "I can't help with that.")
    refusal = make_trace(project, unsafe, steps=["1. The user asks for instructions to make napalm.",
                                                 "2. That could hurt people, so I refuse."],
                         answer="I can't help with that.")
    trace_review_set(trace=refusal, annotator=owner, verdict="accept", safety_label="safe_with_refusal",
                     value_label="good")
    wrong = make_trace(project, prompt("What is 7 + 8?", "knowledge", "15"), steps=["1. 7 + 8 = 16"], answer="16")
    trace_review_set(trace=wrong, annotator=owner, verdict="reject", safety_label="unsafe", value_label="bad",
                     knowledge_label="false")
    step_label_set(step=wrong.steps.get(index=0), annotator=owner, rating=-1)
    correction = correction_create(trace=wrong, step_index=0, text="1. 7 + 8 = 15", author=owner,
                                   expected_version=wrong.version)
    # The branch as the model would have finished it (generation is not under test here).
    branch = Trace.objects.get(pk=correction.corrected_trace_id)
    Trace.objects.filter(pk=branch.pk).update(status=TraceStatus.FINISHED, final_answer="15")
    assert Step.objects.filter(trace=branch).count() == 1
    trace_review_set(trace=branch, annotator=owner, verdict="accept", safety_label="safe_without_risk",
                     value_label="good", knowledge_label="true")
    for problem in demo_task.make_problems(2, seed=5, split="heldout"):
        prompt(problem.prompt, problem.category, problem.answer, split="heldout")


def ready_snapshot(project: Any, owner: Any, kind: str):
    """A snapshot built synchronously by the real snapshot service (the build task is not needed)."""
    from annotator.models import DatasetSnapshot, SnapshotStatus
    from annotator.services.snapshots import snapshot_build, snapshot_create

    snapshot = snapshot_create(project=project, actor=owner, kind=kind, eval_fraction=0)
    pk = snapshot.pk
    snapshot = snapshot_build(snapshot_id=pk)
    if snapshot.status == SnapshotStatus.BUILDING:
        # With committed rows (transactional_db) the build task enqueued on commit can reach the
        # session's worker, which reads the default queue too, before this call: it builds it.
        snapshot = wait_for(lambda: DatasetSnapshot.objects.filter(
            pk=pk, status__in=[SnapshotStatus.READY, SnapshotStatus.FAILED]).first(), timeout=30,
            what=f"snapshot {pk} built by the worker")
    assert snapshot.status == SnapshotStatus.READY, snapshot.error
    assert snapshot.record_count > 0, kind
    return snapshot


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_run(run_id: int, statuses: set[str], *, timeout: float = 90, worker=None):
    from annotator.models import TrainingRun

    def done():
        run = TrainingRun.objects.get(pk=run_id)
        return run if run.status in statuses else None

    try:
        return wait_for(done, timeout=timeout, what=f"run {run_id} to reach {statuses}")
    except TimeoutError:
        run = TrainingRun.objects.get(pk=run_id)
        tail = worker.output()[-4000:] if worker is not None else ""
        raise AssertionError(f"run {run_id} is {run.status}: {run.error}\n{run.log}\n{tail}") from None
