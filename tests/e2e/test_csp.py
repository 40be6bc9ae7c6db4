"""The Content-Security-Policy holds in a real Chromium: the UI (login, projects, a trace streaming
live), the Django admin and Swagger UI load and work with no violation, and nothing is loaded from
another origin (Swagger UI comes from drf-spectacular-sidecar)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from annotator.models import ModelVersion
from tests.e2e.test_browser import PASSWORD, browser  # noqa: F401 - the fixture
from tests.support.fake_vllm import FakeVLLM
from trainer_worker.vocabulary.format import render_completion

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def csp_page(browser, live, settings):  # noqa: F811
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    owner = live.users["owner"]
    owner.set_password(PASSWORD)
    owner.is_staff = owner.is_superuser = True
    owner.save()
    context = browser.new_context(base_url=f"http://{live.addr}")  # no bypass_csp: the policy applies
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.violations, page.origins = [], set()
    page.on("console", lambda m: page.violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: page.violations.append(f"page error: {e}"))
    page.on("request", lambda r: page.origins.add(urlsplit(r.url).netloc) if r.url.startswith("http") else None)
    yield page
    context.close()


def test_ui_admin_and_api_docs_pass_the_csp(csp_page, live, default_worker):
    page = csp_page
    response = page.goto("/accounts/login/?next=/app/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    page.fill("#id_username", "owner")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/.*"))
    page.get_by_test_id(f"project-{live.project.pk}").wait_for()

    steps = [f"{i}. {i} + {i} = {2 * i}" for i in range(1, 12)]
    with FakeVLLM(completion=render_completion(steps, "done"), chunk_size=4, delay_s=0.02) as fake:
        served = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                             backend_options={"base_url": fake.base_url})
        live.project.serving_model = served
        live.project.save(update_fields=["serving_model"])
        page.get_by_test_id(f"project-{live.project.pk}").get_by_role("link").first.click()
        page.get_by_test_id(f"generate-{live.prompt.pk}").click()
        page.wait_for_url(re.compile(r".*/traces/\d+/?$"))
        page.get_by_test_id("step-10").wait_for()  # tokens streamed over the websocket under connect-src
        page.get_by_test_id("trace-status").filter(has_text="finished").wait_for()

    page.goto("/admin/")
    page.get_by_role("link", name="Projects").first.wait_for()
    page.goto(f"/admin/annotator/project/{live.project.pk}/change/")
    page.locator("input[name=name]").wait_for()

    page.goto("/api/docs/")
    page.locator(".opblock").first.wait_for()  # Swagger UI ran and rendered the operations

    assert page.violations == [], page.violations
    assert page.origins == {live.addr}, page.origins  # nothing from a CDN or any other origin
