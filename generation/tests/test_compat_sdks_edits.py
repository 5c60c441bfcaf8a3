"""Image inputs through the unchanged official SDKs on a live server: OpenAI's `images.edit`
(one image; three images and a mask) and google-genai's `generate_content` with image parts
(inline bytes, one of our file ids, a conversation with an earlier model image)."""

import base64
import io

import openai
import pytest
from google.genai import types
from PIL import Image as PILImage

from billing.models import UsageRecord
from generation.engine.catalog import catalog_invalidate
from generation.models import InputFile, Job, JobInput, ProviderAccount
from generation.tests.images_fixtures import image_bytes, mask_bytes
from generation.tests.test_compat_sdks import FLASH, google_client, openai_client

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Written against the 0002 seed (gemini-3.1-flash-image serving fast): see tests/catalogs.py.
    pytest.mark.usefixtures("catalog_before_2026_10"),
]


@pytest.fixture(autouse=True)
def quick_sandbox():
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
    catalog_invalidate()


def param_of(error: openai.APIStatusError) -> object:
    body = error.body
    assert isinstance(body, dict)
    return body["param"]


def decoded(b64_json: str) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def test_openai_edit_with_one_image(live_server, alice):
    client = openai_client(live_server, alice.raw_live_key)
    photo = ("product.png", image_bytes(300, 200, (200, 30, 30)), "image/png")
    result = client.images.edit(image=photo, prompt="on a marble table", size="1024x1024")
    assert len(result.data) == 1
    assert decoded(result.data[0].b64_json).size == (1024, 1024)
    job = Job.objects.get()
    assert job.status == Job.Status.SUCCEEDED and len(job.params["images"]) == 1
    assert job.params["mask"] is None
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 1


def test_openai_edit_with_three_images_and_a_mask(live_server, alice):
    client = openai_client(live_server, alice.raw_live_key)
    images = [(f"ref{i}.png", image_bytes(256, 256, (40 * i, 90, 200)), "image/png") for i in range(3)]
    result = client.images.edit(
        image=images,
        mask=("mask.png", mask_bytes(256, 256), "image/png"),
        prompt="the three of them together",
        n=2,
        size="1792x1024",
        output_format="jpeg",
    )
    assert len(result.data) == 2
    for item in result.data:
        image = decoded(item.b64_json)
        assert image.format == "JPEG" and abs(image.size[0] / image.size[1] - 16 / 9) < 0.03
    job = Job.objects.get()
    assert job.count == 2 and len(job.params["images"]) == 3 and job.params["mask"]
    assert JobInput.objects.filter(job=job).count() == 4
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 2


def test_openai_edit_auto_size_keeps_the_inputs_shape(live_server, alice):
    client = openai_client(live_server, alice.raw_live_key)
    result = client.images.edit(image=("tall.png", image_bytes(90, 160), "image/png"), prompt="x")
    width, height = decoded(result.data[0].b64_json).size
    assert abs(width / height - 9 / 16) < 0.03


def test_openai_edit_errors_name_the_field(live_server, alice, settings):
    client = openai_client(live_server, alice.raw_live_key)
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(image=("doc.pdf", b"%PDF-1.7 not an image", "application/pdf"), prompt="x")
    assert param_of(raised.value) == "image[0]"
    settings.FILES_MAX_BYTES = 1024
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(image=("big.png", image_bytes(300, 300) + b"\0" * 2048, "image/png"), prompt="x")
    assert param_of(raised.value) == "image"
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(image=("a.png", image_bytes(), "image/png"), prompt="x", size="999x999")
    assert param_of(raised.value) == "size"
    assert Job.objects.count() == 0


def test_genai_generate_content_with_an_image_part_and_text(live_server, alice):
    client = google_client(live_server, alice.raw_live_key)
    photo = types.Part.from_bytes(data=image_bytes(128, 128, (200, 30, 30)), mime_type="image/png")
    response = client.models.generate_content(
        model=FLASH,
        contents=types.Content(
            role="user", parts=[photo, types.Part.from_text(text="put a party hat on it")]
        ),
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]),
    )
    [part] = response.candidates[0].content.parts
    assert part.inline_data.mime_type == "image/png"
    assert PILImage.open(io.BytesIO(part.inline_data.data)).size == (1024, 1024)
    job = Job.objects.get()
    assert job.prompt == "put a party hat on it" and len(job.params["images"]) == 1
    assert InputFile.objects.get().source == "inline"


def test_genai_file_data_with_our_file_id_and_a_conversation(live_server, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    uploaded = alice.client(alice.raw_live_key).post(
        "/v1/files", {"file": SimpleUploadedFile("logo.png", image_bytes())}, format="multipart"
    )
    file_id = uploaded.json()["id"]
    client = google_client(live_server, alice.raw_live_key, vertexai=False)
    config = types.GenerateContentConfig(response_modalities=["IMAGE"])
    first = client.models.generate_content(
        model=FLASH,
        contents=types.Content(
            role="user",
            parts=[
                types.Part.from_uri(file_uri=file_id, mime_type="image/png"),
                types.Part.from_text(text="this logo on a mug"),
            ],
        ),
        config=config,
    )
    earlier = first.candidates[0].content
    # Conversational editing: send the model's image back and ask for a change.
    second = client.models.generate_content(
        model=FLASH,
        contents=[
            types.Content(role="user", parts=[types.Part.from_text(text="this logo on a mug")]),
            earlier,
            types.Content(role="user", parts=[types.Part.from_text(text="now make the mug blue")]),
        ],
        config=config,
    )
    assert second.candidates[0].content.parts[0].inline_data.data
    jobs = list(Job.objects.order_by("created_at"))
    assert jobs[0].params["images"] == [file_id]
    assert len(jobs[1].params["images"]) == 1 and jobs[1].params["images"][0] != file_id


def test_genai_another_tenants_file_id_is_not_found(live_server, alice, charlie):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from google.genai import errors as genai_errors

    file_id = (
        alice.client()
        .post("/v1/files", {"file": SimpleUploadedFile("a.png", image_bytes())}, format="multipart")
        .json()["id"]
    )
    client = google_client(live_server, charlie.raw_key)
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(
            model=FLASH,
            contents=types.Content(
                role="user",
                parts=[
                    types.Part.from_uri(file_uri=file_id, mime_type="image/png"),
                    types.Part.from_text(text="x"),
                ],
            ),
            config=types.GenerateContentConfig(response_modalities=["IMAGE"]),
        )
    assert raised.value.code == 404
    assert Job.objects.count() == 0
