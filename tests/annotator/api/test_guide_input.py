"""The trace option ``guide`` on REST (issue 12, item 4): what is stored and shown, and the 400s
that say what is wrong with a bad guide. Nothing generates here (the transaction never commits, so
no worker is asked); tests/annotator/live/test_guided.py runs guided traces for real."""

from __future__ import annotations

import pytest

from annotator.models import ModelVersion, Trace
from tests.factories import make_prompt

pytestmark = pytest.mark.django_db

HOT = {"temperature": 1.3, "max_new_tokens": 64}


@pytest.fixture
def served(project):
    model = ModelVersion.objects.create(project=project, name="served", base_model="/models/demo")
    project.serving_model = model
    project.save(update_fields=["serving_model"])
    return model


def _create(client, project, prompt, **body):
    return client.post(f"/api/projects/{project.pk}/traces/", {"prompt": prompt.pk, **body}, format="json")


def test_a_guided_trace_keeps_its_guide_and_a_seed_and_runs_live(client_for, project, prompt, served):
    project.supervision = {"mode": "paced", "pace_tps": 8}
    project.save(update_fields=["supervision"])
    response = _create(client_for("supervisor"), project, prompt, guide={"k": 4, "by": "rule:demo_task"},
                       sampling_params=HOT)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["guide"] == {"k": 4, "by": "rule:demo_task"}
    # Without a seed it gets one, so the same guided run can be asked for again.
    assert isinstance(body["seed"], int) and body["sampling_params"]["seed"] == body["seed"]
    assert body["mode"] == "live"  # nobody waits at a guided trace's steps: not the project's paced default
    detail = client_for("viewer").get(f"/api/projects/{project.pk}/traces/{body['id']}/").json()
    assert detail["guide"] == {"k": 4, "by": "rule:demo_task"}


def test_an_unguided_trace_shows_no_guide(client_for, project, prompt, served):
    body = _create(client_for("supervisor"), project, prompt).json()
    assert body["guide"] is None


def test_a_guide_by_a_prm_of_the_project_is_accepted(client_for, project, prompt, served):
    prm = ModelVersion.objects.create(project=project, name="prm", base_model="/models/prm")
    response = _create(client_for("supervisor"), project, prompt, guide={"k": 2, "by": f"prm:{prm.pk}"},
                       sampling_params={**HOT, "seed": 5})
    assert response.status_code == 201, response.content
    assert response.json()["guide"] == {"k": 2, "by": f"prm:{prm.pk}"} and response.json()["seed"] == 5


@pytest.mark.parametrize(
    ("guide", "code", "says"),
    [
        ({"k": 0, "by": "rule:demo_task"}, "bad_guide", "guide.k must be an integer from 1 to 16"),
        ({"k": 17, "by": "rule:demo_task"}, "bad_guide", "from 1 to 16"),
        ({"k": "4", "by": "rule:demo_task"}, "bad_guide", "guide.k"),
        ({"k": True, "by": "rule:demo_task"}, "bad_guide", "guide.k"),
        ({"by": "rule:demo_task"}, "bad_guide", "guide.k"),
        ({"k": 4}, "bad_guide", "guide.by names the scorer"),
        ({"k": 4, "by": "rule:demo_task", "beam": 2}, "bad_guide", "Unknown guide setting(s): beam"),
        ({"k": 4, "by": "oracle"}, "bad_scorer", "Unknown scorer"),
        ({"k": 4, "by": "prm:999999"}, "bad_scorer", "the project has no model version 999999"),
        ([4, "rule:demo_task"], "bad_guide", "guide must be an object"),
        ("best of 4", "bad_guide", "guide must be an object"),
    ],
)
def test_a_bad_guide_is_a_400_that_says_what_is_wrong(client_for, project, prompt, served, guide, code, says):
    response = _create(client_for("supervisor"), project, prompt, guide=guide, sampling_params=HOT)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code and says in response.json()["detail"], response.json()
    assert not Trace.objects.filter(project=project).exists()


def test_a_guide_by_another_projects_model_is_refused(client_for, project, other_project, prompt, served):
    foreign = ModelVersion.objects.create(project=other_project, name="their prm", base_model="/models/prm")
    response = _create(client_for("supervisor"), project, prompt, guide={"k": 4, "by": f"prm:{foreign.pk}"},
                       sampling_params=HOT)
    assert response.status_code == 400 and response.json()["code"] == "bad_scorer"
    assert f"no model version {foreign.pk}" in response.json()["detail"]


def test_a_greedy_guide_and_a_non_live_guided_trace_are_refused(client_for, project, prompt, served):
    client = client_for("supervisor")
    greedy = _create(client, project, prompt, guide={"k": 4, "by": "rule:demo_task"},
                     sampling_params={"temperature": 0})
    assert greedy.status_code == 400 and greedy.json()["code"] == "bad_guide"
    assert "temperature above 0" in greedy.json()["detail"]
    for mode in ("step", "paced"):
        response = _create(client, project, prompt, guide={"k": 4, "by": "rule:demo_task"}, sampling_params=HOT,
                           mode=mode)
        assert response.status_code == 400 and response.json()["code"] == "bad_mode", response.content
        assert "its mode is live" in response.json()["detail"]
    assert not Trace.objects.filter(project=project).exists()


def test_the_rule_checker_cannot_guide_a_prompt_it_does_not_know(client_for, project, users, served):
    other = make_prompt(project, actor=users["owner"], text="Write a haiku about autumn.", category="general")
    response = _create(client_for("supervisor"), project, other, guide={"k": 4, "by": "rule:demo_task"},
                       sampling_params=HOT)
    assert response.status_code == 400 and response.json()["code"] == "bad_guide"
    assert "only knows the demo task's prompts" in response.json()["detail"]


def test_a_viewer_cannot_start_a_guided_trace(client_for, project, prompt, served):
    response = _create(client_for("viewer"), project, prompt, guide={"k": 4, "by": "rule:demo_task"},
                       sampling_params=HOT)
    assert response.status_code == 403
