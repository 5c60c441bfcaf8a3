"""Upstream truth over real HTTP, against the fake Google upstream on 127.0.0.1 with the seeded
2026-12 lineup: a model gone from models.list (catalog_sync) or answering 404 "model not found"
(live) moves its traffic to the next route with no client error; size rules per model; service
tiers (batch items on flex at half the cost, priority downgraded by the header costed as standard,
shed flex calls retried); discovery and metadata checks."""

import json
import time
from decimal import Decimal

import pytest
from django.core.management import call_command

from generation.engine.catalog import catalog_invalidate
from generation.engine.catalog_sync import catalog_sync
from generation.engine.credentials import account_credentials
from generation.engine.providers import google_http
from generation.models import CatalogAlert, Job, ProviderAccount, Route, UpstreamModel
from generation.worker.runner import get_runner

pytestmark = pytest.mark.django_db(transaction=True)

LITE = "gemini-3.1-flash-lite-image"
NB21 = "gemini-nano-banana-2.1"
PRO = "gemini-3-pro-image"


@pytest.fixture
def live(fake_upstream, monkeypatch, pro_plan):
    """The seeded Gemini API account pointed at the fake; Vertex off (it has its own tests)."""
    monkeypatch.setenv("IMAGEGATE_TEST_GEMINI_KEY", fake_upstream.api_key)
    ProviderAccount.objects.filter(name="gemini-api").update(
        base_url=fake_upstream.url, credentials_ref="env:IMAGEGATE_TEST_GEMINI_KEY"
    )
    ProviderAccount.objects.filter(name="vertex-global").update(enabled=False)
    catalog_invalidate()
    get_runner().reset_health()
    yield fake_upstream
    catalog_invalidate()


def generate(persona, body, *, wait=30):
    return persona.client(persona.raw_live_key).post(f"/v1/generations?wait={wait}", body, format="json")


def calls(fake, model):
    return [r for r in fake.model_requests() if f"/{model}:" in r["path"]]


def add_route(tier, model_id, position, **options):
    route = Route.objects.create(
        tier=tier,
        position=position,
        account=ProviderAccount.objects.get(name="gemini-api"),
        model=UpstreamModel.objects.get(model_id=model_id),
        options=options,
    )
    catalog_invalidate()
    return route


# --- retirement: models.list and live 404s --------------------------------------------------
def test_a_model_dropped_from_models_list_is_retired_by_catalog_sync_and_traffic_moves(alice, live):
    assert generate(alice, {"prompt": "before"}).json()["model"] == LITE
    live.configure(dropped_models=[LITE])

    report = catalog_sync()

    assert report.retired == [LITE] and report.routes_disabled == [f"gemini-api/{LITE}"]
    lite = UpstreamModel.objects.get(model_id=LITE)
    assert lite.lifecycle == "retired" and lite.shutdown_date is not None
    assert not Route.objects.filter(model=lite, enabled=True).exists()
    assert "models.list" in Route.objects.filter(model=lite).first().disabled_reason
    alert = CatalogAlert.objects.get(kind="model_gone", model_id=LITE)
    assert alert.account.name == "gemini-api" and alert.acknowledged_at is None

    before = len(calls(live, LITE))
    response = generate(alice, {"prompt": "after"})
    assert response.status_code == 200, response.content
    job = response.json()
    assert job["status"] == "succeeded" and job["model"] == NB21 and job["route"] == f"gemini-api/{NB21}"
    assert len(calls(live, LITE)) == before  # never called again
    assert catalog_sync().retired == []  # idempotent: no second retirement, no second alert
    assert CatalogAlert.objects.filter(kind="model_gone", model_id=LITE).count() == 1


def test_a_live_404_model_not_found_disables_the_route_and_fails_over_within_the_request(alice, live):
    live.configure(dropped_models=[LITE])  # still routed here: Google retired it without notice
    response = generate(alice, {"prompt": "a heron", "count": 2})
    assert response.status_code == 200, response.content
    job = response.json()
    assert job["status"] == "succeeded" and job["model"] == NB21 and len(job["images"]) == 2
    assert len(calls(live, LITE)) == 2  # one 404 per parallel call, then never again
    assert [r["status"] for r in calls(live, LITE)] == [404, 404]
    stored = Job.objects.get(public_id=job["id"])
    assert [a["error"] for a in stored.attempts_log if not a["ok"]] == ["upstream_model_not_found"]
    route = Route.objects.get(tier="fast", model__model_id=LITE, account__name="gemini-api")
    assert not route.enabled and "404" in route.disabled_reason
    assert CatalogAlert.objects.filter(kind="model_not_found", model_id=LITE).count() == 1

    again = generate(alice, {"prompt": "a second heron"}).json()
    assert again["status"] == "succeeded" and again["model"] == NB21
    assert len(calls(live, LITE)) == 2


def test_a_plain_404_is_not_taken_for_a_retired_model(alice, live):
    live.script(LITE, [{"status": 404, "message": "Requested entity was not found."}])
    job = generate(alice, {"prompt": "x"}).json()
    assert job["status"] == "succeeded" and job["model"] == NB21  # failed over all the same
    assert Route.objects.get(tier="fast", model__model_id=LITE, account__name="gemini-api").enabled
    assert not CatalogAlert.objects.exists()


