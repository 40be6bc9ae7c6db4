"""Bad input on REST gets a clear 4xx with the documented error shape, never a 5xx.

Each case here answered 500 (or an HTML page) on the running server before it was fixed: NUL and lone
surrogates reaching PostgreSQL, deep JSON, NaN, out-of-range integers and limits, HTTP TRACE, a
decompression bomb, an oversize body, missing size caps, and an import that left files behind.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from annotator.models import ModelVersion, Project, Prompt, PromptImage
from annotator.services.prompts import prompts_import_jsonl
from tests.conftest import PASSWORD, png_bytes

pytestmark = pytest.mark.django_db


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body.get("code"), str) and isinstance(body.get("detail"), str), body
    if code is not None:
        assert body["code"] == code, body
    return body


def _send(client, method: str, url: str, raw: str | bytes):
    return getattr(client, method)(url, data=raw, content_type="application/json")


@pytest.fixture
def owner(client_for):
    return client_for("owner")


# --- NUL and lone surrogates ------------------------------------------------------------------------

NUL_BODIES = [
    ("post", "/api/projects/", {"name": "x", "guidelines": "a\x00b"}),
    ("post", "/api/projects/", {"name": "x", "label_schema": {"tags": ["a\x00"]}}),
    ("patch", "/api/projects/{p}/", {"autotrain_policy": {"stage": "s\x00"}}),
    ("post", "/api/projects/{p}/prompts/", {"messages": [{"role": "user", "content": "2+2\x00"}]}),
    ("post", "/api/projects/{p}/prompts/",
     {"messages": [{"role": "user", "content": "2+2"}], "metadata": {"k\x00": 1}}),
    ("post", "/api/projects/{p}/models/", {"name": "m", "base_model": "b", "backend_options": {"x": "\x00"}}),
    ("put", "/api/projects/{p}/traces/{t}/steps/0/label/", {"rating": 1, "note": "fine\x00"}),
]


@pytest.mark.parametrize(("method", "url", "body"), NUL_BODIES)
def test_nul_in_any_json_value_is_refused(owner, project, trace, method, url, body):
    url = url.format(p=project.pk, t=trace.pk)
    response = _send(owner, method, url, json.dumps(body))
    body = _assert_error(response, 400, "invalid")
    assert "NUL" in body["detail"]


def test_lone_surrogate_is_refused(owner, project):
    raw = '{"messages": [{"role": "user", "content": "\\ud800 alone"}]}'
    body = _assert_error(_send(owner, "post", f"/api/projects/{project.pk}/prompts/", raw), 400, "invalid")
    assert "surrogate" in body["detail"]
    assert not Prompt.objects.filter(project=project).exclude(messages__0__content="Compute 12 + 30 - 5 + 8.").exists()


@pytest.mark.parametrize("query", ["search=a%00b", "category=%00"])
def test_nul_in_query_string_is_refused(owner, project, query):
    _assert_error(owner.get(f"/api/projects/{project.pk}/prompts/?{query}"), 400, "invalid")


def test_nul_in_trace_filter_is_refused(owner, project, trace):
    _assert_error(owner.get(f"/api/projects/{project.pk}/traces/?started_by=%00"), 400, "invalid")


# --- JSON shapes PostgreSQL or Python cannot take ----------------------------------------------------

def test_deeply_nested_json_is_refused(owner, project):
    raw = '{"name": "deep", "label_schema": ' + "[" * 10_000 + "]" * 10_000 + "}"
    body = _assert_error(_send(owner, "post", "/api/projects/", raw), 400, "bad_json")
    assert "nested" in body["detail"]
    assert not Project.objects.filter(name="deep").exists()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(owner, project, constant):
    raw = f'{{"name": "nan", "generation_defaults": {{"temperature": {constant}}}}}'
    _assert_error(_send(owner, "post", "/api/projects/", raw), 400, "bad_json")
    raw = '{"name": "inf", "generation_defaults": {"temperature": 1e999}}'  # parses as float('inf')
    _assert_error(_send(owner, "post", "/api/projects/", raw), 400, "invalid")


def test_huge_integers_are_refused(owner, project, trace):
    five_thousand_digits = "9" * 5000
    raw = f'{{"name": "big", "label_schema": {{"n": {five_thousand_digits}}}}}'
    _assert_error(_send(owner, "post", "/api/projects/", raw), 400, "bad_json")
    # 20 digits: Python takes it; PostgreSQL's bigint does not.
    raw = '{"prompt": 100000000000000000000}'
    _assert_error(_send(owner, "post", f"/api/projects/{project.pk}/traces/", raw), 400)
    raw = '{"name": "m", "base_model": "b", "parent": 100000000000000000000}'
    _assert_error(_send(owner, "post", f"/api/projects/{project.pk}/models/", raw), 400)


PAGINATED = ["projects/", "projects/{p}/prompts/", "projects/{p}/traces/", "projects/{p}/corrections/",
             "projects/{p}/audit/", "projects/{p}/datasets/", "projects/{p}/runs/"]


@pytest.mark.parametrize("path", PAGINATED)
def test_huge_limit_and_offset_on_every_paginated_list(owner, project, trace, path):
    url = "/api/" + path.format(p=project.pk)
    capped = owner.get(url + "?limit=100000000000000000000")
    assert capped.status_code == 200, capped.content[:300]
    assert "results" in capped.json()
    _assert_error(owner.get(url + "?offset=100000000000000000000"), 400, "invalid")


def test_http_trace_on_project_endpoints_is_method_not_allowed(owner, project, trace):
    for url in (f"/api/projects/{project.pk}/", f"/api/projects/{project.pk}/traces/{trace.pk}/"):
        response = owner.generic("TRACE", url)
        _assert_error(response, 405, "method_not_allowed")


# --- images and bodies ------------------------------------------------------------------------------

def _png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims width x height (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_png_is_refused(owner, project, prompt):
    upload = SimpleUploadedFile("bomb.png", _png_claiming(20000, 20000))
    response = owner.post(f"/api/projects/{project.pk}/prompts/{prompt.pk}/images/", {"file": upload})
    body = _assert_error(response, 400, "bad_image")
    assert "400000000 pixels" in body["detail"]
    assert not PromptImage.objects.exists()


@pytest.mark.parametrize("debug", [True, False])
def test_oversize_json_body_answers_json_in_development_too(users, project, settings, debug):
    settings.DEBUG = debug
    client = Client()
    client.login(username="owner", password=PASSWORD)
    raw = json.dumps({"name": "big", "guidelines": "x" * (20 * 1024 * 1024)})
    body = _assert_error(client.post("/api/projects/", raw, content_type="application/json"), 413, "too_large")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in body["detail"]


def test_unknown_api_path_answers_json(owner):
    _assert_error(owner.get("/api/no-such-thing/"), 404, "not_found")


def test_size_and_range_caps(owner, project, prompt):
    url = f"/api/projects/{project.pk}/"
    nine_mb = json.dumps({"guidelines": "g" * 9_000_000})
    _assert_error(_send(owner, "patch", url, nine_mb), 413, "too_large")
    within_body_limit = json.dumps({"guidelines": "g" * 200_000})
    body = _assert_error(_send(owner, "patch", url, within_body_limit), 400, "invalid")
    assert "guidelines" in body["errors"] and body["detail"].startswith("guidelines:")
    big_schema = json.dumps({"label_schema": {"tags": ["t" * 1000] * 100}})
    assert "label_schema" in _assert_error(_send(owner, "patch", url, big_schema), 400)["errors"]
    project.serving_model = ModelVersion.objects.create(project=project, name="m", base_model="m")
    project.save(update_fields=["serving_model"])
    for too_many in (10**30, 10**15):  # beyond bigint (refused as JSON), then within it (refused by the cap)
        raw = json.dumps({"prompt": prompt.pk, "sampling_params": {"max_new_tokens": too_many}})
        body = _assert_error(_send(owner, "post", f"/api/projects/{project.pk}/traces/", raw), 400)
    assert "max_new_tokens must be at most 32768" in body["detail"]
    raw = json.dumps({"generation_defaults": {"max_new_tokens": 10**9}})
    _assert_error(_send(owner, "patch", f"/api/projects/{project.pk}/", raw), 400)


def test_import_line_with_nul_is_a_line_error(owner, project):
    jsonl = b'{"prompt": "fine"}\n{"prompt": "bad \\u0000 here"}\n'
    response = owner.post(f"/api/projects/{project.pk}/prompts/import/",
                          {"file": SimpleUploadedFile("p.jsonl", jsonl)}, format="multipart")
    body = _assert_error(response, 400, "import_failed")
    assert body["errors"][0]["line"] == 2 and "NUL" in body["errors"][0]["error"]


def _image_files() -> set[Path]:
    root = Path(settings.MEDIA_ROOT)
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_import_that_fails_after_writing_an_image_leaves_no_file(project, users):
    """A database failure after the images were written (a real PostgreSQL trigger refuses the import's
    audit row, the last insert) rolls back the rows; the image files written must go too."""
    before = _image_files()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_import() RETURNS trigger AS $$ BEGIN "
            "IF NEW.action = 'prompt.imported' THEN RAISE EXCEPTION 'refused by test trigger'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute("CREATE TRIGGER refuse_import BEFORE INSERT ON annotator_auditevent "
                       "FOR EACH ROW EXECUTE FUNCTION refuse_import()")
    from annotator.services.prompts import image_check

    lines = b'{"prompt": "look", "images": ["a.png"]}\n{"prompt": "second", "images": ["a.png"]}\n'
    uploads = {"a.png": image_check(name="a.png", data=png_bytes())}
    with pytest.raises(Exception, match="refused by test trigger"):
        prompts_import_jsonl(project=project, actor=users["owner"], data=io.BytesIO(lines), uploads=uploads)
    assert not Prompt.objects.filter(messages__0__content="look").exists()
    assert _image_files() == before


def test_model_version_with_bigint_parent_and_unknown_backend(owner, project):
    raw = json.dumps({"name": "m", "base_model": "b", "backend": "\ud800"})
    _assert_error(_send(owner, "post", f"/api/projects/{project.pk}/models/", raw), 400)
    assert not ModelVersion.objects.filter(project=project).exists()
