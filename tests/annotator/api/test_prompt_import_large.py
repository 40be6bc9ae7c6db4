"""A large JSONL import through REST (issue 14): a file well over Django's in-memory upload size (it
goes to a temporary file, read line by line), inserted in batches in one transaction, all or nothing."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotator.models import AuditEvent, Prompt
from annotator.services.prompts import IMPORT_BATCH

pytestmark = pytest.mark.django_db

N = 20_000


def _lines(n: int) -> list[str]:
    return [json.dumps({"messages": [{"role": "user", "content": f"Compute {i} + 30 - 5 + 8, step by step."}],
                        "category": ("knowledge", "safety", "value", "general")[i % 4], "reference": str(i + 33),
                        "id": f"row-{i}"}) for i in range(n)]


def _post(client, project, lines):
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > max(settings.FILE_UPLOAD_MAX_MEMORY_SIZE, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    upload = SimpleUploadedFile("prompts.jsonl", body, content_type="application/jsonl")
    return client.post(f"/api/projects/{project.pk}/prompts/import/", {"file": upload}, format="multipart")


def test_a_large_file_imports_every_line_in_order_in_batches(client_for, project):
    with CaptureQueriesContext(connection) as queries:
        response = _post(client_for("owner"), project, _lines(N))
    assert response.status_code == 201, response.content[:300]
    body = response.json()
    assert body["imported"] == N and body["prompt_ids"] == sorted(body["prompt_ids"])
    rows = list(Prompt.objects.filter(project=project).order_by("id").values_list("metadata", "reference_answer"))
    assert [m["source_id"] for m, _ in rows] == [f"row-{i}" for i in range(N)]
    assert rows[-1][1] == str(N - 1 + 33)
    inserts = [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "annotator_prompt"')]
    assert len(inserts) == -(-N // IMPORT_BATCH)  # bulk inserts, not one per line
    event = AuditEvent.objects.get(project=project, action="prompt.imported")
    assert event.data["count"] == N and event.data["first_id"] == body["prompt_ids"][0]


def test_one_bad_line_near_the_end_imports_nothing_and_names_the_line(client_for, project):
    lines = _lines(N)
    lines[N - 2] = json.dumps({"prompt": "x", "category": "astrology"})
    response = _post(client_for("owner"), project, lines)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "import_failed"
    assert [e["line"] for e in body["errors"]] == [N - 1]
    assert "category must be one of" in body["errors"][0]["error"]
    assert f"Line {N - 1}" in body["detail"]
    assert not Prompt.objects.filter(project=project).exists()
    assert not AuditEvent.objects.filter(project=project, action="prompt.imported").exists()
