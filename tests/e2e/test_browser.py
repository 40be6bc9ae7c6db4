"""End to end in a real headless Chromium (Debian's package, driven by Playwright) against the live
ASGI server with real Celery workers. Screenshots of each main page go to test-artifacts/screenshots/
(git-ignored) for review.

The model behind these pages is tests/support/fake_vllm.py, the vLLM wire-format stand-in (vLLM
cannot run here), paced so that the test can watch tokens arrive and stop mid-stream.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from annotator.models import ModelVersion, Trace
from tests.support.fake_vllm import FakeVLLM
from trainer_worker.vocabulary.format import render_completion

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a-real-password-for-e2e"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
STEPS = [f"{i}. {i * 3} + {i} = {i * 4}" for i in range(1, 40)]
STEPS[3] = "4. <script>window.__pwned = true</script> 12 + 4 = 16"  # model output must stay text


@pytest.fixture(scope="module")
def browser():
    if not (ROOT / "frontend" / "dist" / "index.html").exists():
        pytest.fail("frontend/dist is not built: run `make test` (it builds it) or `cd frontend && npm run build`")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an event loop running in this thread; the ORM calls that set up and
    # check data between browser steps are still plain synchronous calls, so Django may allow them.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live, settings):
    # Daphne checks passwords with the real hashers (the suite's fast MD5 is for this process only).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    for name in ("owner", "supervisor"):
        live.users[name].set_password(PASSWORD)
        live.users[name].save(update_fields=["password"])
    # bypass_csp: Playwright's own string predicates (wait_for_function) run through eval, which the
    # studio's CSP forbids. The UI itself is checked under the CSP, without bypass, in test_csp.py.
    context = browser.new_context(base_url=f"http://{live.addr}", accept_downloads=True, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def _login(page, username: str) -> None:
    page.goto("/accounts/login/?next=/app/")
    page.screenshot(path=str(SHOTS / "01-login.png"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/.*"))


def test_review_a_trace_in_the_browser(page, live, default_worker):
    with FakeVLLM(completion=render_completion(STEPS, "done"), chunk_size=3, delay_s=0.03) as fake:
        served = ModelVersion.objects.create(
            project=live.project,
            name="served",
            base_model="demo",
            backend="vllm",
            backend_options={"base_url": fake.base_url},
        )
        live.project.serving_model = served
        live.project.save(update_fields=["serving_model"])

        _login(page, "supervisor")
        page.get_by_test_id(f"project-{live.project.pk}").get_by_role("link").first.click()
        page.get_by_test_id(f"prompt-{live.prompt.pk}").wait_for()
        page.screenshot(path=str(SHOTS / "02-queue.png"))

        # Start a generation: the page opens the trace and tokens arrive live.
        page.get_by_test_id(f"generate-{live.prompt.pk}").click()
        page.wait_for_url(re.compile(r".*/traces/\d+/?$"))
        trace_id = int(re.search(r"/traces/(\d+)", page.url).group(1))
        page.get_by_test_id("step-partial").wait_for()
        page.get_by_test_id("step-4").wait_for()
        page.screenshot(path=str(SHOTS / "03-streaming.png"))

        # Esc stops the model.
        page.keyboard.press("Escape")
        page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('stopped')")
        saved = list(Trace.objects.get(pk=trace_id).steps.order_by("index").values_list("text", flat=True))
        assert 5 <= len(saved) < len(STEPS)

        # The step with a <script> tag is shown as text and never runs.
        assert "<script>" in page.get_by_test_id("step-3").inner_text()
        assert page.evaluate("window.__pwned === undefined")
        assert page.dialogs == []

        # Rate with the keyboard: j moves down, 1 rates +1, 3 rates -1.
        page.keyboard.press("j")
        page.keyboard.press("1")
        page.keyboard.press("j")
        page.keyboard.press("3")
        page.get_by_test_id("rate-1--1").and_(page.locator("[aria-pressed=true]")).wait_for()
        assert page.get_by_test_id("rate-0-+1").get_attribute("aria-pressed") == "true"

        # ? shows the help overlay, Esc closes it.
        page.keyboard.press("?")
        page.get_by_test_id("help-overlay").wait_for()
        assert "Ctrl+Enter" in page.get_by_test_id("help-overlay").inner_text()
        page.keyboard.press("Escape")
        page.get_by_test_id("help-overlay").wait_for(state="detached")

        # Edit step 2 in place (j to it, e, type, Ctrl+Enter): a branch opens and the model continues.
        page.keyboard.press("j")
        page.keyboard.press("e")
        page.get_by_test_id("edit-input").fill("3. 9 + 3 = 12 (checked)")
        page.get_by_test_id("edit-input").press("Control+Enter")
        page.wait_for_url(lambda url: f"/traces/{trace_id}/" not in url and "/traces/" in url)
        branch_id = int(re.search(r"/traces/(\d+)", page.url).group(1))
        page.get_by_test_id("step-2").wait_for()
        assert "9 + 3 = 12 (checked)" in page.get_by_test_id("step-2").inner_text()
        page.get_by_test_id("step-4").wait_for()  # the model wrote past the corrected step
        # The tree lists the original once its related traces have loaded (REST, after the snapshot).
        page.get_by_test_id("branches").get_by_role("link", name=f"#{trace_id}").wait_for()
        assert str(trace_id) in page.get_by_test_id("branches").inner_text()
        page.screenshot(path=str(SHOTS / "04-branch.png"))
        page.keyboard.press("Escape")
        page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('stopped')")

    branch = Trace.objects.get(pk=branch_id)
    assert (branch.parent_id, branch.branch_step_index) == (trace_id, 2)
    assert branch.steps.get(index=2).origin == "human"
    labels = {s.index: [lbl.rating for lbl in s.labels.all()] for s in Trace.objects.get(pk=trace_id).steps.all()}
    assert labels[0] == [1] and labels[1] == [-1]


def test_create_and_download_a_dataset(page, live, default_worker):
    _login(page, "owner")
    page.goto(f"/app/projects/{live.project.pk}/datasets/")
    page.get_by_test_id("dataset-create").wait_for()
    page.get_by_test_id("dataset-kind").select_option("rl_prompts")
    page.get_by_test_id("dataset-create").locator("button[type=submit]").click()
    link = page.get_by_test_id("download-jsonl")
    link.wait_for(timeout=60_000)  # built by the real `default` worker
    page.screenshot(path=str(SHOTS / "05-datasets.png"))
    with page.expect_download() as info:
        link.click()
    records = [json.loads(line) for line in Path(info.value.path()).read_text().splitlines()]
    assert [r["prompt"][0]["content"] for r in records] == ["Compute 12 + 30 - 5 + 8."]
    assert records[0]["reference"] == "45"


def test_model_output_is_never_html_anywhere_in_the_bundle():
    bundle = "".join(p.read_text() for p in (ROOT / "frontend" / "dist" / "assets").glob("*.js"))
    assert "dangerouslySetInnerHTML" not in "".join(p.read_text() for p in (ROOT / "frontend" / "src").rglob("*.tsx"))
    assert bundle  # the built app is there


def _generate_in_the_browser(page, live, mode: str = "") -> int:
    _login(page, "supervisor")
    page.get_by_test_id(f"project-{live.project.pk}").get_by_role("link").first.click()
    if mode:
        page.get_by_test_id("gen-mode").select_option(mode)
    page.get_by_test_id(f"generate-{live.prompt.pk}").click()
    page.wait_for_url(re.compile(r".*/traces/\d+/?$"))
    return int(re.search(r"/traces/(\d+)", page.url).group(1))


def test_a_paced_trace_is_stopped_with_esc_at_the_step_a_supervisor_reads(page, live, default_worker):
    # Issue 12: at full speed the scripted model's chain is over in ~100 ms; paced, a person can stop it.
    live.project.supervision = {"mode": "paced", "pace_tps": 6, "scorers": [], "pause_below": None}
    live.project.save(update_fields=["supervision"])
    trace_id = _generate_in_the_browser(page, live)
    assert "paced · 6 tok/s" in page.get_by_test_id("trace-mode").inner_text()
    page.get_by_test_id("step-0").wait_for(timeout=20_000)
    page.keyboard.press("Escape")
    page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('stopped')")
    trace = Trace.objects.get(pk=trace_id)
    assert trace.finish_reason == "cancelled" and 1 <= trace.steps.count() < 5


def test_a_wrong_step_pauses_the_trace_and_the_page_says_which_score_and_why(page, live, default_worker):
    # The scripted model's third step (37 + 8 = 44) is wrong; the demo task's rule checker says so.
    live.project.supervision = {"mode": "live", "scorers": ["rule:demo_task"], "pause_below": 0.5}
    live.project.save(update_fields=["supervision"])
    trace_id = _generate_in_the_browser(page, live)
    banner = page.get_by_test_id("pause-reason")
    banner.wait_for(timeout=30_000)
    assert "rule checker (rule-based) scored step 3 0.00" in banner.inner_text()
    low = page.get_by_test_id("step-2").get_by_text("rule 0.00")
    assert "low" in low.get_attribute("class")
    assert page.get_by_test_id("step-0").get_by_text("rule 1.00").is_visible()
    page.screenshot(path=str(SHOTS / "07-auto-pause.png"))
    # "Run to the end" lets the model finish without pausing again.
    page.get_by_test_id("run-to-end").click()
    page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('finished')")
    assert Trace.objects.get(pk=trace_id).steps.count() == 5


def test_a_step_mode_trace_is_accepted_step_by_step_with_enter(page, live, default_worker):
    # The project runs live; the supervisor chooses step mode for this one trace when starting it.
    trace_id = _generate_in_the_browser(page, live, mode="step")
    assert Trace.objects.get(pk=trace_id).mode == "step"
    banner = page.get_by_test_id("pause-reason")
    banner_says = "(document.querySelector('[data-testid=pause-reason]')?.textContent ?? '').includes('{}')"
    for n in (1, 2):
        page.wait_for_function(banner_says.format(f"step {n} is written"))
        assert page.get_by_test_id("accept-step").inner_text().startswith("Accept step")
        assert Trace.objects.get(pk=trace_id).steps.count() == n  # the model waits: nothing after step n
        page.keyboard.press("Enter")  # accept the step: the model writes the next one
    page.wait_for_function(banner_says.format("step 3 is written"))
    page.screenshot(path=str(SHOTS / "08-step-mode.png"))
    assert banner.is_visible()
    page.get_by_test_id("run-to-end").click()
    page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('finished')")
    assert Trace.objects.get(pk=trace_id).steps.count() == 5


def test_alternatives_are_picked_with_the_keyboard_and_the_branch_opens(page, live, default_worker):
    from tests.support.models import SCRIPT_STEPS

    samples = ["3. 37 + 8 = 45\n", "3. 37 + 8 = 44\n", "3. 37 + 9 = 46\n", "</think>\n44"]
    with FakeVLLM(completion=render_completion(SCRIPT_STEPS, "44"), samples=samples) as fake:
        served = ModelVersion.objects.create(project=live.project, name="served", base_model="demo", backend="vllm",
                                             backend_options={"base_url": fake.base_url})
        live.project.serving_model = served
        live.project.supervision = {"mode": "live", "scorers": ["rule:demo_task"], "pause_below": None}
        live.project.save(update_fields=["serving_model", "supervision"])
        crashes = []  # an uncaught error in the page (React unmounts the whole app on one)
        page.on("pageerror", lambda e: crashes.append(f"{e}\n{e.stack}"[:600]))
        trace_id = _generate_in_the_browser(page, live)
        page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('finished')")
        for _ in range(3):
            page.keyboard.press("j")  # select the third step, 37 + 8 = 44 (wrong)
        page.keyboard.press("a")
        cards = page.get_by_test_id("candidate")
        try:
            cards.nth(3).wait_for(timeout=20_000)
        finally:
            assert crashes == []
        assert cards.nth(0).get_by_text("rule 1.00").is_visible()
        assert "low" in cards.nth(1).get_by_text("rule 0.00").get_attribute("class")
        assert "ends the reasoning" in cards.nth(3).inner_text()
        page.screenshot(path=str(SHOTS / "09-alternatives.png"))
        page.keyboard.press("1")  # pick the first candidate: its branch opens and continues from it
        page.wait_for_url(re.compile(rf".*/traces/(?!{trace_id}/)\d+/?$"))
        branch_id = int(re.search(r"/traces/(\d+)", page.url).group(1))
        page.get_by_text(f"branch of #{trace_id}").wait_for()
        assert page.get_by_test_id("step-2").inner_text().count("3. 37 + 8 = 45") == 1
        page.wait_for_function("document.querySelector('[data-testid=trace-status]').textContent.includes('finished')")
    assert crashes == []
    branch = Trace.objects.get(pk=branch_id)
    assert branch.parent_id == trace_id and branch.steps.get(index=2).origin == "model"
