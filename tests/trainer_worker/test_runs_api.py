"""REST of training runs without a worker: who may do what, what a bad request is told, cancel of a
queued run, and promotion (local and vLLM backends) changing what the next trace generates with."""

from __future__ import annotations

import pytest
from django.conf import settings

from annotator.models import AuditEvent, ModelVersion, Project, Trace, TrainingRun
from tests.trainer_worker.conftest import TINY_CONFIG, build_corpus, ready_snapshot

STATUS = {"anonymous": 401, "outsider": 404}


def _expected(role: str, allowed: set[str], ok: int) -> int:
    return STATUS.get(role) or (ok if role in allowed else 403)


@pytest.fixture
def corpus(studio, project, users, base_version):
    build_corpus(project, users["owner"])
    return {"sft": ready_snapshot(project, users["owner"], "sft"),
            "rl": ready_snapshot(project, users["owner"], "rl_prompts")}


def _queued_run(project, users, base_version, snapshot) -> TrainingRun:
    from annotator.services.training.runs import run_create

    return run_create(project=project, actor=users["owner"], stage="sft", base_model=base_version,
                      snapshots=[snapshot], config=TINY_CONFIG)


@pytest.mark.parametrize("role", ["anonymous", "outsider", "viewer", "supervisor", "owner"])
def test_role_matrix(role, client_for, project, users, base_version, corpus):
    api = client_for(role)
    run = _queued_run(project, users, base_version, corpus["sft"])
    p = f"/api/projects/{project.pk}"
    readers = {"viewer", "supervisor", "owner"}

    assert api.get(f"{p}/runs/").status_code == _expected(role, readers, 200)
    assert api.get(f"{p}/runs/{run.pk}/").status_code == _expected(role, readers, 200)
    assert api.get(f"{p}/runs/{run.pk}/metrics/").status_code == _expected(role, readers, 200)
    assert api.get(f"{p}/models/{base_version.pk}/evals/").status_code == _expected(role, readers, 200)
    assert api.get(f"{p}/evals/").status_code == _expected(role, readers, 200)
    body = {"stage": "sft", "base_model": base_version.pk, "snapshots": [corpus["sft"].pk], "config": TINY_CONFIG}
    assert api.post(f"{p}/runs/", body, format="json").status_code == _expected(role, {"owner"}, 201)
    assert api.post(f"{p}/runs/{run.pk}/cancel/").status_code == _expected(role, {"owner"}, 200)
    assert api.post(f"{p}/models/{base_version.pk}/promote/").status_code == _expected(role, {"owner"}, 200)
    # Only the owner changed anything.
    assert TrainingRun.objects.count() == (2 if role == "owner" else 1)
    assert TrainingRun.objects.get(pk=run.pk).status == ("cancelled" if role == "owner" else "queued")
    serving = Project.objects.get(pk=project.pk).serving_model_id
    assert serving == (base_version.pk if role == "owner" else None)


