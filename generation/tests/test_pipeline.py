"""End to end over real HTTP: API → job → worker runner → router → provider → fake Google
upstream on 127.0.0.1 → stored images → usage ledger → the waiting request."""

import json
import time

import pytest
from django.test import Client
from PIL import Image as PILImage

from billing.models import UsageRecord
from generation.engine.catalog import catalog_invalidate
from generation.engine.dimensions import GEMINI_FLASH_DIMENSIONS, IMAGEN_DIMENSIONS
from generation.models import Job, ProviderAccount, Route, UpstreamModel
from generation.worker.runner import get_runner
from tenants.models import Organization, QuotaPeriod

pytestmark = pytest.mark.django_db(transaction=True)

FLASH = "gemini-3.1-flash-image"
IMAGEN_FAST = "imagen-4.0-fast-generate-001"
IMAGEN_STANDARD = "imagen-4.0-generate-001"


@pytest.fixture
def live(fake_upstream, monkeypatch, pro_plan, catalog_before_2026_10):
    """Point the seeded Google accounts at the fake and bring Imagen back (as before its shutdown)."""
    monkeypatch.setenv("IMAGEGATE_TEST_GEMINI_KEY", fake_upstream.api_key)
    monkeypatch.setenv("IMAGEGATE_TEST_VERTEX_SA", json.dumps(fake_upstream.service_account_info()))
    ProviderAccount.objects.filter(name="gemini-api").update(
        base_url=fake_upstream.url, credentials_ref="env:IMAGEGATE_TEST_GEMINI_KEY"
    )
    ProviderAccount.objects.filter(name="vertex-global").update(
        base_url=fake_upstream.url, credentials_ref="env:IMAGEGATE_TEST_VERTEX_SA", enabled=False
    )
    UpstreamModel.objects.filter(model_id__startswith="imagen-").update(
        lifecycle="active", shutdown_date=None
    )
    catalog_invalidate()
    get_runner().reset_health()
    yield fake_upstream
    catalog_invalidate()


def generate(persona, body, *, wait=30, live_key=True, idempotency_key=None):
    client = persona.client(persona.raw_live_key if live_key else persona.raw_key)
    headers = {"HTTP_IDEMPOTENCY_KEY": idempotency_key} if idempotency_key else {}
    return client.post(f"/v1/generations?wait={wait}", body, format="json", **headers)


def fetch_image(url: str) -> PILImage.Image:
    import io

    path = url.split("://", 1)[1].split("/", 1)[1]
    response = Client().get("/" + path)
    assert response.status_code == 200, response.content[:300]
    data = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return PILImage.open(io.BytesIO(data))


def calls(fake, model):
    return [r for r in fake.model_requests() if f"/{model}:" in r["path"]]


