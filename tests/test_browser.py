"""The dashboard in a real browser: Playwright drives Debian's Chromium (headless, no downloaded
browser) against pytest-django's live server, with the sandbox provider and the job runner in the
server's process. Skipped when Chromium is missing, unless REQUIRE_BROWSER=1 (CI), where that fails.
On failure, screenshots of every open page are written to var/screenshots/."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from django.core import mail

from generation.engine.catalog import catalog_invalidate
from generation.models import Job, ProviderAccount

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
PASSWORD = "a sturdy passphrase 42"
MAIN_PAGES = ["/", "/playground/", "/jobs/", "/usage/", "/keys/", "/members/", "/settings/", "/billing/"]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _chromium_or_skip() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        reason = f"playwright is not installed: {exc}"
    else:
        if os.access(CHROMIUM, os.X_OK):
            return
        reason = f"Chromium not found at {CHROMIUM}"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser(monkeypatch, settings):
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's ORM calls are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots_on_failure(request):
    """Collects pages; if the test failed, saves a full-page screenshot of each."""
    pages: list = []
    yield pages.append
    report = getattr(request.node, "rep_call", None)
    failed = report is None or report.failed
    if failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for index, page in enumerate(pages):
            if page.is_closed():
                continue
            name = re.sub(r"[^\w]+", "_", f"{request.node.name}_{index}_{page.url}")[:150]
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(autouse=True)
def fast_sandbox(pro_plan):
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 50, "failure_rate": 0})
    catalog_invalidate()


def _new_page(browser, track, *, width=1280, height=900):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    track(page)
    return page


def _sign_up(page, base: str) -> None:
    page.goto(f"{base}/signup/")
    page.get_by_label("Company or team name").fill("Initech")
    page.get_by_label("Username").fill("peter")
    page.get_by_label("Work e-mail").fill("peter@initech.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/keys/")


def test_sign_up_key_playground_chart_revoke(browser, live_server, screenshots_on_failure, settings):
    base = live_server.url
    settings.PUBLIC_BASE_URL = base  # signed image URLs point where customers reach us
    page = _new_page(browser, screenshots_on_failure)
    _sign_up(page, base)

    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    raw_key = page.locator("#new-key").inner_text().strip()
    assert raw_key.startswith("ig_test_")
    assert page.locator("#snippet-openai").inner_text().count(raw_key) == 1

    page.goto(f"{base}/playground/")
    page.get_by_label("Prompt").fill("two lighthouses at dusk")
    page.get_by_label("Count").fill("2")
    page.get_by_role("button", name="Generate").click()
    images = page.locator("#playground-images img")
    images.nth(1).wait_for(state="visible")
    assert images.count() == 2
    page.wait_for_function(
        "() => [...document.querySelectorAll('#playground-images img')]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    facts = page.locator("#playground-facts").inner_text()
    assert "Served tier" in facts and "fast" in facts and "ms" in facts
    assert page.url == f"{base}/playground/"  # no page reload
    job = Job.objects.get(batch__isnull=True)
    assert job.status == "succeeded" and job.images_delivered == 2

    page.goto(f"{base}/")
    page.wait_for_function("() => window.imagegateCharts && window.imagegateCharts['images-chart']")
    total = page.evaluate(
        "() => window.imagegateCharts['images-chart'].data.datasets"
        ".reduce((sum, d) => sum + d.data.reduce((a, b) => a + b, 0), 0)"
    )
    assert total == 2
    latency = page.evaluate("() => window.imagegateCharts['latency-chart'].data.datasets[0].data")
    assert any(value is not None for value in latency)
    assert page.locator("canvas#images-chart").bounding_box()["height"] > 100

    headers = {"Authorization": f"Bearer {raw_key}"}
    assert httpx.get(f"{base}/v1/organization", headers=headers).status_code == 200
    batch = httpx.post(
        f"{base}/v1/batches",
        headers=headers,
        json={"requests": [{"custom_id": f"b{i}", "body": {"prompt": f"boat {i}"}} for i in range(2)]},
    )
    assert batch.status_code == 201, batch.text
    batch_id = batch.json()["id"]
    page.goto(f"{base}/jobs/")
    assert batch_id in page.locator("#batches").inner_text()
    page.goto(f"{base}/keys/")
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(f"{base}/keys/")
    assert "revoked" in page.locator("#keys-table").inner_text()
    answer = httpx.get(f"{base}/v1/organization", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"

    # Every main page fits a 375 px wide phone without horizontal scrolling.
    phone = _new_page(browser, screenshots_on_failure, width=375, height=812)
    phone.context.add_cookies(page.context.cookies())
    for path in [*MAIN_PAGES, f"/jobs/{job.public_id}/", f"/batches/{batch_id}/"]:
        response = phone.goto(f"{base}{path}")
        assert response.status == 200, path
        overflow = phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls horizontally by {overflow}px at 375px"


def test_invited_member_logs_in_and_cannot_see_billing(browser, live_server, screenshots_on_failure):
    base = live_server.url
    owner = _new_page(browser, screenshots_on_failure)
    _sign_up(owner, base)
    owner.goto(f"{base}/members/")
    owner.get_by_label("Email").fill("milton@initech.example")
    owner.get_by_label("Role", exact=True).select_option("member")
    owner.get_by_role("button", name="Send invitation").click()
    owner.wait_for_url(f"{base}/members/")
    assert "milton@initech.example" in owner.content()

    deadline = time.monotonic() + 10
    while not mail.outbox and time.monotonic() < deadline:
        time.sleep(0.05)
    link = re.search(r"https?://\S+/invitations/\S+/", str(mail.outbox[-1].body)).group(0)
    path = "/" + link.split("/", 3)[3]

    member = _new_page(browser, screenshots_on_failure)
    member.goto(f"{base}{path}")
    member.get_by_label("Username").fill("milton")
    member.get_by_label("Password").fill(PASSWORD)
    member.get_by_role("button", name="Create account and join").click()
    member.wait_for_url(f"{base}/")
    member.get_by_role("button", name="Log out").click()
    member.wait_for_url(re.compile(r".*/login/"))

    member.goto(f"{base}/login/")
    member.get_by_label("Username or e-mail").fill("milton")
    member.get_by_label("Password").fill(PASSWORD)
    member.get_by_role("button", name="Log in").click()
    member.wait_for_url(f"{base}/")
    nav = member.get_by_role("navigation", name="Dashboard").inner_text()
    assert "Playground" in nav and "Billing" not in nav and "API keys" not in nav
    response = member.goto(f"{base}/billing/")
    assert response.status == 403
    assert "Not allowed" in member.locator("h1").inner_text()
    assert member.goto(f"{base}/playground/").status == 200

    # Keyboard: the skip link is the first tab stop and moves focus to the content.
    member.keyboard.press("Tab")
    assert member.evaluate("() => document.activeElement.textContent") == "Skip to content"


def test_job_page_shows_the_images_when_an_api_job_finishes(
    browser, live_server, screenshots_on_failure, alice, settings
):
    base = live_server.url
    settings.PUBLIC_BASE_URL = base
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 1500, "failure_rate": 0})
    catalog_invalidate()
    page = _new_page(browser, screenshots_on_failure)
    page.goto(f"{base}/jobs/")
    page.wait_for_url(re.compile(r".*/login/\?next=/jobs/"))
    page.get_by_label("Username or e-mail").fill("alice@example.com")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/jobs/")

    response = httpx.post(
        f"{base}/v1/generations",
        json={"prompt": "a slow harbour", "count": 1},
        headers={"Authorization": f"Bearer {alice.raw_key}"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    page.goto(f"{base}/jobs/{job_id}/")
    assert "Still" in page.locator("#job-live").inner_text()
    page.locator(".gallery img").first.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('.gallery img').naturalWidth > 0")
    assert "Succeeded" in page.locator(".status").first.inner_text()
