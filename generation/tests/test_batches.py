"""Batches: validation (all or nothing), a 200-item batch run by the real worker runner against the
sandbox, fairness against interactive traffic, quota exhaustion mid-batch, cancel, JSONL in and
out, the feeder's lease, tenant isolation on every endpoint."""

import json
import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from billing.models import UsageRecord
from generation.batches.services import batch_feed
from generation.engine.catalog import catalog_invalidate
from generation.models import Batch, Job, ProviderAccount, WebhookDelivery
from generation.tests.webhook_receiver import Receiver

URL = "/v1/batches"


def items(n, **body):
    return [{"custom_id": f"item-{i}", "body": {"prompt": f"a lighthouse no. {i}", **body}} for i in range(n)]


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def sandbox_latency(ms):
    ProviderAccount.objects.filter(kind="sandbox").update(options={"latency_ms": ms, "failure_rate": 0})
    catalog_invalidate()


def wait_batch(client, batch_id, timeout=90.0, on_poll=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{URL}/{batch_id}").json()
        if on_poll:
            on_poll(body)
        if body["status"] in ("completed", "canceled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"batch not finished: {body}")


# --- Validation: all or nothing ---------------------------------------------------------------
@pytest.mark.parametrize(
    "payload, param, words",
    [
        (
            {"requests": [*items(3), {"custom_id": "bad", "body": {"prompt": "x", "count": 9}}]},
            "requests[3].body.count",
            "line 4",
        ),
        (
            {"requests": [*items(2), {"custom_id": "m", "body": {"prompt": "x", "model": "dall-e-3"}}]},
            "requests[2].body.model",
            "'m'",
        ),
        (
            {"requests": [*items(2), {"custom_id": "u", "body": {"prompt": "x", "quality": "hd"}}]},
            "requests[2].body.quality",
            "line 3",
        ),
        (
            {"requests": [*items(2), {"custom_id": "item-0", "body": {"prompt": "x"}}]},
            "requests[2].custom_id",
            "duplicate",
        ),
        ({"requests": [{"body": {"prompt": "x"}}]}, "requests[0].custom_id", "custom_id"),
        (
            {"requests": [{"custom_id": "a" * 65, "body": {"prompt": "x"}}]},
            "requests[0].custom_id",
            "custom_id",
        ),
        ({"requests": [{"custom_id": "a", "body": {"prompt": "x"}, "extra": 1}]}, "requests[0]", "only"),
        ({"requests": []}, "requests", "non-empty"),
        ({"requests": "all of them"}, "requests", "non-empty"),
        ({"requests": items(1001)}, "requests", "at most 1000"),
        ({"requests": items(1), "colour": "red"}, "colour", "Unknown"),
        ({"requests": items(1), "webhook_url": "https://10.0.0.1/h"}, "webhook_url", "private"),
    ],
)
def test_an_invalid_item_refuses_the_whole_batch(alice, payload, param, words):
    error = assert_error(alice.client().post(URL, payload, format="json"), 400, "invalid_request", param)
    assert words in error["message"]
    assert not Batch.objects.exists() and not Job.objects.exists()


def test_a_full_batch_with_long_prompts_is_accepted(alice):
    """1,000 items of 3,000-character prompts: a 3 MB body, above Django's default form limit."""
    payload = {"requests": [{"custom_id": f"c{i}", "body": {"prompt": "x" * 3000}} for i in range(1000)]}
    response = alice.client().post(URL, payload, format="json")
    assert response.status_code == 201, response.content[:300]
    assert response.json()["counts"]["total"] == 1000


def test_malformed_jsonl_names_the_line(alice):
    body = json.dumps(items(1)[0]) + "\n{not json\n"
    response = alice.client().post(URL, body, content_type="application/jsonl")
    assert_error(response, 400, "invalid_request", "line 2")
    assert not Batch.objects.exists()


def test_auth_and_scopes(alice, bob, anon):
    assert anon.post(URL, {"requests": items(1)}, format="json").status_code == 401
    assert_error(bob.client().post(URL, {"requests": items(1)}, format="json"), 403, "permission_denied")
    assert bob.client().get(URL).status_code == 200


# --- Running ----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_batch_of_200_completes_with_every_item_accounted_for(alice, pro_plan):
    sandbox_latency(20)
    client = alice.client()
    response = client.post(URL, {"requests": items(200)}, format="json")
    assert response.status_code == 201, response.content
    batch = response.json()
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert batch["counts"]["total"] == 200
    assert response["Location"] == f"/v1/batches/{batch['id']}"

    def consistent(body):
        counts = body["counts"]
        assert sum(v for k, v in counts.items() if k != "total") == 200, counts

    done = wait_batch(client, batch["id"], on_poll=consistent)
    assert done["status"] == "completed" and done["finished_at"]
    assert done["counts"] == {
        "total": 200,
        "queued": 0,
        "running": 0,
        "succeeded": 200,
        "failed": 0,
        "filtered": 0,
        "canceled": 0,
    }
    jobs = Job.objects.filter(batch__public_id=batch["id"])
    assert sorted(jobs.values_list("custom_id", flat=True)) == sorted(f"item-{i}" for i in range(200))
    assert set(jobs.values_list("status", flat=True)) == {"succeeded"}
    records = UsageRecord.objects.filter(job_public_id__in=jobs.values_list("public_id", flat=True))
    assert records.count() == 200 and len(set(records.values_list("image_public_id", flat=True))) == 200

    # Items, paginated, each with its job.
    first = client.get(f"{URL}/{batch['id']}/items?limit=150").json()
    assert len(first["data"]) == 150 and first["has_more"] is True
    rest = client.get(f"{URL}/{batch['id']}/items?limit=150&cursor={first['next_cursor']}").json()
    assert len(rest["data"]) == 50 and rest["has_more"] is False
    item = rest["data"][-1]
    assert item["custom_id"] == "item-199" and item["status"] == "succeeded"
    assert item["generation"]["id"].startswith("gen_") and item["generation"]["images"][0]["url"]

    # The results file: one line per item, in order, with signed image URLs.
    results = client.get(f"{URL}/{batch['id']}/results")
    assert results.status_code == 200 and results["Content-Type"] == "application/jsonl"
    lines = [json.loads(line) for line in b"".join(results.streaming_content).decode().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"item-{i}" for i in range(200)]
    assert all(line["status"] == "succeeded" and line["error"] is None for line in lines)
    assert all("signature=" in line["images"][0]["url"] for line in lines)
    assert [b["id"] for b in client.get(URL).json()["data"]] == [batch["id"]]


@pytest.mark.django_db(transaction=True)
def test_a_batch_keeps_to_its_share_and_interactive_requests_still_run(alice, settings):
    """Org limit 4 concurrent jobs, share 0.5: the batch never holds more than 2 queued or running
    jobs, and an interactive request submitted mid-batch is admitted and finishes before it."""
    sandbox_latency(150)
    org = alice.organization
    org.max_concurrent_jobs_override = 4
    org.save(update_fields=["max_concurrent_jobs_override"])
    client = alice.client()
    batch = client.post(URL, {"requests": items(24)}, format="json").json()
    peak = 0

    def sample(_body=None):
        nonlocal peak
        peak = max(
            peak, Job.objects.filter(batch__public_id=batch["id"], status__in=["queued", "running"]).count()
        )

    sample()
    interactive = client.post("/v1/generations", {"prompt": "now, please"}, format="json")
    assert interactive.status_code == 202, interactive.content
    generation = interactive.json()["id"]
    done = wait_batch(client, batch["id"], on_poll=sample)
    assert done["counts"]["succeeded"] == 24
    assert 1 <= peak <= 2
    job = Job.objects.get(public_id=generation)
    assert job.status == "succeeded" and job.batch is None
    last_batch_item = Job.objects.filter(batch__public_id=batch["id"]).order_by("-finished_at").first()
    assert job.finished_at < last_batch_item.finished_at


@pytest.mark.django_db(transaction=True)
def test_quota_exhausted_mid_batch_fails_the_rest_with_a_clear_code(alice):
    sandbox_latency(10)
    org = alice.organization
    org.monthly_images_override = 3
    org.save(update_fields=["monthly_images_override"])
    client = alice.client(alice.raw_live_key)
    batch = client.post(URL, {"requests": items(5)}, format="json").json()
    done = wait_batch(client, batch["id"])
    assert done["status"] == "completed"
    assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (3, 2)
    failed = Job.objects.filter(batch__public_id=batch["id"], status="failed")
    assert set(failed.values_list("error_code", flat=True)) == {"quota_exceeded"}
    assert UsageRecord.objects.filter(livemode=True).count() == 3
    results = b"".join(client.get(f"{URL}/{batch['id']}/results").streaming_content).decode().splitlines()
    errors = [json.loads(line)["error"] for line in results]
    assert [e["code"] for e in errors if e] == ["quota_exceeded", "quota_exceeded"]


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_queued_items_and_running_ones_finish(alice):
    sandbox_latency(400)
    org = alice.organization
    org.max_concurrent_jobs_override = 2  # share: 1 job at a time
    org.save(update_fields=["max_concurrent_jobs_override"])
    client = alice.client()
    batch = client.post(URL, {"requests": items(6)}, format="json").json()
    response = client.post(f"{URL}/{batch['id']}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("canceling", "canceled")
    done = wait_batch(client, batch["id"])
    counts = done["counts"]
    assert done["status"] == "canceled"
    assert counts["succeeded"] + counts["canceled"] == 6 and counts["canceled"] >= 5
    jobs = Job.objects.filter(batch__public_id=batch["id"])
    assert (
        UsageRecord.objects.filter(job_public_id__in=jobs.values_list("public_id", flat=True)).count()
        == counts["succeeded"]
    )
    assert_error(client.post(f"{URL}/{batch['id']}/cancel"), 409, "conflict")
    statuses = {i["status"] for i in client.get(f"{URL}/{batch['id']}/items").json()["data"]}
    assert statuses <= {"canceled", "succeeded"}


@pytest.mark.django_db(transaction=True)
def test_jsonl_body_and_multipart_upload(alice):
    sandbox_latency(10)
    client = alice.client()
    text = "\n".join(json.dumps(item) for item in items(3)) + "\n\n"
    response = client.post(URL, text, content_type="application/x-ndjson")
    assert response.status_code == 201, response.content
    upload = SimpleUploadedFile("batch.jsonl", text.encode(), content_type="application/jsonl")
    response2 = client.post(URL, {"file": upload}, format="multipart")
    assert response2.status_code == 201, response2.content
    for batch in (response.json(), response2.json()):
        assert wait_batch(client, batch["id"])["counts"]["succeeded"] == 3
    assert_error(client.post(URL, {"nofile": "x"}, format="multipart"), 400, "invalid_request", "file")


@pytest.mark.django_db(transaction=True)
def test_batch_completion_is_delivered_to_the_batch_webhook(alice, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    sandbox_latency(10)
    receiver = Receiver()
    try:
        client = alice.client()
        batch = client.post(URL, {"requests": items(2), "webhook_url": receiver.url}, format="json").json()
        wait_batch(client, batch["id"])
        deadline = time.monotonic() + 10  # the receiver answers before the sender records it
        while time.monotonic() < deadline and not WebhookDelivery.objects.filter(status="succeeded").exists():
            time.sleep(0.05)
        [request] = receiver.requests  # job completions go to the org endpoint (none is set)
        assert request["headers"]["Imagegate-Event"] == "batch.completed"
        payload = json.loads(request["body"])
        assert payload["id"] == batch["id"] and payload["counts"]["succeeded"] == 2
        assert WebhookDelivery.objects.get().status == "succeeded"
    finally:
        receiver.close()


def test_a_dead_feeders_lease_expires_and_another_feeder_continues(alice):
    response = alice.client().post(URL, {"requests": items(3)}, format="json")  # `db`: never commits,
    batch = Batch.objects.get(public_id=response.json()["id"])  # so nothing was fed yet
    assert batch.next_index == 0
    Batch.objects.filter(pk=batch.pk).update(feeder_lease_until=timezone.now() + timedelta(seconds=30))
    assert batch_feed(batch_pk=batch.pk) == 0  # someone (alive) holds it
    Batch.objects.filter(pk=batch.pk).update(feeder_lease_until=timezone.now() - timedelta(seconds=1))
    assert batch_feed(batch_pk=batch.pk) == 3
    assert batch_feed(batch_pk=batch.pk) == 0  # nothing submitted twice
    assert Job.objects.filter(batch=batch).count() == 3


# --- Isolation --------------------------------------------------------------------------------
def test_another_tenants_batch_is_a_404_everywhere(alice, charlie):
    batch = alice.client().post(URL, {"requests": items(2)}, format="json").json()
    other = charlie.client()
    for path in ("", "/items", "/results"):
        assert_error(other.get(f"{URL}/{batch['id']}{path}"), 404, "not_found")
    assert_error(other.post(f"{URL}/{batch['id']}/cancel"), 404, "not_found")
    assert other.get(URL).json()["data"] == []
    assert Batch.objects.get(public_id=batch["id"]).status == "in_progress"
    assert_error(alice.client().get(f"{URL}/batch_nope"), 404, "not_found")
    assert_error(alice.client().get(f"{URL}/{batch['id']}/items?cursor=x"), 400, "invalid_request", "cursor")


def test_a_suspended_organizations_batch_waits_and_resumes(alice):
    from tenants.services import organization_reactivate, organization_suspend

    response = alice.client().post(URL, {"requests": items(3)}, format="json")
    batch = Batch.objects.get(public_id=response.json()["id"])
    organization_suspend(organization=alice.organization)
    assert batch_feed(batch_pk=batch.pk) == 0
    assert not Job.objects.filter(batch=batch).exists()
    organization_reactivate(organization=alice.organization)
    assert batch_feed(batch_pk=batch.pk) == 3


@pytest.mark.parametrize("stop", ["revoke", "expire"])
def test_a_revoked_or_expired_keys_batch_stops_feeding_at_once(alice, stop):
    from django.utils import timezone

    from tenants.models import ApiKey

    response = alice.client().post(URL, {"requests": items(3)}, format="json")
    batch = Batch.objects.get(public_id=response.json()["id"])
    field = "revoked_at" if stop == "revoke" else "expires_at"
    ApiKey.objects.filter(pk=batch.api_key_id).update(**{field: timezone.now()})
    assert batch_feed(batch_pk=batch.pk) == 0
    assert not Job.objects.filter(batch=batch).exists()
