"""OpenAI-compatible `POST /v1/images/generations`: parameter mapping, every error path in OpenAI's
shape and status, retry headers, tenancy, billing. Plain APIClient; the SDK itself is driven in
test_compat_sdks.py."""

import base64
import gzip
import io
import json

import pytest
from django.test import Client
from PIL import Image as PILImage

from billing.models import UsageRecord
from generation.models import Job, Route

URL = "/v1/images/generations"


def post(persona, body, *, live=True, raw_key=None):
    client = persona.client(raw_key or (persona.raw_live_key if live and persona.raw_live_key else None))
    return client.post(URL, body, format="json")


def assert_openai_error(response, status, code, param=None, *, retry=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    if param is not None:
        assert error["param"] == param
    assert response.get("x-should-retry") == retry
    return error


def decode(item) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"])))


# --- Contract: validation and errors (the db fixture never commits, so nothing runs) ----------------
@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "x", "n": 5}, "n"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "size": "1000x1000"}, "size"),
        ({"prompt": "x", "size": "1024X1024"}, "size"),
        ({"prompt": "x", "quality": "ultra-hd"}, "quality"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
        ({"prompt": "x", "output_compression": 50}, "output_compression"),  # png has no compression
        ({"prompt": "x", "output_format": "jpeg", "output_compression": 101}, "output_compression"),
        ({"prompt": "x", "background": "transparent"}, "background"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "style": "vivid"}, "style"),
        ({"prompt": ""}, "prompt"),
        ({"n": 1}, "prompt"),
    ],
)
def test_bad_input_is_400_in_openai_shape_and_creates_nothing(alice, body, param):
    error = assert_openai_error(post(alice, body), 400, "invalid_request", param)
    assert error["type"] == "invalid_request_error"
    assert Job.objects.count() == 0


def test_malformed_json_is_400(alice):
    response = alice.client(alice.raw_live_key).post(URL, "{not json", content_type="application/json")
    assert_openai_error(response, 400, "invalid_request")


def test_unknown_and_retired_models_are_404_model_not_found(alice):
    error = assert_openai_error(
        post(alice, {"prompt": "x", "model": "imagen-9"}), 404, "model_not_found", "model"
    )
    assert "Unknown model" in error["message"]
    retired = post(alice, {"prompt": "x", "model": "imagen-4.0-fast-generate-001"})
    assert_openai_error(retired, 404, "model_not_found", "model")
    assert Job.objects.count() == 0


def test_no_key_and_wrong_key_are_401(anon, alice):
    assert_openai_error(anon.post(URL, {"prompt": "x"}, format="json"), 401, "invalid_api_key")
    error = assert_openai_error(
        post(alice, {"prompt": "x"}, raw_key="ig_test_" + "x" * 40), 401, "invalid_api_key"
    )
    assert error["type"] == "authentication_error"


def test_revoked_key_is_401(alice):
    from tenants.services import api_key_revoke

    api_key_revoke(api_key=alice.live_key)
    assert_openai_error(post(alice, {"prompt": "x"}), 401, "invalid_api_key")


def test_read_only_key_is_403(bob):
    assert_openai_error(post(bob, {"prompt": "x"}, live=False), 403, "permission_denied")


def test_suspended_tenant_is_403_and_not_retried(alice):
    from tenants.services import organization_suspend

    organization_suspend(organization=alice.organization)
    assert_openai_error(post(alice, {"prompt": "x"}), 403, "tenant_suspended", retry="false")


def test_tier_outside_the_plan_is_403(alice):
    alice.organization.allowed_tiers_override = ["fast", "standard"]
    alice.organization.save()
    assert_openai_error(post(alice, {"prompt": "x", "model": "ultra"}), 403, "permission_denied", "model")


def test_monthly_quota_exhausted_is_429_that_must_not_be_retried(alice):
    alice.organization.monthly_images_override = 1
    alice.organization.save()
    response = post(alice, {"prompt": "x", "n": 2})
    error = assert_openai_error(response, 429, "quota_exceeded", retry="false")
    assert error["type"] == "rate_limit_error"
    assert "retry-after" not in response
    assert Job.objects.count() == 0


def test_rate_limit_is_429_with_retry_after(alice, use_database_limits):
    alice.organization.requests_per_minute_override = 1
    alice.organization.monthly_images_override = 0  # the first request is counted, then refused
    alice.organization.save()
    post(alice, {"prompt": "x"})
    response = post(alice, {"prompt": "x"})
    assert_openai_error(response, 429, "rate_limited")
    assert int(response["retry-after"]) >= 1


def test_concurrency_limit_is_retryable_429(alice):
    alice.organization.max_concurrent_jobs_override = 0
    alice.organization.save()
    response = post(alice, {"prompt": "x"})
    assert_openai_error(response, 429, "rate_limited")
    assert response["retry-after"] == "1"


def test_blocked_payment_is_403_that_must_not_be_retried(alice):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import BillingAccount
    from billing.services import billing_account_payment_failed_set

    account = BillingAccount.objects.create(organization=alice.organization)
    billing_account_payment_failed_set(account=account, failed_at=timezone.now() - timedelta(days=30))
    account.save()
    assert_openai_error(post(alice, {"prompt": "x"}), 403, "payment_required", retry="false")
    assert post(alice, {"prompt": "x"}, live=False).status_code != 403  # test keys keep working


def test_get_is_404_in_openai_shape(alice):
    response = alice.client(alice.raw_live_key).get(URL)
    assert_openai_error(response, 404, "method_not_allowed")


