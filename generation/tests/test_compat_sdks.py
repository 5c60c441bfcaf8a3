"""The unchanged official SDKs (`openai`, `google-genai`) against the app on a live server: only the
base URL and the key change. Jobs run in this process's runner (the doorbell rings inline), on the
sandbox provider, through the same jobs, limits and billing as the native API."""

import base64
import io

import openai
import pytest
from django.core.signals import request_started
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai import OpenAI
from PIL import Image as PILImage

from billing.models import UsageRecord
from generation.models import Job, Route

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # google-genai warns that generate_images (Imagen) is deprecated upstream; it is what we test.
    pytest.mark.filterwarnings("ignore:The generate_images method is deprecated"),
    # Written against the 0002 seed (gemini-3.1-flash-image serving fast): see tests/catalogs.py.
    pytest.mark.usefixtures("catalog_before_2026_10"),
]

FLASH = "gemini-3.1-flash-image"


def openai_client(live_server, key: str) -> OpenAI:
    return OpenAI(base_url=f"{live_server.url}/v1", api_key=key)


def google_client(live_server, key: str, *, vertexai: bool = True) -> genai.Client:
    options = types.HttpOptions(base_url=live_server.url, api_version="v1")
    if vertexai:
        return genai.Client(vertexai=True, api_key=key, http_options=options)
    return genai.Client(api_key=key, http_options=options)


def assert_shape(data: bytes, ratio: tuple[int, int]) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()  # decodes fully: a truncated image raises here
    width, height = image.size
    assert abs(width / height - ratio[0] / ratio[1]) < 0.03, image.size
    return image


@pytest.fixture
def requests_seen():
    """Requests the server received, by path (counted server-side, not by the SDK)."""
    seen: list[str] = []

    def count(sender, environ, **kwargs):
        seen.append(environ["PATH_INFO"])

    request_started.connect(count)
    yield seen
    request_started.disconnect(count)


# --- OpenAI -----------------------------------------------------------------------------------
def test_openai_images_generate_two_16_9_images(live_server, alice):
    client = openai_client(live_server, alice.raw_live_key)
    result = client.images.generate(model="fast", prompt="a red fox in snow", n=2, size="1792x1024")
    assert isinstance(result, openai.types.ImagesResponse) and len(result.data) == 2
    for item in result.data:
        assert assert_shape(base64.b64decode(item.b64_json), (16, 9)).format == "PNG"
    job = Job.objects.get()
    assert job.status == Job.Status.SUCCEEDED and job.livemode and job.count == 2
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 2


def test_openai_wrong_key_is_authentication_error(live_server, alice):
    with pytest.raises(openai.AuthenticationError) as raised:
        openai_client(live_server, "ig_live_" + "z" * 40).images.generate(prompt="x")
    assert raised.value.status_code == 401 and raised.value.code == "invalid_api_key"


def test_openai_quota_exhaustion_is_rate_limit_error_without_retries(live_server, alice, requests_seen):
    alice.organization.monthly_images_override = 1
    alice.organization.save()
    with pytest.raises(openai.RateLimitError) as raised:
        openai_client(live_server, alice.raw_live_key).images.generate(prompt="x", n=2)
    assert raised.value.code == "quota_exceeded"
    assert requests_seen.count("/v1/images/generations") == 1  # the SDK would retry twice by default
    assert Job.objects.count() == 0


def test_openai_retryable_429_is_retried_by_the_sdk(live_server, alice, requests_seen):
    """The control for the test above: a 429 that waiting can fix (concurrency) carries
    retry-after and no x-should-retry, so the SDK retries it (max_retries=1 here: one retry)."""
    alice.organization.max_concurrent_jobs_override = 0
    alice.organization.save()
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=alice.raw_live_key, max_retries=1)
    with pytest.raises(openai.RateLimitError):
        client.images.generate(prompt="x")
    assert requests_seen.count("/v1/images/generations") == 2


def test_openai_timeout_is_not_retried_so_nothing_is_generated_twice(
    live_server, alice, requests_seen, settings
):
    settings.COMPAT_WAIT_SECONDS = 1
    Route.objects.filter(account__name="sandbox", tier="fast").update(options={"latency_ms": 2500})
    with pytest.raises(openai.InternalServerError) as raised:
        openai_client(live_server, alice.raw_live_key).images.generate(prompt="slow")
    assert raised.value.status_code == 504 and raised.value.code == "generation_timeout"
    assert requests_seen.count("/v1/images/generations") == 1
    assert Job.objects.count() == 1


def test_openai_bad_size_bad_n_and_bad_model(live_server, alice):
    client = openai_client(live_server, alice.raw_live_key)
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", size="1000x1000")
    assert raised.value.body["param"] == "size"  # type: ignore[index]  # the error body is a dict
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="x", n=5)
    assert raised.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as not_found:
        client.images.generate(prompt="x", model="imagen-9")
    assert not_found.value.code == "model_not_found"
    assert Job.objects.count() == 0


def test_openai_read_only_key_is_permission_denied(live_server, bob):
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(live_server, bob.raw_key).images.generate(prompt="x")


