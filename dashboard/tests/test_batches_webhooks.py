"""The Jobs page's batches with progress, the batch page, and the webhook section of Settings, all
through generation.batches.services / generation.webhooks.services services."""

import re
import time

import pytest
from django.urls import reverse

from dashboard.selectors import batches_with_counts
from generation.documents import batch_counts
from generation.engine import outbound
from generation.engine.catalog import catalog_invalidate
from generation.models import Batch, Job, ProviderAccount, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)
PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def fast_sandbox(pro_plan):
    ProviderAccount.objects.filter(kind="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
    catalog_invalidate()


def _batch(persona, n=3) -> str:
    items = [{"custom_id": f"item-{i}", "body": {"prompt": f"lighthouse {i}"}} for i in range(n)]
    response = persona.client().post("/v1/batches", {"requests": items}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _wait_completed(persona, batch_id):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if persona.client().get(f"/v1/batches/{batch_id}").json()["status"] == "completed":
            return
        time.sleep(0.1)
    raise AssertionError("batch not completed")


def test_jobs_page_shows_batches_with_progress_and_the_batch_page_its_items(
    web, alice, bob, charlie, django_assert_max_num_queries
):
    batch_id = _batch(alice)
    _wait_completed(alice, batch_id)
    client = web(bob)  # members see jobs and batches
    with django_assert_max_num_queries(10):
        page = client.get(reverse("dashboard:jobs")).content.decode()
    assert batch_id in page
    assert re.search(r'<progress max="3" value="3"', page)
    with django_assert_max_num_queries(10):
        detail = client.get(reverse("dashboard:batch-detail", args=[batch_id]))
    assert detail.status_code == 200
    html = detail.content.decode()
    assert html.count("status-succeeded") == 3 and "item-2" in html
    assert web(charlie).get(reverse("dashboard:batch-detail", args=[batch_id])).status_code == 404
    assert batch_id not in web(charlie).get(reverse("dashboard:jobs")).content.decode()
    assert web().get(reverse("dashboard:batch-detail", args=[batch_id])).status_code == 302


def test_grouped_counts_equal_the_batch_services(alice):
    finished = _batch(alice, n=2)
    _wait_completed(alice, finished)
    Job.objects.filter(batch__public_id=finished).update(images_delivered=0)  # as if all filtered
    pending = Batch.objects.create(
        organization=alice.organization,
        api_key=alice.key,
        requests=[{"custom_id": "a", "body": {"prompt": "x"}}] * 4,
        total=4,
    )
    cancelled = Batch.objects.create(
        organization=alice.organization, api_key=alice.key, requests=[], total=5, status="canceled"
    )
    grouped = dict(batches_with_counts(organization=alice.organization))
    for batch in (Batch.objects.get(public_id=finished), pending, cancelled):
        assert grouped[next(b for b in grouped if b.pk == batch.pk)] == batch_counts(batch=batch)


def test_webhook_url_secret_shown_once_and_delivery_log(web, alice, bob, charlie, monkeypatch):
    monkeypatch.setattr(outbound, "resolver", lambda host, port: [PUBLIC])
    client = web(alice)
    response = client.post(reverse("dashboard:webhook-set"), {"url": "https://hooks.acme.example/imagegate"})
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(organization=alice.organization)
    assert endpoint.url == "https://hooks.acme.example/imagegate" and endpoint.enabled
    assert endpoint.secret in response.content.decode()
    page = client.get(reverse("dashboard:settings")).content.decode()
    assert endpoint.secret not in page and f"whsec_…{endpoint.secret[-4:]}" in page
    # Changing the URL keeps the secret and does not show it again.
    response = client.post(reverse("dashboard:webhook-set"), {"url": "https://hooks.acme.example/v2"})
    assert response.status_code == 302
    # Rotating shows the new one once.
    response = client.post(reverse("dashboard:webhook-rotate"))
    endpoint.refresh_from_db()
    assert endpoint.secret in response.content.decode()

    failed = WebhookDelivery.objects.create(
        organization=alice.organization,
        event="generation.finished",
        object_id="gen_1",
        url="https://hooks.acme.example/v2",
        payload={},
        status="failed",
        attempts=8,
        last_status_code=500,
    )
    page = client.get(reverse("dashboard:settings")).content.decode()
    assert failed.public_id in page and "Retry" in page
    # Another organization cannot retry it; members cannot manage webhooks at all.
    assert web(charlie).post(reverse("dashboard:webhook-retry", args=[failed.public_id])).status_code == 404
    assert web(bob).post(reverse("dashboard:webhook-rotate")).status_code == 403
    assert client.post(reverse("dashboard:webhook-retry", args=[failed.public_id])).status_code == 302
    assert WebhookDelivery.objects.get(pk=failed.pk).status in ("pending", "succeeded", "failed")
    assert WebhookDelivery.objects.get(pk=failed.pk).next_attempt_at is not None

    assert client.post(reverse("dashboard:webhook-delete")).status_code == 302
    assert WebhookEndpoint.objects.get(organization=alice.organization).url == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.acme.example/x", "must use https"),
        ("https://internal.acme.example/x", "private, loopback"),
        ("not a url", "Enter a valid URL."),
    ],
)
def test_unsafe_webhook_urls_are_refused(web, alice, monkeypatch, settings, url, message):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    monkeypatch.setattr(outbound, "resolver", lambda host, port: ["10.0.0.7"])
    response = web(alice).post(reverse("dashboard:webhook-set"), {"url": url})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not WebhookEndpoint.objects.filter(organization=alice.organization).exclude(url="").exists()