def test_generate_content_four_images_are_four_parallel_calls(alice, live):
    response = generate(alice, {"prompt": "a red fox", "count": 4, "tier": "fast"})
    assert response.status_code == 200, response.content
    job = response.json()
    assert job["status"] == "succeeded" and job["served_tier"] == "fast" and job["model"] == FLASH
    assert job["route"] == f"gemini-api/{FLASH}"
    assert len(job["images"]) == 4
    for image in job["images"]:
        assert (image["width"], image["height"], image["mime_type"]) == (1024, 1024, "image/png")
        assert fetch_image(image["url"]).size == (1024, 1024)
    sent = calls(live, FLASH)
    assert len(sent) == 4
    assert sent[0]["body"]["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "MINIMAL"
    assert job["usage"] == {"images": 4, "amount": "0.3600", "currency": "usd"}
    assert UsageRecord.objects.filter(job_public_id=job["id"]).count() == 4
    assert sum(r.upstream_cost for r in UsageRecord.objects.all()) > 0


def test_predict_four_images_in_one_call(alice, live):
    response = generate(
        alice, {"prompt": "a lighthouse", "count": 4, "model": IMAGEN_FAST, "aspect_ratio": "16:9"}
    )
    assert response.status_code == 200, response.content
    job = response.json()
    assert job["status"] == "succeeded" and job["model"] == IMAGEN_FAST
    sent = calls(live, IMAGEN_FAST)
    assert len(sent) == 1
    assert sent[0]["body"]["parameters"]["sampleCount"] == 4
    assert sent[0]["body"]["parameters"]["includeRaiReason"] is True
    assert [(i["width"], i["height"]) for i in job["images"]] == [(1408, 768)] * 4


def test_every_aspect_ratio_has_the_right_dimensions(alice, live):
    for ratio, (width, height) in GEMINI_FLASH_DIMENSIONS["1K"].items():
        job = generate(alice, {"prompt": f"ratio {ratio}", "aspect_ratio": ratio}).json()
        assert job["status"] == "succeeded", job
        assert (job["images"][0]["width"], job["images"][0]["height"]) == (width, height), ratio
    for ratio, (width, height) in IMAGEN_DIMENSIONS["1K"].items():
        job = generate(
            alice, {"prompt": f"imagen {ratio}", "aspect_ratio": ratio, "model": IMAGEN_FAST}
        ).json()
        assert (job["images"][0]["width"], job["images"][0]["height"]) == (width, height), ratio


def test_filtered_candidates_are_flagged_and_not_billed(alice, live):
    job = generate(alice, {"prompt": "[filter:1] a crowd", "count": 2}).json()
    assert job["status"] == "succeeded"
    filtered = [i for i in job["images"] if i["filtered"]]
    assert len(filtered) == 1 and filtered[0]["url"] is None and filtered[0]["filter_reason"]
    assert job["usage"]["images"] == 1
    assert UsageRecord.objects.filter(job_public_id=job["id"]).count() == 1
    assert QuotaPeriod.objects.get(organization=alice.organization).images_reserved == 1


def test_a_429_is_retried_then_succeeds(alice, live):
    live.script(FLASH, [{"status": 429, "retry_delay": "0.2s"}, {"status": 200}])
    job = generate(alice, {"prompt": "patience"}).json()
    assert job["status"] == "succeeded"
    assert len(calls(live, FLASH)) == 2
    stored = Job.objects.get(public_id=job["id"])
    assert [a["ok"] for a in stored.attempts_log] == [False, True]
    assert stored.attempts_log[0]["error"] == "upstream_rate_limited"


def test_route_failing_5xx_fails_over_to_the_next_route(alice, live):
    live.script(FLASH, [{"status": 503}] * 3)
    job = generate(alice, {"prompt": "failover"}).json()
    assert job["status"] == "succeeded", job
    assert job["route"] == f"gemini-api/{IMAGEN_FAST}" and job["served_tier"] == "fast"
    assert len(calls(live, FLASH)) == 3 and len(calls(live, IMAGEN_FAST)) == 1
    assert job["fallback_reason"] is None


@pytest.fixture
def fast_down(live):
    """Standard served by Imagen only (so scripts can fail every fast route and not standard)."""
    Route.objects.filter(tier="standard", model__model_id=FLASH).update(enabled=False)
    catalog_invalidate()
    live.script(FLASH, [{"status": 503}] * 20)
    live.script(IMAGEN_FAST, [{"status": 500}] * 20)
    return live


def test_all_fast_routes_down_is_served_by_standard_under_allow(alice, fast_down):
    response = generate(alice, {"prompt": "fallback please", "fallback": "allow"})
    job = response.json()
    assert response.status_code == 200 and job["status"] == "succeeded", job
    assert job["tier"] == "fast" and job["served_tier"] == "standard"
    assert job["model"] == IMAGEN_STANDARD
    assert job["fallback_reason"] == "fast tier unavailable"
    assert job["usage"]["amount"] == "0.0900"  # billed at the requested (fast) price
    record = UsageRecord.objects.get(job_public_id=job["id"])
    assert (record.requested_tier, record.served_tier, record.billed_tier) == ("fast", "standard", "fast")


def test_all_fast_routes_down_is_503_under_deny(alice, fast_down):
    response = generate(alice, {"prompt": "no fallback", "fallback": "deny"})
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["error"]["code"] == "upstream_unavailable"
    assert body["generation"]["status"] == "failed"
    assert not calls(fast_down, IMAGEN_STANDARD)
    assert not UsageRecord.objects.exists()
    assert QuotaPeriod.objects.get(organization=alice.organization).images_reserved == 0


def test_an_upstream_400_is_never_retried(alice, live):
    live.script(FLASH, [{"status": 400, "message": "Unsupported thing"}])
    response = generate(alice, {"prompt": "bad"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_rejected"
    assert len(calls(live, FLASH)) == 1 and not calls(live, IMAGEN_FAST)


def test_idempotent_retry_returns_the_same_job_and_bills_once(alice, live):
    first = generate(alice, {"prompt": "once", "count": 2}, idempotency_key="k-1").json()
    again = generate(alice, {"prompt": "once", "count": 2}, idempotency_key="k-1").json()
    assert again["id"] == first["id"] and again["status"] == "succeeded"
    assert UsageRecord.objects.count() == 2
    assert len(calls(live, FLASH)) == 2
    conflict = generate(alice, {"prompt": "twice", "count": 2}, idempotency_key="k-1")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"


def test_test_keys_always_use_the_sandbox(alice, live):
    job = generate(alice, {"prompt": "free", "count": 2}, live_key=False).json()
    assert job["status"] == "succeeded" and job["route"].startswith("sandbox/")
    assert job["usage"]["amount"] == "0.0000"
    assert not live.model_requests()
    assert fetch_image(job["images"][0]["url"]).size == (1024, 1024)


def test_vertex_route_with_a_service_account(alice, live):
    ProviderAccount.objects.filter(name="vertex-global").update(enabled=True)
    ProviderAccount.objects.filter(name="gemini-api").update(enabled=False)
    catalog_invalidate()
    job = generate(alice, {"prompt": "vertex", "tier": "ultra", "resolution": "2K"}).json()
    assert job["status"] == "succeeded", job
    assert job["route"] == "vertex-global/gemini-3-pro-image"
    assert (job["images"][0]["width"], job["images"][0]["height"]) == (2048, 2048)
    sent = calls(live, "gemini-3-pro-image")[0]
    assert "/projects/" in sent["path"] and "/locations/global/" in sent["path"]


def test_webp_is_transcoded_when_the_upstream_cannot_emit_it(alice, live):
    job = generate(alice, {"prompt": "modern", "output_format": "webp", "compression_quality": 70}).json()
    assert job["images"][0]["mime_type"] == "image/webp"
    assert job["images"][0]["url"].split("?")[0].endswith(".webp")
    assert fetch_image(job["images"][0]["url"]).format == "WEBP"


def test_image_urls_are_signed(alice, live):
    job = generate(alice, {"prompt": "signed"}, live_key=False).json()
    url = job["images"][0]["url"]
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    client = Client()
    assert client.get(path.split("?")[0]).status_code == 403
    assert client.get(path.replace("signature=", "signature=0")).status_code == 403
    assert client.get(path).status_code == 200


def test_cancel_a_running_job_bills_nothing(alice, live):
    live.configure(latency_ms=1500)
    created = generate(alice, {"prompt": "slow", "count": 2}, wait=0.5).json()
    assert created["status"] in ("queued", "running")
    canceled = alice.client().post(f"/v1/generations/{created['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    final = alice.client().get(f"/v1/generations/{created['id']}?wait=5").json()
    # Wait for what is observable, not for a while: the worker aborts the upstream call, then gives
    # the concurrency slot and the quota reservation back.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        Organization.objects.get(pk=alice.organization.pk).jobs_in_flight
        or QuotaPeriod.objects.get(organization=alice.organization).images_reserved
    ):
        time.sleep(0.05)
    assert live.model_requests(), "the upstream call was made before the cancel"
    assert Organization.objects.get(pk=alice.organization.pk).jobs_in_flight == 0
    assert Job.objects.get(public_id=created["id"]).status == "canceled"
    assert final["images"] == []
    assert not UsageRecord.objects.exists()
    assert QuotaPeriod.objects.get(organization=alice.organization).images_reserved == 0
