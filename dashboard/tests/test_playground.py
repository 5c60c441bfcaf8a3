"""The playground submits through job_submit with the chosen key: same limits, quota and billing."""

import time

import pytest
from django.urls import reverse

from generation.engine.catalog import catalog_invalidate
from generation.models import Job, ProviderAccount
from tenants.models import QuotaPeriod
from tenants.services import api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture(autouse=True)
def fast_sandbox(pro_plan):
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
    catalog_invalidate()


def _form(key, **overrides):
    return {
        "api_key": key.public_id,
        "prompt": "a lighthouse at dusk",
        "tier": "fast",
        "aspect_ratio": "16:9",
        "count": 2,
        "resolution": "1K",
        **overrides,
    }


def _wait_finished(client, url: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_generates_with_the_chosen_test_key_and_reports_progress(web, bob, alice):
    # bob is a member: the playground is his to use, with a key of his organization.
    client = web(bob)
    response = client.post(reverse("dashboard:playground"), _form(alice.key), **FETCH)
    assert response.status_code == 202, response.content
    body = response.json()
    job = Job.objects.get(public_id=body["id"])
    assert job.organization == alice.organization and job.api_key == alice.key and not job.livemode
    assert job.metadata == {"source": "playground"}
    document = _wait_finished(client, body["status_url"])
    assert document["status"] == "succeeded"
    assert len(document["images"]) == 2 and all(image["url"] for image in document["images"])
    assert document["served_tier"] == "fast" and document["model"]
    assert document["latency_ms"] is not None
    image = client.get(document["images"][0]["url"])
    assert image.status_code == 200 and image["Content-Type"].startswith("image/")
    # The job is the API's job too.
    assert alice.client().get(f"/v1/generations/{job.public_id}").json()["status"] == "succeeded"


def test_live_key_reserves_the_monthly_quota_like_the_api(web, alice):
    response = web(alice).post(reverse("dashboard:playground"), _form(alice.live_key, count=3), **FETCH)
    assert response.status_code == 202
    assert QuotaPeriod.objects.get(organization=alice.organization).images_reserved == 3


def test_quota_exhausted_is_refused_before_anything_is_queued(web, alice):
    alice.organization.monthly_images_override = 1
    alice.organization.save()
    response = web(alice).post(reverse("dashboard:playground"), _form(alice.live_key, count=2), **FETCH)
    assert response.status_code == 400
    assert "quota" in str(response.json()["errors"]).lower()
    assert not Job.objects.exists()


def test_revoked_key_and_other_organizations_key_are_refused(web, alice, charlie):
    client = web(alice)
    response = client.post(reverse("dashboard:playground"), _form(charlie.key), **FETCH)
    assert response.status_code == 400  # not one of the choices: another tenant's key is unknown here
    api_key_revoke(api_key=alice.key)
    response = client.post(reverse("dashboard:playground"), _form(alice.key), **FETCH)
    assert response.status_code == 400
    assert not Job.objects.exists()


def test_read_only_keys_are_not_offered(web, bob):
    page = web(bob).get(reverse("dashboard:playground")).content.decode()
    assert bob.key.public_id not in page


def test_invalid_input_is_a_400_naming_the_field(web, alice):
    response = web(alice).post(
        reverse("dashboard:playground"), _form(alice.key, prompt="  ", count=9), **FETCH
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"prompt", "count"}
    assert not Job.objects.exists()


def test_without_javascript_the_form_redirects_to_the_job(web, alice):
    response = web(alice).post(reverse("dashboard:playground"), _form(alice.key, count=1))
    assert response.status_code == 302
    assert response["Location"].startswith("/jobs/gen_")