def test_openai_generations_belong_to_the_calling_tenant(live_server, alice, charlie):
    raw = openai_client(live_server, charlie.raw_key).images.with_raw_response.generate(prompt="contoso")
    public_id = raw.headers["x-imagegate-generation-id"]
    assert len(raw.parse().data) == 1
    assert alice.client().get(f"/v1/generations/{public_id}").status_code == 404
    assert charlie.client().get(f"/v1/generations/{public_id}").status_code == 200


# --- Google -----------------------------------------------------------------------------------
def test_genai_generate_images_four_16_9_images(live_server, alice):
    client = google_client(live_server, alice.raw_live_key)
    response = client.models.generate_images(
        model="imagen-4-fast",
        prompt="a lighthouse at dusk",
        config=types.GenerateImagesConfig(number_of_images=4, aspect_ratio="16:9", include_rai_reason=True),
    )
    assert len(response.generated_images) == 4
    for generated in response.generated_images:
        assert generated.rai_filtered_reason is None
        assert_shape(generated.image.image_bytes, (16, 9))
    job = Job.objects.get()
    assert job.count == 4 and UsageRecord.objects.filter(job_public_id=job.public_id).count() == 4


def test_genai_generate_images_reports_filtered_images(live_server, alice):
    client = google_client(live_server, alice.raw_key)
    response = client.models.generate_images(
        model="imagen-4-fast",
        prompt="a lighthouse [filtered]",
        config=types.GenerateImagesConfig(
            number_of_images=2, include_rai_reason=True, output_mime_type="image/jpeg"
        ),
    )
    delivered, filtered = response.generated_images
    assert delivered.image.mime_type == "image/jpeg" and assert_shape(delivered.image.image_bytes, (1, 1))
    assert filtered.rai_filtered_reason and not filtered.image.image_bytes


@pytest.mark.parametrize("vertexai", [True, False])
def test_genai_generate_content_returns_an_image_part(live_server, alice, vertexai):
    client = google_client(live_server, alice.raw_key, vertexai=vertexai)
    response = client.models.generate_content(
        model=FLASH,
        contents="a watercolor of a heron",
        config=types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="16:9")
        ),
    )
    (part,) = response.candidates[0].content.parts
    assert part.inline_data.mime_type == "image/png"
    assert_shape(part.inline_data.data, (16, 9))
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == FLASH and Job.objects.get().public_id == response.response_id


def test_genai_vertex_project_path_with_the_key_as_oauth_token(live_server, alice):
    from google.oauth2.credentials import Credentials

    client = genai.Client(
        vertexai=True,
        project="my-project",
        location="us-central1",
        credentials=Credentials(token=alice.raw_key),
        http_options=types.HttpOptions(base_url=live_server.url, api_version="v1"),
    )
    response = client.models.generate_content(
        model=FLASH, contents="a heron", config=types.GenerateContentConfig(response_modalities=["IMAGE"])
    )
    assert_shape(response.candidates[0].content.parts[0].inline_data.data, (1, 1))


def test_genai_generate_content_safety_block(live_server, alice):
    client = google_client(live_server, alice.raw_key)  # keep a reference: the SDK closes it otherwise
    response = client.models.generate_content(
        model=FLASH,
        contents="x [filtered]",
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]),
    )
    assert response.candidates[0].finish_reason == types.FinishReason.IMAGE_SAFETY


def test_genai_text_only_modality_is_400(live_server, alice):
    client = google_client(live_server, alice.raw_key)
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(
            model=FLASH, contents="x", config=types.GenerateContentConfig(response_modalities=["TEXT"])
        )
    assert raised.value.code == 400 and raised.value.status == "INVALID_ARGUMENT"


def test_genai_wrong_key_is_401_client_error(live_server, alice):
    client = google_client(live_server, "ig_test_" + "w" * 40)
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_images(model="imagen-4-fast", prompt="x")
    assert raised.value.code == 401 and raised.value.status == "UNAUTHENTICATED"


def test_genai_quota_exhaustion_is_429_client_error_sent_once(live_server, alice, requests_seen):
    alice.organization.monthly_images_override = 1
    alice.organization.save()
    client = google_client(live_server, alice.raw_live_key)
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_images(
            model="imagen-4-fast", prompt="x", config=types.GenerateImagesConfig(number_of_images=2)
        )
    assert raised.value.code == 429 and raised.value.status == "RESOURCE_EXHAUSTED"
    assert len([p for p in requests_seen if p.endswith(":predict")]) == 1


def test_genai_unknown_model_and_bad_aspect_ratio(live_server, alice):
    client = google_client(live_server, alice.raw_key)
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_images(model="imagen-9", prompt="x")
    assert raised.value.code == 404 and raised.value.status == "NOT_FOUND"
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_images(
            model="imagen-4-fast", prompt="x", config=types.GenerateImagesConfig(aspect_ratio="5:1")
        )
    assert raised.value.code == 400 and "aspectRatio" in raised.value.message
    assert Job.objects.count() == 0