def test_bad_config_lists_every_problem(client_for, project, base_version, corpus):
    body = {"stage": "sft", "base_model": base_version.pk, "snapshots": [corpus["sft"].pk],
            "config": {"max_steps": 0, "learning_rate": -1, "output_dir": "/tmp/elsewhere"}}
    response = client_for("owner").post(f"/api/projects/{project.pk}/runs/", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == ["the studio sets output_dir itself; leave them out of config"]
    body["config"] = {"max_steps": 0, "learning_rate": -1, "per_device_batch_size": 0}
    errors = client_for("owner").post(f"/api/projects/{project.pk}/runs/", body, format="json").json()["errors"]
    assert len(errors) == 3
    assert any("max_steps" in e for e in errors) and any("learning_rate" in e for e in errors)
    assert any("per_device_batch_size" in e for e in errors)
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("evaluation", [{"max_prompts": 0}, {"batch_size": 10**12}, {"max_new_tokens": "many"},
                                        {"batch_size": True}, {"beam": 4}, [1]])
def test_bad_eval_options_are_refused(client_for, project, base_version, corpus, evaluation):
    body = {"stage": "sft", "base_model": base_version.pk, "snapshots": [corpus["sft"].pk],
            "config": {**TINY_CONFIG, "eval": evaluation}}
    response = client_for("owner").post(f"/api/projects/{project.pk}/runs/", body, format="json")
    assert response.status_code == 400, response.content
    assert any("config.eval" in e for e in response.json()["errors"])
    assert not TrainingRun.objects.exists()


def test_snapshot_must_be_ready_and_fit_the_stage(client_for, project, users, base_version, corpus, other_project):
    from annotator.services.snapshots import snapshot_create

    api = client_for("owner")
    url = f"/api/projects/{project.pk}/runs/"
    wrong_kind = api.post(url, {"stage": "dpo", "base_model": base_version.pk, "snapshots": [corpus["sft"].pk]},
                          format="json")
    assert wrong_kind.status_code == 400
    assert "preference, preference_step" in wrong_kind.json()["errors"][0]
    pending = snapshot_create(project=project, actor=users["owner"], kind="sft")
    not_ready = api.post(url, {"stage": "sft", "base_model": base_version.pk, "snapshots": [pending.pk]},
                         format="json")
    assert not_ready.status_code == 400 and "pending, not ready" in not_ready.json()["errors"][0]
    grpo_on_rl = api.post(url, {"stage": "grpo", "base_model": base_version.pk, "snapshots": [corpus["rl"].pk],
                                "config": {"max_steps": 1, "num_generations": 3, "per_device_batch_size": 2}},
                          format="json")
    assert grpo_on_rl.status_code == 400 and "num_generations (3) must divide" in grpo_on_rl.json()["detail"]
    foreign = snapshot_create(project=other_project, actor=users["outsider"], kind="sft")
    elsewhere = api.post(url, {"stage": "sft", "base_model": base_version.pk, "snapshots": [foreign.pk]},
                         format="json")
    assert elsewhere.status_code == 404
    assert not TrainingRun.objects.exists()


def test_cancelled_queued_run_is_never_trained(client_for, project, users, base_version, corpus):
    from annotator.services.training.worker import run_execute

    run = _queued_run(project, users, base_version, corpus["sft"])
    response = client_for("owner").post(f"/api/projects/{project.pk}/runs/{run.pk}/cancel/")
    assert response.json()["status"] == "cancelled"
    assert run_execute(run_id=run.pk, worker="late-delivery") is None  # the task, delivered afterwards
    run.refresh_from_db()
    assert run.status == "cancelled" and run.worker == "" and run.started_at is None
    assert client_for("owner").post(f"/api/projects/{project.pk}/runs/{run.pk}/cancel/").status_code == 409


def test_promote_vllm_adapter_loads_it_and_the_next_trace_is_served_by_it(studio, client_for, project, users,
                                                                           prompt):
    # The trace is generated below, in this process (studio sends generate tasks to a queue no one reads).
    from django.conf import settings

    from annotator.services import generation
    from tests.support.fake_vllm import FakeVLLM

    adapter = str(settings.MODEL_STORE / "runs" / "7" / "final")  # adapters must lie under the model store
    with FakeVLLM() as fake:
        options = {"base_url": fake.base_url}
        base = ModelVersion.objects.create(project=project, name="served-base", base_model="org/base",
                                           backend="vllm", backend_options=options)
        tuned = ModelVersion.objects.create(project=project, name="tuned-7", base_model="org/base", backend="vllm",
                                            adapter_path=adapter, backend_options=options, parent=base)
        api = client_for("owner")
        assert api.post(f"/api/projects/{project.pk}/models/{base.pk}/promote/").status_code == 200
        assert fake.state.loaded_adapters == {}  # a base model needs no loading
        response = api.post(f"/api/projects/{project.pk}/models/{tuned.pk}/promote/")
        assert response.status_code == 200 and response.json()["serving_model"] == tuned.pk
        assert fake.state.loaded_adapters == {"tuned-7": adapter}
        event = AuditEvent.objects.get(action="model_version.promoted", target_id=str(tuned.pk))
        assert event.data["previous"] == base.pk

        trace_id = client_for("supervisor").post(f"/api/projects/{project.pk}/traces/", {"prompt": prompt.pk},
                                                 format="json").json()["id"]
        generation.trace_generate(trace_id=trace_id)
        trace = Trace.objects.get(pk=trace_id)
        assert trace.model_version_id == tuned.pk and trace.status == "finished"
        chat = [body for path, body in fake.requests if path == "/v1/chat/completions"]
        assert chat[-1]["model"] == "tuned-7"
        # Promoting it again (the server already has it) is fine.
        assert api.post(f"/api/projects/{project.pk}/models/{tuned.pk}/promote/").status_code == 200


def test_project_edit_refuses_serving_model_and_points_to_promote(client_for, project):
    version = ModelVersion.objects.create(project=project, name="v1", base_model="/models/v1", path="/models/v1")
    response = client_for("owner").patch(f"/api/projects/{project.pk}/", {"serving_model": version.pk},
                                         format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "use_promote" and "/promote/" in response.json()["detail"]
    assert Project.objects.get(pk=project.pk).serving_model_id is None
    assert not AuditEvent.objects.filter(action="project.updated").exists()


def test_promote_loads_the_adapter_without_holding_the_project_lock(transactional_db, client_for, project, users):
    """While a slow vLLM server loads the adapter, the project row stays free: edits do not wait."""
    import threading

    from django.db import connection, transaction

    from tests.support.fake_vllm import FakeVLLM

    with FakeVLLM() as fake:
        fake.state.load_delay_s = 1.5
        tuned = ModelVersion.objects.create(project=project, name="tuned-9", base_model="org/base", backend="vllm",
                                            adapter_path=str(settings.MODEL_STORE / "runs" / "9" / "final"),
                                            backend_options={"base_url": fake.base_url})
        answers = []

        def promote():
            answers.append(client_for("owner").post(f"/api/projects/{project.pk}/models/{tuned.pk}/promote/"))
            connection.close()

        thread = threading.Thread(target=promote)
        thread.start()
        assert fake.state.load_started.wait(10), "the promotion never reached the server"
        with transaction.atomic():  # raises DatabaseError if the promotion held the row
            Project.objects.select_for_update(nowait=True).get(pk=project.pk)
        thread.join(15)
    assert answers and answers[0].status_code == 200, answers
    assert Project.objects.get(pk=project.pk).serving_model_id == tuned.pk


def test_a_run_trains_on_the_train_split_only(studio, project, users, base_version, tmp_path):
    """A snapshot's eval split is held out of training (the run's data file has only train rows)."""
    import pyarrow.parquet as pq

    from annotator.services.snapshots import snapshot_build, snapshot_create
    from annotator.services.training.runs import run_create
    from annotator.services.training.worker import _dataset_path

    build_corpus(project, users["owner"])
    snapshot = snapshot_create(project=project, actor=users["owner"], kind="sft", eval_fraction=0.5, seed=1)
    snapshot = snapshot_build(snapshot_id=snapshot.pk)
    run = run_create(project=project, actor=users["owner"], stage="sft", base_model=base_version,
                     snapshots=[snapshot], config=TINY_CONFIG)
    table = pq.read_table(_dataset_path(run, tmp_path))
    splits = table.column("split").to_pylist()
    assert splits and set(splits) == {"train"}
    assert 0 < table.num_rows < snapshot.record_count  # some records went to eval
