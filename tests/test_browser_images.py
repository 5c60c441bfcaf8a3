"""Images in the browser: upload an image in the playground, generate an edit, see the input and
the output side by side, then the thumbnail on the jobs list and the gallery (Playwright +
Debian's Chromium, as tests/test_browser.py)."""

from __future__ import annotations

import re

import pytest

from generation.models import Job
from generation.tests.images_fixtures import image_bytes
from tests.test_browser import _new_page, browser, fast_sandbox, screenshots_on_failure  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _loaded(page, selector: str) -> None:
    page.locator(selector).first.wait_for(state="visible")
    page.wait_for_function(
        f"() => [...document.querySelectorAll({selector!r})]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )


def test_playground_edit_shows_input_and_output_then_thumbnails(
    browser,  # noqa: F811
    live_server,
    screenshots_on_failure,  # noqa: F811
    alice,
    settings,
    tmp_path,
):
    base = live_server.url
    settings.PUBLIC_BASE_URL = base
    photo = tmp_path / "product.png"
    photo.write_bytes(image_bytes(320, 240, (200, 30, 30)))

    page = _new_page(browser, screenshots_on_failure)
    page.goto(f"{base}/playground/")
    page.wait_for_url(re.compile(r".*/login/"))
    page.get_by_label("Username or e-mail").fill("alice@example.com")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/playground/")

    page.get_by_label("Prompt").fill("the same product on a beach")
    page.locator("#playground-images-input").set_input_files(str(photo))
    _loaded(page, "#playground-input-previews img")  # the chosen image is previewed at once
    page.get_by_role("button", name="Generate").click()
    _loaded(page, "#playground-images img")
    _loaded(page, "#playground-inputs img")
    inputs, outputs = page.locator("#playground-inputs img"), page.locator("#playground-images img")
    assert inputs.count() == 1 and outputs.count() == 1
    left, right = inputs.first.bounding_box(), outputs.first.bounding_box()
    assert left["x"] + left["width"] <= right["x"]  # side by side at desktop width
    assert page.url == f"{base}/playground/"
    job = Job.objects.get()
    assert job.status == "succeeded" and len(job.params["images"]) == 1

    page.goto(f"{base}/jobs/")
    _loaded(page, "table.jobs img.thumb")
    assert "edit" in page.locator("table.jobs").inner_text()
    page.goto(f"{base}/jobs/{job.public_id}/")
    _loaded(page, "#job-inputs img")
    _loaded(page, "#job-outputs img")
    page.goto(f"{base}/gallery/")
    _loaded(page, "#gallery img")

    phone = _new_page(browser, screenshots_on_failure, width=375, height=812)
    phone.context.add_cookies(page.context.cookies())
    for path in ["/gallery/", "/playground/", f"/jobs/{job.public_id}/", "/jobs/"]:
        assert phone.goto(f"{base}{path}").status == 200
        overflow = phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls horizontally by {overflow}px at 375px"
