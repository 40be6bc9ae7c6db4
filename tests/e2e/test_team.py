"""Two supervisors in two Chromium contexts review the same assigned items: the next-item flow,
the keyboard (the same rating again clears, Ctrl+Z undoes), the queue updating live, and the
agreement view showing both of them."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from annotator.models import Membership, Role, StepLabel, Trace, TraceReview
from annotator.services.assignments import assignments_distribute
from tests.e2e.test_browser import PASSWORD, SHOTS, browser  # noqa: F401 - the fixture
from tests.factories import make_prompt, make_trace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _context(browser, live, username: str):  # noqa: F811 - `browser` is the fixture's value
    context = browser.new_context(base_url=f"http://{live.addr}", bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto("/accounts/login/?next=/app/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/app/.*"))
    return context, page


def _pressed(page, testid: str) -> bool:
    return page.get_by_test_id(testid).get_attribute("aria-pressed") == "true"


def test_two_supervisors_review_the_same_items(browser, live, settings):  # noqa: F811
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    ann = get_user_model().objects.create_user(username="ann", password=PASSWORD)
    Membership.objects.create(project=live.project, user=ann, role=Role.SUPERVISOR)
    live.users["supervisor"].set_password(PASSWORD)
    live.users["supervisor"].save(update_fields=["password"])
    second = make_prompt(live.project, actor=live.users["owner"], text="Compute 7 + 8.", reference="15")
    first = make_trace(live.project, live.prompt, steps=["1. 12 + 30 = 42", "2. 42 - 5 = 37", "3. 37 + 8 = 44"],
                       answer="44")
    other = make_trace(live.project, second, steps=["1. 7 + 8 = 15"], answer="15")
    assignments_distribute(project=live.project, actor=live.users["owner"], annotators=["supervisor", "ann"],
                           overlap=2)

    ctx_a, a = _context(browser, live, "supervisor")
    ctx_b, b = _context(browser, live, "ann")
    try:
        # A opens their queue: two left; the queue of disagreements is empty and live.
        a.goto(f"/app/projects/{live.project.pk}/?view=disagreement")
        a.get_by_test_id("queue-live").and_(a.get_by_text("live")).wait_for()
        assert a.get_by_test_id("count-left").inner_text().startswith("2")
        a.get_by_text("No traces match.").wait_for()

        # B works through the next-item flow: `n` opens the first item.
        b.goto(f"/app/projects/{live.project.pk}/")
        b.get_by_test_id("count-left").wait_for()
        b.keyboard.press("n")
        b.wait_for_url(re.compile(rf".*/traces/{first.pk}/$"))
        b.get_by_test_id("step-2").wait_for()
        # Rate step 0 with the keyboard; the same rating again clears it; Ctrl+Z brings it back.
        b.keyboard.press("j")
        b.keyboard.press("3")
        b.get_by_test_id("rate-0--1").and_(b.locator("[aria-pressed=true]")).wait_for()
        b.keyboard.press("3")
        b.get_by_test_id("rate-0--1").and_(b.locator("[aria-pressed=false]")).wait_for()
        b.wait_for_function("!document.querySelector('[data-testid=undo]').disabled")
        b.keyboard.press("Control+z")
        b.get_by_test_id("rate-0--1").and_(b.locator("[aria-pressed=true]")).wait_for()
        # Verdict by keyboard (r), save (s): the next item opens.
        b.keyboard.press("r")
        b.get_by_test_id("review-verdict-reject").and_(b.locator("[aria-checked=true]")).wait_for()
        b.keyboard.press("s")
        b.wait_for_url(re.compile(rf".*/traces/{other.pk}/$"))
        b.screenshot(path=str(SHOTS / "08-team-next-item.png"))

        # B opens the queue of disagreements (empty so far) and keeps it open, live.
        b.goto(f"/app/projects/{live.project.pk}/?view=disagreement")
        b.get_by_test_id("queue-live").and_(b.get_by_text("live")).wait_for()
        assert b.get_by_test_id(f"trace-{first.pk}").count() == 0

        # A reviews the same item the other way, with the mouse: now they disagree.
        a.get_by_test_id("open-next").click()
        a.wait_for_url(re.compile(rf".*/traces/{first.pk}/$"))
        # As a person would, A waits for the page to be live (on a loaded machine the click came
        # before the trace and its socket were there, and the rating went nowhere).
        a.get_by_test_id("step-2").wait_for()
        a.get_by_test_id("conn-status").filter(has_text="live").wait_for()
        a.get_by_test_id("rate-0-+1").click()
        a.get_by_test_id("rate-0-+1").and_(a.locator("[aria-pressed=true]")).wait_for()
        a.get_by_test_id("review-verdict-accept").click()
        a.get_by_test_id("review-submit").click()
        a.wait_for_url(re.compile(rf".*/traces/{other.pk}/$"))

        # B's open queue of disagreements shows the item without a reload.
        b.get_by_test_id(f"trace-{first.pk}").wait_for()
        assert "disagreement" in b.get_by_test_id(f"verdict-{first.pk}").inner_text()

        # Both review the second item alike.
        for page, key in ((a, "y"), (b, "y")):  # y: the accept verdict (a asks for alternatives)
            page.goto(f"/app/projects/{live.project.pk}/traces/{other.pk}/")
            page.get_by_test_id("step-0").wait_for()
            page.keyboard.press(key)
            page.keyboard.press("s")
            page.get_by_test_id("notice").or_(page.get_by_test_id("queue-notice")).wait_for()
        b.get_by_text("Your queue is done").wait_for()

        # The agreement view shows both supervisors and their pair.
        a.goto(f"/app/projects/{live.project.pk}/team/")
        pair = a.get_by_test_id("pair-verdict-ann-supervisor")
        pair.wait_for()
        assert pair.locator("td").nth(1).inner_text() == "2"  # two items in common
        assert a.get_by_test_id("alpha-verdict").inner_text() != ""
        a.get_by_test_id("annotator-ann").wait_for()
        a.get_by_test_id("annotator-supervisor").wait_for()
        assert a.get_by_test_id("annotator-ann").locator("td").nth(1).inner_text() == "2"
        a.screenshot(path=str(SHOTS / "09-agreement.png"))
    finally:
        ctx_a.close()
        ctx_b.close()

    reviews = dict(TraceReview.objects.filter(trace=first).values_list("annotator__username", "verdict"))
    assert reviews == {"ann": "reject", "supervisor": "accept"}
    assert Trace.objects.get(pk=first.pk).disputed is True
    ratings = dict(StepLabel.objects.filter(step__trace=first, step__index=0).values_list("annotator__username",
                                                                                          "rating"))
    assert ratings == {"ann": -1, "supervisor": 1}
    assert all(r.lead_time_s is not None and r.lead_time_s >= 0 for r in TraceReview.objects.all())