# --- size rules per model -------------------------------------------------------------------
def test_a_lite_route_asked_for_2k_is_skipped_for_the_2_1_route(alice, live):
    job = generate(alice, {"prompt": "a harbour", "resolution": "2K", "aspect_ratio": "16:9"}).json()
    assert job["status"] == "succeeded" and job["model"] == NB21, job
    assert (job["images"][0]["width"], job["images"][0]["height"]) == (2752, 1536)
    assert calls(live, LITE) == []
    assert calls(live, NB21)[0]["body"]["generationConfig"]["imageConfig"]["imageSize"] == "2K"


def test_2_1_asked_for_512_is_a_400_naming_resolution(alice, live):
    response = generate(alice, {"prompt": "tiny", "model": NB21, "resolution": "512"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "resolution"
    assert Job.objects.count() == 0 and live.model_requests() == []


def test_the_fake_rejects_what_google_rejects(live):
    import httpx

    headers = {"x-goog-api-key": live.api_key}

    def post(model, size):
        body = {
            "contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"imageSize": size}},
        }
        url = f"{live.url}/v1beta/models/{model}:generateContent"
        return httpx.post(url, json=body, headers=headers, timeout=60)

    for model, size in ((LITE, "2K"), (LITE, "4K"), (NB21, "512")):
        response = post(model, size)
        assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert post(NB21, "2K").json()["usageMetadata"]["candidatesTokenCount"] == 1680


# --- service tiers ----------------------------------------------------------------------------
def _wait_batch(client, batch_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/batches/{batch_id}").json()
        if body["status"] in ("completed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"batch not finished: {body}")


def test_batch_items_go_to_the_flex_route_and_cost_half(alice, live):
    add_route("standard", NB21, 30, thinking_level="HIGH", service_tier="flex")
    interactive = generate(alice, {"prompt": "a lighthouse", "tier": "standard"}).json()
    assert interactive["status"] == "succeeded"
    standard_job = Job.objects.get(public_id=interactive["id"])
    assert standard_job.service_tier == "standard" and standard_job.upstream_cost > 0
    assert "service_tier" not in calls(live, NB21)[0]["body"]  # interactive requests never use flex

    client = alice.client(alice.raw_live_key)
    requests = [
        {"custom_id": f"i{i}", "body": {"prompt": "a lighthouse", "tier": "standard"}} for i in range(3)
    ]
    batch = client.post("/v1/batches", {"requests": requests}, format="json").json()
    assert _wait_batch(client, batch["id"])["status"] == "completed"

    items = list(Job.objects.filter(batch__public_id=batch["id"]))
    assert len(items) == 3
    for item in items:
        assert item.status == "succeeded" and item.service_tier == "flex"
        assert item.upstream_cost * 2 == standard_job.upstream_cost
        assert item.amount == standard_job.amount  # the customer's price does not change
    flex_calls = [r for r in calls(live, NB21) if r["body"].get("service_tier") == "flex"]
    assert len(flex_calls) == 3


def test_a_shed_flex_call_is_retried_then_served_at_standard(alice, live):
    add_route("standard", NB21, 30, thinking_level="HIGH", service_tier="flex")
    live.configure(shed_flex=True)
    client = alice.client(alice.raw_live_key)
    batch = client.post(
        "/v1/batches",
        {"requests": [{"custom_id": "a", "body": {"prompt": "x", "tier": "standard"}}]},
        format="json",
    ).json()
    assert _wait_batch(client, batch["id"])["status"] == "completed"
    item = Job.objects.get(batch__public_id=batch["id"])
    assert item.status == "succeeded" and item.service_tier == "standard"
    shed = [a for a in item.attempts_log if not a["ok"]]
    assert [a["error"] for a in shed] == ["upstream_server_error"] * 3  # retried like any 503
    assert [r["status"] for r in calls(live, NB21)] == [503, 503, 503, 200]


def test_priority_downgraded_by_the_header_is_recorded_and_costed_as_standard(alice, live):
    plain = Job.objects.get(public_id=generate(alice, {"prompt": "same", "tier": "standard"}).json()["id"])
    add_route("standard", NB21, 5, thinking_level="HIGH", service_tier="priority", priority_multiplier="1.8")
    get_runner().reset_health()

    served = Job.objects.get(public_id=generate(alice, {"prompt": "same", "tier": "standard"}).json()["id"])
    assert served.service_tier == "priority"
    assert abs(served.upstream_cost - plain.upstream_cost * Decimal("1.8")) <= Decimal("0.000001")

    live.configure(priority_downgrade=True)
    downgraded = Job.objects.get(
        public_id=generate(alice, {"prompt": "same", "tier": "standard"}).json()["id"]
    )
    assert calls(live, NB21)[-1]["body"]["service_tier"] == "priority"
    assert downgraded.service_tier == "standard"
    assert downgraded.upstream_cost == plain.upstream_cost


def test_upstream_cost_comes_from_usage_metadata(alice, live):
    job = generate(alice, {"prompt": "p" * 40, "tier": "standard"}).json()
    stored = Job.objects.get(public_id=job["id"])
    body = calls(live, NB21)[0]
    assert body["status"] == 200
    # 2.1 at 1K: 1120 image tokens x $30/M + 10 prompt tokens x $0.5/M + 240 thinking (HIGH) x $3/M
    expected = (Decimal(1120 * 30) + Decimal("5") + Decimal(240 * 3)) / Decimal(1_000_000)
    assert stored.upstream_cost == expected.quantize(Decimal("0.000001"))


# --- catalog_sync: paging, discovery, verification --------------------------------------------
def test_models_list_is_read_page_by_page(live):
    import asyncio

    import httpx

    account = ProviderAccount.objects.get(name="gemini-api")
    from generation.engine.providers.base import Target

    target = Target(
        kind="gemini_api",
        protocol="models.list",
        base_url=live.url,
        model="",
        credentials=account_credentials(account),
    )

    async def run():
        async with httpx.AsyncClient() as client:
            return await google_http.list_models(client, target, page_size=3)

    models = asyncio.run(run())
    assert len({m["name"] for m in models}) == len(models) == 10
    pages = [r for r in live.requests() if r["path"] == "/v1beta/models"]
    assert len(pages) == 4 and pages[0]["headers"]["x-goog-api-key"].startswith("***")


def test_catalog_sync_discovers_image_models_and_flags_disagreements(live):
    UpstreamModel.objects.filter(model_id=PRO).update(protocol="predict")  # an operator's mistake
    report = catalog_sync()
    assert report.accounts == ["gemini-api"] and not report.failed
    assert report.discovered == []  # every image model the fake lists is known; text models ignored
    assert not UpstreamModel.objects.filter(model_id__in=["gemini-2.5-flash", "text-embedding-004"]).exists()
    assert PRO in report.mismatched
    assert "predict" in UpstreamModel.objects.get(model_id=PRO).metadata_mismatch
    # The [3P] shutdown of gemini-3.1-flash-image is checked against Google: it is still listed.
    flash = UpstreamModel.objects.get(model_id="gemini-3.1-flash-image")
    assert "still listed upstream" in flash.metadata_mismatch
    assert flash.upstream_metadata["gemini-api"]["displayName"] == "Nano Banana 2"

    UpstreamModel.objects.filter(model_id=LITE).delete()  # as if we had never heard of it
    report = catalog_sync()
    assert report.discovered == [LITE]
    lite = UpstreamModel.objects.get(model_id=LITE)
    assert lite.lifecycle == "discovered" and not lite.routes.exists()
    assert CatalogAlert.objects.filter(kind="model_discovered", model_id=LITE).count() == 1


def test_catalog_sync_command_and_a_failing_account(live, capsys, monkeypatch):
    call_command("catalog_sync")
    assert "listed 1 account(s), 0 failed" in capsys.readouterr().out
    monkeypatch.setenv("IMAGEGATE_TEST_GEMINI_KEY", "wrong-key")
    report = catalog_sync()
    assert "gemini-api" in report.failed and report.retired == []
    assert Route.objects.filter(model__model_id=LITE, enabled=True).exists()  # nothing changed
    assert CatalogAlert.objects.filter(kind="sync_failed").count() == 1


def test_catalog_sync_admin_action(live, admin_client):
    account = ProviderAccount.objects.get(name="gemini-api")
    live.configure(dropped_models=[PRO])
    response = admin_client.post(
        "/admin/generation/provideraccount/",
        {"action": "run_catalog_sync", "_selected_action": [account.pk]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and shown[0].startswith("catalog_sync: listed 1 account(s), 0 failed")
    assert UpstreamModel.objects.get(model_id=PRO).lifecycle == "retired"
    page = admin_client.get("/operator/").content.decode()
    assert PRO in page and "Model disappeared upstream" in page


def test_vertex_publisher_models_are_listed_with_a_service_account(live, monkeypatch):
    monkeypatch.setenv("IMAGEGATE_TEST_VERTEX_SA", json.dumps(live.service_account_info()))
    ProviderAccount.objects.filter(name="vertex-global").update(
        base_url=live.url, credentials_ref="env:IMAGEGATE_TEST_VERTEX_SA", enabled=True
    )
    monkeypatch.setenv("IMAGEGATE_TEST_GEMINI_KEY", "wrong-key")  # this account's listing fails
    live.configure(dropped_models=[NB21])
    report = catalog_sync()
    assert report.accounts == ["vertex-global"] and list(report.failed) == ["gemini-api"]
    assert report.routes_disabled == [f"vertex-global/{NB21}"]
    # Still routed on the Gemini API account, whose listing failed: not retired on Vertex's word.
    assert UpstreamModel.objects.get(model_id=NB21).lifecycle == "active"
    assert Route.objects.filter(model__model_id=NB21, account__name="gemini-api", enabled=True).exists()
    assert [r["path"] for r in live.requests() if "publishers" in r["path"]] == [
        "/v1beta1/publishers/google/models"
    ]
