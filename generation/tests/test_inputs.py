"""Input images on the native API: POST /v1/files, `images` / `mask` on POST /v1/generations as
file ids, https URLs (a local TLS server) and base64; the SSRF rules on URLs; limits; tenancy;
retention; and what the providers receive (the fake Google upstream, the sandbox)."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image as PILImage

from billing.models import UsageRecord
from generation.engine import outbound
from generation.engine.catalog import catalog_invalidate
from generation.files.services import files_expire
from generation.models import InputFile, Job, JobInput, ProviderAccount, Route, UpstreamModel
from generation.tests.images_fixtures import ImageServer, image_bytes, mask_bytes
from generation.tests.webhook_receiver import self_signed_tls
from generation.worker.runner import get_runner

# Written against the 0002 seed (gemini-3.1-flash-image serving fast): see tests/catalogs.py.
pytestmark = pytest.mark.usefixtures("catalog_before_2026_10")

FLASH = "gemini-3.1-flash-image"
RED = (200, 30, 30)


def upload(persona, data: bytes, name: str = "photo.png", *, raw_key=None):
    return persona.client(raw_key).post(
        "/v1/files", {"file": SimpleUploadedFile(name, data, content_type="image/png")}, format="multipart"
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.fixture
def quick_sandbox(db):
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
    catalog_invalidate()


# --- POST /v1/files -------------------------------------------------------------------------
def test_upload_sniffs_the_type_and_strips_exif(alice):
    jpeg = image_bytes(80, 60, fmt="JPEG", exif=True)
    assert PILImage.open(io.BytesIO(jpeg)).getexif()  # the control: the upload carries EXIF
    response = upload(alice, jpeg, "holiday.png")  # the name (and declared type) lie; bytes win
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("file_") and body["object"] == "file"
    assert (body["mime_type"], body["width"], body["height"]) == ("image/jpeg", 80, 60)
    assert body["filename"] == "holiday.png" and body["expires_at"]
    stored = InputFile.objects.get(public_id=body["id"])
    with default_storage.open(stored.storage_path) as handle:
        kept = PILImage.open(io.BytesIO(handle.read()))
    assert kept.format == "JPEG" and not kept.getexif()
    assert alice.client().get(f"/v1/files/{body['id']}").json()["id"] == body["id"]


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a" + b"\x00" * 64,  # a GIF
        b"%PDF-1.7 not an image",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG signature with garbage after it
    ],
)
def test_upload_of_anything_but_png_jpeg_webp_is_400_naming_the_field(alice, data):
    assert_error(upload(alice, data), 400, "invalid_request", "file")
    assert InputFile.objects.count() == 0


def test_oversized_upload_is_400_naming_the_field(alice, settings):
    settings.FILES_MAX_BYTES = 2048
    error = assert_error(
        upload(alice, image_bytes(400, 400, fmt="PNG") + b"\x00" * 4096), 400, "invalid_request"
    )
    assert error["param"] == "file" and "limit" in error["message"]
    settings.FILES_MAX_BYTES = 10 * 1024 * 1024
    settings.FILES_MAX_PIXELS = 100 * 100
    assert_error(upload(alice, image_bytes(200, 200)), 400, "invalid_request", "file")
    assert InputFile.objects.count() == 0


def test_upload_needs_multipart_and_the_file_field(alice):
    assert_error(alice.client().post("/v1/files", {"x": 1}, format="json"), 400, "invalid_request")
    response = alice.client().post("/v1/files", {"other": "1"}, format="multipart")
    assert_error(response, 400, "invalid_request", "file")


def test_files_need_a_key_and_the_generate_scope(alice, bob, anon):
    assert anon.post("/v1/files", {}, format="multipart").status_code == 401
    assert_error(upload(bob, image_bytes()), 403, "permission_denied")


def test_another_tenants_file_is_404_everywhere(alice, charlie):
    file_id = upload(alice, image_bytes()).json()["id"]
    assert_error(charlie.client().get(f"/v1/files/{file_id}"), 404, "not_found")
    assert_error(charlie.client().delete(f"/v1/files/{file_id}"), 404, "not_found")
    response = charlie.client().post("/v1/generations", {"prompt": "x", "images": [file_id]}, format="json")
    assert_error(response, 404, "not_found", "images[0]")
    assert Job.objects.count() == 0
    assert InputFile.objects.filter(public_id=file_id).exists()


def test_delete_removes_the_file_and_its_bytes(alice, django_capture_on_commit_callbacks):
    file_id = upload(alice, image_bytes()).json()["id"]
    path = InputFile.objects.get(public_id=file_id).storage_path
    assert default_storage.exists(path)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.client().delete(f"/v1/files/{file_id}")
    assert response.status_code == 200 and response.json()["deleted"] is True
    assert_error(alice.client().get(f"/v1/files/{file_id}"), 404, "not_found")
    assert not default_storage.exists(path)


# --- images on POST /v1/generations: validation ---------------------------------------------
@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "x", "mask": "file_abcdefgh"}, "mask"),  # a mask needs an image
        ({"prompt": "x", "images": ["not base64 !!"]}, "images[0]"),
        ({"prompt": "x", "images": [b64(b"plain text, not an image")]}, "images[0]"),
        ({"prompt": "x", "images": ["ftp://example.com/a.png"]}, "images[0]"),
        ({"prompt": "x", "images": ["file_doesnotexist1"]}, "images[0]"),
        ({"prompt": "x", "images": "file_abcdefgh"}, "images"),  # a list, not a string
        ({"prompt": "x", "images": [b64(image_bytes())] * 17}, "images"),  # > the field's max
        ({"prompt": "x", "images": [b64(image_bytes())] * 15}, "images"),  # > the model's 14
    ],
)
def test_bad_inputs_are_400_naming_them_and_create_nothing(alice, body, param):
    response = alice.client().post("/v1/generations", body, format="json")
    assert response.status_code in (400, 404), response.content
    assert response.json()["error"]["param"] == param
    assert Job.objects.count() == 0


def test_a_model_without_inputs_or_mask_refuses_them_by_name(alice):
    file_id = upload(alice, image_bytes()).json()["id"]
    model = UpstreamModel.objects.get(model_id=FLASH)
    model.capabilities = {**model.capabilities, "inputs": {**model.capabilities["inputs"], "mask": False}}
    model.save()
    catalog_invalidate()
    body = {"prompt": "x", "images": [file_id], "mask": file_id}
    error = assert_error(alice.client().post("/v1/generations", body, format="json"), 400, "invalid_request")
    assert error["param"] == "mask" and "mask is not supported" in error["message"]
    model.capabilities = {k: v for k, v in model.capabilities.items() if k != "inputs"}  # like Imagen's
    model.save()
    catalog_invalidate()
    error = assert_error(
        alice.client().post("/v1/generations", {"prompt": "x", "images": [file_id]}, format="json"),
        400,
        "invalid_request",
    )
    assert error["param"] == "images" and "not supported" in error["message"]
    assert Job.objects.count() == 0


def test_per_model_byte_and_pixel_limits(alice):
    file_id = upload(alice, image_bytes(300, 300)).json()["id"]
    model = UpstreamModel.objects.get(model_id=FLASH)
    model.capabilities = {
        **model.capabilities,
        "inputs": {**model.capabilities["inputs"], "max_pixels": 200 * 200},
    }
    model.save()
    catalog_invalidate()
    response = alice.client().post("/v1/generations", {"prompt": "x", "images": [file_id]}, format="json")
    error = assert_error(response, 400, "invalid_request", "images[0]")
    assert "pixels" in error["message"]


def test_the_model_list_shows_input_capabilities_and_edit_prices(alice):
    plan = alice.organization.plan
    plan.edit_prices = {"fast": "0.15"}
    plan.save()
    body = alice.client().get("/v1/models").json()
    fast = next(t for t in body["tiers"] if t["id"] == "fast")
    assert fast["price_per_edit_image"] == "0.15" and fast["price_per_image"] != "0.15"
    standard = next(t for t in body["tiers"] if t["id"] == "standard")
    assert standard["price_per_edit_image"] == standard["price_per_image"]
    flash = next(m for m in body["data"] if m["id"] == FLASH)
    assert flash["capabilities"]["inputs"]["max_images"] == 14 and flash["capabilities"]["inputs"]["mask"]
    imagen = next(m for m in body["data"] if m["id"].startswith("imagen-"))
    assert imagen["capabilities"]["inputs"]["max_images"] == 0


# --- URL inputs: the SSRF rules ---------------------------------------------------------------
@pytest.fixture
def public_web(monkeypatch):
    """A 'public' web played by an httpx MockTransport at the network edge: images.example is a
    public address; what it serves is scripted per path."""
    seen: list[str] = []
    routes: dict[str, httpx.Response] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        return routes.get(request.url.path, httpx.Response(404))

    addresses = {"images.example": ["93.184.216.34"], "internal.example": ["10.0.0.5"]}
    monkeypatch.setattr(outbound, "resolver", lambda host, port: addresses[host])
    monkeypatch.setattr(outbound, "fetch_transport", httpx.MockTransport(handler))
    return routes, seen


def test_a_url_to_loopback_is_refused_without_being_fetched(alice):
    server = ImageServer({"/cat.png": (200, {"Content-Type": "image/png"}, image_bytes())})
    try:
        for url in (f"https://127.0.0.1:{server.port}/cat.png", f"http://127.0.0.1:{server.port}/cat.png"):
            response = alice.client().post("/v1/generations", {"prompt": "x", "images": [url]}, format="json")
            assert_error(response, 400, "invalid_request", "images[0]")
        assert server.hits == []
    finally:
        server.close()
    assert Job.objects.count() == 0 and InputFile.objects.count() == 0


@pytest.mark.parametrize(
    "location", ["https://internal.example/secret.png", "https://127.0.0.1/x.png", "http://images.example/a"]
)
def test_a_redirect_to_a_private_address_is_refused(alice, public_web, location):
    routes, seen = public_web
    routes["/start.png"] = httpx.Response(302, headers={"Location": location})
    body = {"prompt": "x", "images": ["https://images.example/start.png"]}
    error = assert_error(alice.client().post("/v1/generations", body, format="json"), 400, "invalid_request")
    assert error["param"] == "images[0]"
    assert seen == ["93.184.216.34/start.png"]  # the redirect target was never contacted
    assert Job.objects.count() == 0


def test_redirects_are_followed_a_few_times_then_refused(alice, public_web, settings):
    routes, seen = public_web
    routes["/a"] = httpx.Response(302, headers={"Location": "/b"})
    routes["/b"] = httpx.Response(301, headers={"Location": "https://images.example/cat.png"})
    routes["/cat.png"] = httpx.Response(200, content=image_bytes(), headers={"Content-Type": "image/png"})
    routes["/loop"] = httpx.Response(302, headers={"Location": "/loop"})
    body = {"prompt": "x", "images": ["https://images.example/a"]}
    response = alice.client().post("/v1/generations", body, format="json")
    assert response.status_code == 202, response.content
    assert seen == ["93.184.216.34/a", "93.184.216.34/b", "93.184.216.34/cat.png"]
    loop = {"prompt": "x", "images": ["https://images.example/loop"]}
    error = assert_error(alice.client().post("/v1/generations", loop, format="json"), 400, "invalid_request")
    assert "redirected more than" in error["message"]


def test_a_url_body_over_the_limit_or_not_an_image_is_400(alice, public_web, settings):
    routes, _ = public_web
    settings.FILES_MAX_BYTES = 4096
    routes["/big.png"] = httpx.Response(200, content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 10_000)
    routes["/page.html"] = httpx.Response(200, content=b"<html>hello</html>")
    routes["/gone.png"] = httpx.Response(404)
    for path, words in (("/big.png", "larger than"), ("/page.html", "not a PNG"), ("/gone.png", "HTTP 404")):
        body = {"prompt": "x", "images": [f"https://images.example{path}"]}
        error = assert_error(
            alice.client().post("/v1/generations", body, format="json"), 400, "invalid_request"
        )
        assert error["param"] == "images[0]" and words in error["message"]
    assert Job.objects.count() == 0


# --- End to end on the sandbox: file id, URL over https, base64 -----------------------------
@pytest.fixture
def https_images(monkeypatch, tmp_path, settings):
    """A local https server for images.test (self-signed, trusted for the test)."""
    tls, cert_path = self_signed_tls("images.test", tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert_path)
    monkeypatch.setattr(outbound, "resolver", lambda host, port: ["127.0.0.1"])
    settings.FILES_ALLOW_PRIVATE_URLS = True  # the test server is on loopback
    server = ImageServer(
        {
            "/blue.png": (200, {"Content-Type": "image/png"}, image_bytes(64, 64, (20, 40, 220))),
            "/moved": (302, {"Location": "/blue.png"}, b""),
        },
        tls=tls,
    )
    yield server
    server.close()


@pytest.mark.django_db(transaction=True)
def test_native_edit_with_a_file_id_a_url_and_base64(alice, https_images, quick_sandbox):
    file_id = upload(alice, image_bytes(96, 96, RED)).json()["id"]
    url = f"https://images.test:{https_images.port}/moved"
    green = b64(image_bytes(32, 32, (20, 200, 40)))
    body = {"prompt": "the same scene at night", "images": [file_id, url, f"data:image/png;base64,{green}"]}
    response = alice.client().post("/v1/generations?wait=30", body, format="json")
    assert response.status_code == 200, response.content
    job = response.json()
    assert job["status"] == "succeeded", job
    assert https_images.hits == ["/moved", "/blue.png"]
    assert len(job["input_images"]) == 3 and job["input_images"][0] == file_id
    assert job["input_images"][1] != job["input_images"][2]
    assert {f.source for f in InputFile.objects.all()} == {"upload", "url", "inline"}
    assert (
        list(JobInput.objects.filter(job__public_id=job["id"]).values_list("file_public_id", flat=True))
        == (job["input_images"])
    )
    # The sandbox's result visibly uses the inputs: the first fills the canvas, the others are
    # thumbnails along the bottom.
    path = Job.objects.get(public_id=job["id"]).images.get().storage_path
    with default_storage.open(path) as handle:
        result = PILImage.open(io.BytesIO(handle.read())).convert("RGB")
    width, height = result.size
    assert _near(result.getpixel((width - 5, height // 2)), RED)
    assert _near(result.getpixel((width // 40 + 5, height - height // 40 - 5)), (20, 40, 220))


def _near(pixel, color, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=False))


@pytest.mark.django_db(transaction=True)
def test_the_same_base64_image_is_one_file_so_an_idempotent_retry_is_the_same_job(alice, quick_sandbox):
    body = {"prompt": "a mug with this logo", "images": [b64(image_bytes())]}
    client = alice.client()
    first = client.post("/v1/generations", body, format="json", HTTP_IDEMPOTENCY_KEY="edit-1")
    second = client.post("/v1/generations", body, format="json", HTTP_IDEMPOTENCY_KEY="edit-1")
    assert first.status_code in (200, 202) and second.status_code in (200, 202), second.content
    assert first.json()["id"] == second.json()["id"]
    assert InputFile.objects.count() == 1 and Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_mask_changes_only_its_transparent_area_in_the_sandbox(alice, quick_sandbox):
    image = upload(alice, image_bytes(128, 128, RED)).json()["id"]
    mask = upload(alice, mask_bytes(128, 128), "mask.png").json()["id"]
    body = {"prompt": "x", "images": [image], "mask": mask, "seed": 7}
    job = alice.client().post("/v1/generations?wait=30", body, format="json").json()
    assert job["status"] == "succeeded" and job["mask"] == mask
    path = Job.objects.get(public_id=job["id"]).images.get().storage_path
    with default_storage.open(path) as handle:
        result = PILImage.open(io.BytesIO(handle.read())).convert("RGB")
    width, height = result.size
    assert _near(result.getpixel((width - 5, height - 5)), RED)  # opaque in the mask: kept
    assert not _near(result.getpixel((5, height - 5)), RED, tolerance=10)  # transparent: edited


@pytest.mark.django_db(transaction=True)
def test_deleting_a_file_a_queued_job_needs_is_refused(alice, quick_sandbox, settings):
    settings.GENERATION_INLINE_DOORBELL = False  # the job stays queued (no worker here)
    file_id = upload(alice, image_bytes()).json()["id"]
    response = alice.client().post("/v1/generations", {"prompt": "x", "images": [file_id]}, format="json")
    assert response.status_code == 202
    assert_error(alice.client().delete(f"/v1/files/{file_id}"), 409, "file_in_use")


@pytest.mark.django_db(transaction=True)
def test_retention_deletes_expired_files_but_not_those_a_job_still_needs(alice, settings):
    settings.GENERATION_INLINE_DOORBELL = False
    settings.FILES_RETENTION_SECONDS = 3600
    with time_machine.travel(timezone.now(), tick=False) as clock:
        used = upload(alice, image_bytes(color=(1, 2, 3))).json()["id"]
        unused = upload(alice, image_bytes(color=(4, 5, 6))).json()["id"]
        alice.client().post("/v1/generations", {"prompt": "x", "images": [used]}, format="json")
        clock.shift(timedelta(minutes=59))
        assert files_expire() == 0
        clock.shift(timedelta(minutes=2))
        unused_path = InputFile.objects.get(public_id=unused).storage_path
        assert files_expire() == 1
        assert not InputFile.objects.filter(public_id=unused).exists()
        assert not default_storage.exists(unused_path)
        assert InputFile.objects.filter(public_id=used).exists()  # its job is still queued
        Job.objects.update(status=Job.Status.CANCELED)
        assert files_expire() == 1
        assert JobInput.objects.get().file is None  # the job keeps the id of what it used


# --- What Google receives (the fake upstream) -------------------------------------------------
@pytest.fixture
def live_gemini(fake_upstream, monkeypatch, pro_plan):
    monkeypatch.setenv("IMAGEGATE_TEST_GEMINI_KEY", fake_upstream.api_key)
    ProviderAccount.objects.filter(name="gemini-api").update(
        base_url=fake_upstream.url, credentials_ref="env:IMAGEGATE_TEST_GEMINI_KEY"
    )
    ProviderAccount.objects.filter(name="vertex-global").update(enabled=False)
    Route.objects.filter(model__model_id__startswith="imagen-").update(enabled=False)
    catalog_invalidate()
    get_runner().reset_health()
    yield fake_upstream
    catalog_invalidate()


@pytest.mark.django_db(transaction=True)
def test_gemini_gets_the_inputs_as_inline_parts_and_the_edit_is_billed_as_an_edit(alice, live_gemini):
    plan = alice.organization.plan
    plan.edit_prices = {"fast": "0.25"}
    plan.save()
    image = upload(alice, image_bytes(64, 64, RED), raw_key=alice.raw_live_key).json()["id"]
    mask = upload(alice, mask_bytes(64, 64), raw_key=alice.raw_live_key).json()["id"]
    client = alice.client(alice.raw_live_key)
    plain = client.post("/v1/generations?wait=30", {"prompt": "a mug", "tier": "fast"}, format="json").json()
    body = {"prompt": "a mug", "tier": "fast", "images": [image], "mask": mask, "count": 2}
    edit = client.post("/v1/generations?wait=30", body, format="json").json()
    assert edit["status"] == "succeeded" and edit["route"] == f"gemini-api/{FLASH}", edit
    calls = [r for r in live_gemini.model_requests() if f"/{FLASH}:generateContent" in r["path"]]
    assert len(calls) == 3
    parts = calls[-1]["body"]["contents"][0]["parts"]
    assert parts[0] == {"text": "a mug"}
    sent = base64.b64decode(parts[1]["inlineData"]["data"])
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    pixel = PILImage.open(io.BytesIO(sent)).convert("RGB").getpixel((1, 1))
    assert pixel == RED
    assert "mask" in parts[2]["text"]
    sent_mask = PILImage.open(io.BytesIO(base64.b64decode(parts[3]["inlineData"]["data"])))
    assert sent_mask.mode == "L" and sent_mask.getpixel((1, 1)) == 255 and sent_mask.getpixel((63, 1)) == 0
    # Billing: each output image at the plan's edit price; what the input tokens cost us is in
    # the upstream cost (the fake counts 560 prompt tokens per input image).
    assert edit["usage"] == {"images": 2, "amount": "0.5000", "currency": "usd"}
    records = UsageRecord.objects.filter(job_public_id=edit["id"])
    assert [str(r.unit_price) for r in records] == ["0.2500", "0.2500"]
    edit_cost = Job.objects.get(public_id=edit["id"]).upstream_cost / 2
    plain_cost = Job.objects.get(public_id=plain["id"]).upstream_cost
    assert edit_cost > plain_cost
    assert json.dumps(edit).count("base64") == 0  # the job document names files, never bytes


def test_image_bodies_have_their_own_size_limit(alice, settings):
    """The request guard's global limit stays small; bodies that carry images get
    IMAGE_BODY_MAX_BYTES (and are still refused above it, with a 413)."""
    settings.REQUEST_BODY_MAX_BYTES = 4096
    settings.IMAGE_BODY_MAX_BYTES = 256 * 1024
    noise = PILImage.frombytes("RGB", (60, 60), os.urandom(60 * 60 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    body = {"prompt": "x", "images": [b64(out.getvalue())]}
    assert len(str(body)) > 4096
    assert alice.client().post("/v1/generations", body, format="json").status_code == 202
    padded = {"url": "https://example.com/" + "a" * 5000}
    assert alice.client().put("/v1/webhook", padded, format="json").status_code == 413
    settings.IMAGE_BODY_MAX_BYTES = 4096
    assert alice.client().post("/v1/generations", body, format="json").status_code == 413
