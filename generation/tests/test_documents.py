"""Every resource document the API returns has exactly the fields its OpenAPI schema declares.

The documents are built in one module (generation/documents.py) and the schema is declared by the
output serializers (generation/api/serializers.py); this test holds one against the other, on real
responses, so a key added on one side and not the other fails here.
"""

import pytest

from generation.engine.catalog import catalog_invalidate
from generation.models import ProviderAccount, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)  # jobs run once their transaction commits


@pytest.fixture
def schemas(anon):
    return anon.get("/v1/openapi.json").json()["components"]["schemas"]


@pytest.fixture
def fast_sandbox():
    ProviderAccount.objects.filter(kind="sandbox").update(options={"latency_ms": 1, "failure_rate": 0})
    catalog_invalidate()


def assert_matches(document: dict, schemas: dict, component: str) -> None:
    declared = set(schemas[component]["properties"])
    returned = set(document)
    assert returned - declared == set(), f"{component}: returned but not in the schema"
    assert declared - returned == set(), f"{component}: in the schema but not returned"


def test_generation_and_image_documents_match_the_schema(alice, schemas, fast_sandbox):
    created = alice.client().post(
        "/v1/generations?wait=30", {"prompt": "a lighthouse", "count": 2}, format="json"
    )
    assert created.status_code == 200, created.content
    job = alice.client().get(f"/v1/generations/{created.json()['id']}").json()
    assert job["status"] == "succeeded" and len(job["images"]) == 2
    for document in (created.json(), job):
        assert_matches(document, schemas, "JobOutput")
        assert_matches(document["usage"], schemas, "JobUsageOutput")
        for image in document["images"]:
            assert_matches(image, schemas, "ImageOutput")
    listed = alice.client().get("/v1/generations").json()
    assert_matches(listed, schemas, "GenerationList")
    assert_matches(listed["data"][0], schemas, "JobOutput")


def test_a_failed_generation_document_matches_the_schema(alice, schemas):
    queued = alice.client().post("/v1/generations", {"prompt": "x"}, format="json").json()
    canceled = alice.client().post(f"/v1/generations/{queued['id']}/cancel")
    if canceled.status_code == 200:  # it may have finished first on a fast machine
        assert_matches(canceled.json(), schemas, "JobOutput")
        assert canceled.json()["status"] == "canceled"
    assert_matches(alice.client().get(f"/v1/generations/{queued['id']}").json(), schemas, "JobOutput")


def test_batch_documents_match_the_schema(alice, schemas, fast_sandbox):
    requests = [{"custom_id": f"item-{n}", "body": {"prompt": f"tile {n}"}} for n in range(3)]
    created = alice.client().post("/v1/batches", {"requests": requests}, format="json")
    assert created.status_code == 201, created.content
    batch = created.json()
    assert_matches(batch, schemas, "BatchOutput")
    assert_matches(batch["counts"], schemas, "BatchCountsOutput")
    assert sum(batch["counts"][key] for key in batch["counts"] if key != "total") == 3
    items = alice.client().get(f"/v1/batches/{batch['id']}/items").json()
    assert_matches(items, schemas, "BatchItemList")
    assert len(items["data"]) == 3
    for item in items["data"]:
        assert_matches(item, schemas, "BatchItemOutput")
    assert_matches(alice.client().get("/v1/batches").json(), schemas, "BatchList")
    canceled = alice.client().post(f"/v1/batches/{batch['id']}/cancel")
    if canceled.status_code == 200:
        assert canceled.json()["status"] in ("canceling", "canceled")
        assert_matches(canceled.json(), schemas, "BatchOutput")


def test_webhook_documents_match_the_schema(alice, schemas, settings, fast_sandbox):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    endpoint = alice.client().put("/v1/webhook", {"url": "http://127.0.0.1:9/hook"}, format="json")
    assert endpoint.status_code == 200, endpoint.content
    assert_matches(endpoint.json(), schemas, "WebhookEndpointOutput")
    assert endpoint.json()["secret"].startswith("whsec_")
    done = alice.client().post("/v1/generations?wait=30", {"prompt": "a ping"}, format="json")
    assert done.status_code == 200
    assert WebhookDelivery.objects.filter(object_id=done.json()["id"]).exists()
    deliveries = alice.client().get("/v1/webhook/deliveries").json()
    assert_matches(deliveries, schemas, "WebhookDeliveryList")
    assert deliveries["data"], "the finished job recorded a delivery"
    for delivery in deliveries["data"]:
        assert_matches(delivery, schemas, "WebhookDeliveryOutput")


def test_file_document_matches_the_schema(alice, schemas):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.tests.images_fixtures import image_bytes

    created = alice.client().post(
        "/v1/files", {"file": SimpleUploadedFile("a.png", image_bytes())}, format="multipart"
    )
    assert created.status_code == 201, created.content
    assert_matches(created.json(), schemas, "File")
    assert_matches(alice.client().get(f"/v1/files/{created.json()['id']}").json(), schemas, "File")
