"""Images in the dashboard: the playground's input images, input beside output on the job page,
thumbnails on the jobs list and the overview, the gallery, and input files scoped to the
organization (another organization's file is a 404)."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from generation.engine.catalog import catalog_invalidate
from generation.models import InputFile, Job, ProviderAccount
from generation.tests.images_fixtures import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture(autouse=True)
def fast_sandbox(pro_plan):
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
    catalog_invalidate()


def _edit(client, key, *files):
    form = {
        "api_key": key.public_id,
        "prompt": "the same, at night",
        "tier": "fast",
        "aspect_ratio": "1:1",
        "count": 1,
        "resolution": "1K",
        "images": [SimpleUploadedFile(name, data, content_type="image/png") for name, data in files],
    }
    return client.post(reverse("dashboard:playground"), form, **FETCH)


def _finished(client, url: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_playground_edit_shows_inputs_and_outputs_and_thumbnails(web, alice):
    client = web(alice)
    response = _edit(client, alice.key, ("photo.png", image_bytes(120, 80)))
    assert response.status_code == 202, response.content
    job = _finished(client, response.json()["status_url"])
    assert job["status"] == "succeeded" and len(job["input_images"]) == 1
    [item] = job["inputs"]
    assert item["role"] == "image" and item["url"].endswith(item["id"])
    served = client.get(item["url"])
    assert served.status_code == 200 and served["Content-Type"] == "image/png"

    page = client.get(reverse("dashboard:job-detail", args=[job["id"]])).content.decode()
    assert 'id="job-inputs"' in page and item["url"] in page and 'id="job-outputs"' in page
    jobs_page = client.get(reverse("dashboard:jobs")).content.decode()
    assert 'class="thumb"' in jobs_page and ">edit</span>" in jobs_page
    home = client.get(reverse("dashboard:home")).content.decode()
    assert 'class="thumb"' in home
    gallery = client.get(reverse("dashboard:gallery"))
    assert gallery.status_code == 200 and gallery.content.decode().count("<figure>") == 1


def test_a_non_image_in_the_playground_is_an_error_not_a_job(web, alice):
    response = _edit(web(alice), alice.key, ("notes.png", b"just text"))
    assert response.status_code == 400
    assert "not a PNG, JPEG or WEBP" in str(response.json()["errors"])
    assert Job.objects.count() == 0


def test_another_organizations_input_file_is_404(web, alice, charlie):
    file_id = (
        alice.client()
        .post("/v1/files", {"file": SimpleUploadedFile("a.png", image_bytes())}, format="multipart")
        .json()["id"]
    )
    assert InputFile.objects.filter(public_id=file_id).exists()
    assert web(charlie).get(reverse("dashboard:input-file", args=[file_id])).status_code == 404
    assert web(alice).get(reverse("dashboard:input-file", args=[file_id])).status_code == 200