# --- End to end: the job runs in this process (transactional tests ring the doorbell) ----------
@pytest.mark.django_db(transaction=True)
def test_b64_json_images_of_the_mapped_aspect_ratio_are_billed_once(alice):
    response = post(alice, {"model": "fast", "prompt": "a red fox", "n": 2, "size": "1792x1024"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"created", "data", "output_format", "size"}
    assert len(body["data"]) == 2 and body["output_format"] == "png" and body["size"] == "1376x768"
    for item in body["data"]:
        image = decode(item)
        assert image.format == "PNG" and image.size == (1376, 768)
    assert response["Cache-Control"] == "no-store, no-transform"
    job = Job.objects.get(public_id=response["x-imagegate-generation-id"])
    assert job.status == Job.Status.SUCCEEDED and job.params["aspect_ratio"] == "16:9" and job.livemode
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "size, ratio, pixels",
    [
        ("1024x1024", "1:1", (1024, 1024)),
        ("1536x1024", "4:3", (1200, 896)),
        ("1024x1536", "3:4", (896, 1200)),
    ],
)
def test_size_table(alice, size, ratio, pixels):
    response = post(alice, {"prompt": "x", "size": size}, live=False)
    assert response.status_code == 200, response.content
    assert decode(response.json()["data"][0]).size == pixels
    assert Job.objects.get().params["aspect_ratio"] == ratio


@pytest.mark.django_db(transaction=True)
def test_openai_model_names_pick_the_tier_from_quality(alice):
    response = post(alice, {"prompt": "x", "model": "gpt-image-1", "quality": "high"}, live=False)
    assert response.status_code == 200, response.content
    assert Job.objects.get().tier == "standard"
    response = post(alice, {"prompt": "y", "model": "dall-e-3"}, live=False)
    assert Job.objects.get(public_id=response["x-imagegate-generation-id"]).tier == "fast"


@pytest.mark.django_db(transaction=True)
def test_url_response_format_and_jpeg(alice):
    body = {"prompt": "x", "response_format": "url", "output_format": "jpeg", "output_compression": 70}
    response = post(alice, body, live=False)
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["output_format"] == "jpeg" and list(data["data"][0]) == ["url"]
    path = data["data"][0]["url"].split("://", 1)[1].split("/", 1)[1]
    served = Client().get("/" + path)
    assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
    data = b"".join(served.streaming_content)  # type: ignore[attr-defined]
    assert PILImage.open(io.BytesIO(data)).format == "JPEG"


@pytest.mark.django_db(transaction=True)
def test_filtered_images_are_left_out_and_all_filtered_is_400(alice):
    response = post(alice, {"prompt": "x [filtered]", "n": 2}, live=True)
    assert response.status_code == 200, response.content
    assert len(response.json()["data"]) == 1
    job = Job.objects.get(public_id=response["x-imagegate-generation-id"])
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 1
    response = post(alice, {"prompt": "y [filtered]", "n": 1})
    assert_openai_error(response, 400, "content_filtered")


@pytest.mark.django_db(transaction=True)
def test_a_job_that_outlives_the_wait_is_504_and_still_delivers(alice, settings):
    settings.COMPAT_WAIT_SECONDS = 1
    Route.objects.filter(account__name="sandbox", tier="fast").update(options={"latency_ms": 2500})
    response = post(alice, {"prompt": "slow"}, live=True)
    assert_openai_error(response, 504, "generation_timeout", retry="false")  # a retry would bill again
    public_id = response["x-imagegate-generation-id"]
    view = alice.client().get(f"/v1/generations/{public_id}?wait=10")
    assert view.json()["status"] == "succeeded"
    assert UsageRecord.objects.filter(job_public_id=public_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_generations_are_tenant_scoped(alice, charlie):
    response = post(charlie, {"prompt": "contoso only"}, live=False)
    assert response.status_code == 200, response.content
    public_id = response["x-imagegate-generation-id"]
    assert Job.objects.get(public_id=public_id).organization == charlie.organization
    assert alice.client().get(f"/v1/generations/{public_id}").status_code == 404
    assert charlie.client().get(f"/v1/generations/{public_id}").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_image_payloads_are_never_gzipped_while_json_lists_are(alice):
    """The choice measured in tests/bench/compression.py: base64 images barely compress."""
    client = alice.client()
    response = client.post(URL, {"prompt": "x", "n": 2}, format="json", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert response.status_code == 200 and "Content-Encoding" not in response
    assert response.json()["data"][0]["b64_json"]
    listing = client.get("/v1/generations?limit=100", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert listing.status_code == 200 and listing["Content-Encoding"] == "gzip"
    assert (
        json.loads(gzip.decompress(listing.content))["data"][0]["id"] == response["x-imagegate-generation-id"]
    )


@pytest.mark.django_db(transaction=True)
def test_idempotency_key_answers_a_retry_from_the_same_job(alice):
    client = alice.client(alice.raw_live_key)
    first = client.post(URL, {"prompt": "x", "n": 2}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    again = client.post(URL, {"prompt": "x", "n": 2}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert first.status_code == again.status_code == 200, again.content
    assert first["x-imagegate-generation-id"] == again["x-imagegate-generation-id"]
    assert first.json()["data"] == again.json()["data"]
    assert Job.objects.count() == 1 and UsageRecord.objects.count() == 2
    other = client.post(URL, {"prompt": "y"}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert_openai_error(other, 409, "idempotency_conflict", "Idempotency-Key", retry="false")


@pytest.mark.django_db(transaction=True)
def test_a_failed_job_is_a_5xx_and_bills_nothing(alice):
    response = post(alice, {"prompt": "x [fail]", "n": 2})
    error = assert_openai_error(response, 503, "upstream_unavailable")
    assert error["type"] == "api_error"
    assert Job.objects.get().status == Job.Status.FAILED
    assert UsageRecord.objects.count() == 0
