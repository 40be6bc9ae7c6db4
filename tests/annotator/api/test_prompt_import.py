"""Bulk import: all lines valid or nothing imported, with the bad line's number and reason."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotator.models import AuditEvent, Prompt, PromptImage
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


def _post(client, project, lines, images=()):
    body = "\n".join(lines).encode()
    data = {"file": SimpleUploadedFile("prompts.jsonl", body, content_type="application/jsonl")}
    if images:
        data["images"] = list(images)
    return client.post(f"/api/projects/{project.pk}/prompts/import/", data, format="multipart")


GOOD = json.dumps({"messages": [{"role": "user", "content": "Compute 3 + 4."}], "category": "knowledge",
                   "reference": "7"})


def test_imports_both_layouts_with_images(client_for, project):
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(color="blue")).decode()
    lines = [
        GOOD,
        json.dumps({"prompt": "Describe the picture.", "images": ["cat.png"], "category": "general"}),
        "",  # blank lines are skipped
        json.dumps({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]}],
                    "images": [data_url], "id": "row-9"}),
    ]
    response = _post(client_for("owner"), project, lines, [SimpleUploadedFile("cat.png", png_bytes())])
    assert response.status_code == 201, response.json()
    assert response.json()["imported"] == 3
    prompts = list(Prompt.objects.filter(project=project).order_by("id"))
    assert prompts[0].reference_answer == "7" and prompts[0].category == "knowledge"
    # A plain prompt with images: the image parts lead the user turn (TRL's layout).
    assert prompts[1].messages == [{"role": "user", "content": [{"type": "image"},
                                                                {"type": "text", "text": "Describe the picture."}]}]
    assert prompts[1].images.get().content_type == "image/png"
    assert prompts[2].metadata == {"source_id": "row-9"}
    assert prompts[2].images.count() == 1
    event = AuditEvent.objects.get(project=project, action="prompt.imported")
    assert event.data["count"] == 3


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"category": "knowledge"}), "missing field 'messages' or 'prompt'"),
        (json.dumps({"prompt": 42}), "'prompt' must be a string or a list of messages"),
        (json.dumps({"prompt": "x", "category": "astrology"}), "category must be one of"),
        (json.dumps({"prompt": "x", "reference": 7}), "reference must be a string"),
        (json.dumps({"prompt": "x", "images": ["missing.png"]}), "unknown image 'missing.png'"),
        (json.dumps({"prompt": "x", "images": "cat.png"}), "'images' must be a list"),
        (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), "role must be one of"),
        (json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
         "last message must be the user's"),
        (json.dumps({"prompt": "x", "colour": "red"}), "unknown field(s): colour"),
        (json.dumps(["a", "list"]), "each line must be a JSON object"),
        (json.dumps({"prompt": "x", "images": ["data:image/png;base64,!!!"]}), "invalid base64"),
    ],
)
def test_bad_line_reports_its_number_and_imports_nothing(client_for, project, bad_line, reason):
    before = (Prompt.objects.count(), PromptImage.objects.count(), AuditEvent.objects.count())
    response = _post(client_for("owner"), project, [GOOD, GOOD, bad_line, GOOD])
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "import_failed"
    assert body["errors"][0]["line"] == 3
    assert reason in body["errors"][0]["error"]
    assert "Line 3" in body["detail"] and "Nothing was imported" in body["detail"]
    assert (Prompt.objects.count(), PromptImage.objects.count(), AuditEvent.objects.count()) == before


def test_all_bad_lines_are_listed(client_for, project):
    response = _post(client_for("owner"), project, ["{", GOOD, "[]", "nope"])
    assert [e["line"] for e in response.json()["errors"]] == [1, 3, 4]


def test_bad_image_upload_is_refused_before_any_line(client_for, project):
    fake = SimpleUploadedFile("cat.png", b"GIF89a not really an image")
    response = _post(client_for("owner"), project, [GOOD], [fake])
    assert response.status_code == 400
    assert response.json()["code"] == "bad_image"
    assert Prompt.objects.count() == 0


def test_empty_and_non_utf8_files(client_for, project):
    assert _post(client_for("owner"), project, ["", "  "]).json()["detail"] == "The file holds no prompts."
    data = {"file": SimpleUploadedFile("p.jsonl", b"\xff\xfe{}")}
    response = client_for("owner").post(f"/api/projects/{project.pk}/prompts/import/", data, format="multipart")
    assert response.status_code == 400 and response.json()["code"] == "bad_encoding"


def test_oversize_file_is_refused(client_for, project, settings):
    settings.MAX_IMPORT_BYTES = 100
    response = _post(client_for("owner"), project, [GOOD, GOOD, GOOD])
    assert response.status_code == 400 and response.json()["code"] == "too_large"
    assert Prompt.objects.count() == 0


def test_missing_file_field(client_for, project):
    response = client_for("owner").post(f"/api/projects/{project.pk}/prompts/import/", {}, format="multipart")
    assert response.status_code == 400
    assert "multipart field 'file'" in response.json()["detail"]
