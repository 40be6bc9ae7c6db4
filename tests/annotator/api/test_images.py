"""Image upload: type checked by content, size limited, served to members only."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotator.models import PromptImage
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


def _upload(client, project, prompt, name, data):
    return client.post(f"/api/projects/{project.pk}/prompts/{prompt.pk}/images/",
                       {"file": SimpleUploadedFile(name, data)}, format="multipart")


def test_upload_then_fetch(client_for, project, prompt):
    jpeg = png_bytes(size=(20, 10), fmt="JPEG")
    response = _upload(client_for("owner"), project, prompt, "photo.png", jpeg)  # the name lies; content wins
    assert response.status_code == 201
    body = response.json()
    assert (body["content_type"], body["width"], body["height"]) == ("image/jpeg", 20, 10)
    prompt.refresh_from_db()
    assert prompt.messages[0]["content"][0] == {"type": "image"}
    fetched = client_for("viewer").get(body["url"])
    assert fetched.status_code == 200 and fetched["Content-Type"] == "image/jpeg"
    assert b"".join(fetched.streaming_content) == jpeg


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("x.png", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "bad_image"),
        ("x.png", b"", "bad_image"),
        ("x.bmp", None, "bad_image_type"),
    ],
)
def test_refuses_non_images(client_for, project, prompt, name, data, code):
    if data is None:
        data = png_bytes(fmt="BMP")
    response = _upload(client_for("owner"), project, prompt, name, data)
    assert response.status_code == 400 and response.json()["code"] == code
    assert PromptImage.objects.count() == 0


def test_refuses_oversize(client_for, project, prompt, settings):
    settings.MAX_IMAGE_BYTES = 50
    response = _upload(client_for("owner"), project, prompt, "a.png", png_bytes(size=(64, 64)))
    assert response.status_code == 400 and response.json()["code"] == "too_large"
    assert PromptImage.objects.count() == 0
