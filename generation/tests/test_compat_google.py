"""Google-compatible Imagen `:predict` and Gemini `:generateContent`: parameter mapping (enums in
any case), responses exactly as Google shapes them, errors as `{"error": {code, message, status}}`.
Plain APIClient with the key in `x-goog-api-key`; the SDK itself is driven in test_compat_sdks.py."""

import base64
import io

import pytest
from PIL import Image as PILImage
from rest_framework.test import APIClient

from billing.models import UsageRecord
from generation.models import Job, Route

PREDICT_PATHS = [
    "/v1beta/models/{model}:predict",
    "/v1/publishers/google/models/{model}:predict",
    "/v1beta1/publishers/google/models/{model}:predict",
    "/v1/projects/my-project/locations/us-central1/publishers/google/models/{model}:predict",
]
CONTENT_PATHS = [
    "/v1/models/{model}:generateContent",
    "/v1beta/models/{model}:generateContent",
    "/v1/publishers/google/models/{model}:generateContent",
    "/v1beta1/publishers/google/models/{model}:generateContent",
    "/v1beta1/projects/my-project/locations/global/publishers/google/models/{model}:generateContent",
]
FLASH = "gemini-3.1-flash-image"
# Written against the 0002 seed (gemini-3.1-flash-image serving fast): see tests/catalogs.py.
pytestmark = pytest.mark.usefixtures("catalog_before_2026_10")


def google_client(raw_key: str | None) -> APIClient:
    client = APIClient()
    if raw_key:
        client.credentials(HTTP_X_GOOG_API_KEY=raw_key)
    return client


def predict(persona, body, *, model="imagen-4-fast", path=PREDICT_PATHS[1], live=False, raw_key=None):
    key = raw_key or (persona.raw_live_key if live else persona.raw_key)
    return google_client(key).post(path.format(model=model), body, format="json")


def content(persona, body, *, model=FLASH, path=CONTENT_PATHS[0], live=False, raw_key=None):
    key = raw_key or (persona.raw_live_key if live else persona.raw_key)
    return google_client(key).post(path.format(model=model), body, format="json")


def prompt_body(prompt="a lighthouse", **parameters):
    return {"instances": [{"prompt": prompt}], "parameters": parameters}


def text_body(prompt="a lighthouse", **config):
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], **config},
    }


def assert_google_error(response, code, status, param=None):
    assert response.status_code == code, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    if param is not None:
        assert error["details"][0]["metadata"]["param"] == param
    return error


def decode(data: str) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(data)))


# --- :predict contract ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, param",
    [
        (prompt_body(sampleCount=5), "parameters.sampleCount"),
        (prompt_body(aspectRatio="5:1"), "parameters.aspectRatio"),
        (prompt_body(sampleImageSize="8K"), "parameters.sampleImageSize"),
        (prompt_body(outputOptions={"mimeType": "image/gif"}), "parameters.outputOptions.mimeType"),
        (prompt_body(personGeneration="EVERYONE"), "parameters.personGeneration"),
        (prompt_body(safetySetting="BLOCK_ALL"), "parameters.safetySetting"),
        (prompt_body(storageUri="gs://bucket/x"), "parameters.storageUri"),
        (prompt_body(enhancePrompt=True), "parameters.enhancePrompt"),
        (prompt_body(includeRaiReason="yes"), "parameters.includeRaiReason"),
        (prompt_body(""), "instances[0].prompt"),
        ({"instances": []}, "instances"),
        ({"instances": [{"prompt": "x", "image": {}}]}, "instances[0].image"),
    ],
)
def test_predict_bad_input_is_400_invalid_argument(alice, body, param):
    assert_google_error(predict(alice, body), 400, "INVALID_ARGUMENT", param)
    assert Job.objects.count() == 0


def test_predict_wrong_or_missing_key_is_401_unauthenticated(alice):
    assert_google_error(predict(alice, prompt_body(), raw_key="ig_test_" + "y" * 40), 401, "UNAUTHENTICATED")
    response = APIClient().post(PREDICT_PATHS[1].format(model="fast"), prompt_body(), format="json")
    assert_google_error(response, 401, "UNAUTHENTICATED")


def test_predict_unknown_and_retired_models_are_404_not_found(alice):
    assert_google_error(predict(alice, prompt_body(), model="imagen-9"), 404, "NOT_FOUND", "model")
    assert_google_error(
        predict(alice, prompt_body(), model="imagen-4.0-fast-generate-001", live=True), 404, "NOT_FOUND"
    )


def test_read_only_key_and_suspended_tenant_are_403_permission_denied(alice, bob):
    assert_google_error(predict(bob, prompt_body()), 403, "PERMISSION_DENIED")
    from tenants.services import organization_suspend

    organization_suspend(organization=alice.organization)
    error = assert_google_error(predict(alice, prompt_body(), live=True), 403, "PERMISSION_DENIED")
    assert error["details"][0]["reason"] == "TENANT_SUSPENDED"


def test_blocked_payment_is_403_permission_denied(alice):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import BillingAccount
    from billing.services import billing_account_payment_failed_set

    account = BillingAccount.objects.create(organization=alice.organization)
    billing_account_payment_failed_set(account=account, failed_at=timezone.now() - timedelta(days=30))
    account.save()
    error = assert_google_error(predict(alice, prompt_body(), live=True), 403, "PERMISSION_DENIED")
    assert error["details"][0]["reason"] == "PAYMENT_REQUIRED"


def test_quota_exhausted_is_429_resource_exhausted_without_retry_info(alice):
    alice.organization.monthly_images_override = 3
    alice.organization.save()
    response = predict(alice, prompt_body(), live=True)  # sampleCount defaults to 4, as on Google
    error = assert_google_error(response, 429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["reason"] == "QUOTA_EXCEEDED"
    assert len(error["details"]) == 1 and "Retry-After" not in response


def test_concurrency_limit_is_429_with_retry_info(alice):
    alice.organization.max_concurrent_jobs_override = 0
    alice.organization.save()
    response = predict(alice, prompt_body())
    error = assert_google_error(response, 429, "RESOURCE_EXHAUSTED")
    assert error["details"][1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
    assert response["Retry-After"] == "1"


# --- :generateContent contract ----------------------------------------------------------------
@pytest.mark.parametrize(
    "body, param",
    [
        (text_body(responseModalities=["TEXT"]), "generationConfig.responseModalities"),
        (text_body(candidateCount=2), "generationConfig.candidateCount"),
        (text_body(imageConfig={"aspectRatio": "7:3"}), "generationConfig.imageConfig.aspectRatio"),
        (text_body(imageConfig={"imageSize": "16K"}), "generationConfig.imageConfig.imageSize"),
        (text_body(imageConfig={"style": "noir"}), "generationConfig.imageConfig.style"),
        (text_body(responseMimeType="application/json"), "generationConfig.responseMimeType"),
        ({**text_body(), "tools": [{"googleSearch": {}}]}, "tools"),
        ({**text_body(), "systemInstruction": {"parts": [{"text": "x"}]}}, "systemInstruction"),
        ({"contents": []}, "contents"),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}]},
            "contents[0].parts[0].inlineData",
        ),
        (
            {
                "contents": [
                    {"parts": [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": "bm9w"}}]}
                ]
            },
            "contents[0].parts[1]",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}, {"functionCall": {"name": "f"}}]}]},
            "contents[0].parts[1].functionCall",
        ),
    ],
)
def test_generate_content_bad_input_is_400(alice, body, param):
    assert_google_error(content(alice, body), 400, "INVALID_ARGUMENT", param)
    assert Job.objects.count() == 0


def test_generate_content_without_image_modality_says_we_serve_images_only(alice):
    error = assert_google_error(
        content(alice, text_body(responseModalities=["TEXT"])), 400, "INVALID_ARGUMENT"
    )
    assert "image output only" in error["message"]


def test_generate_content_unknown_model_is_404_and_wrong_key_401(alice):
    assert_google_error(content(alice, text_body(), model="gemini-9-image"), 404, "NOT_FOUND")
    assert_google_error(content(alice, text_body(), raw_key="nope"), 401, "UNAUTHENTICATED")


# --- End to end -------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PREDICT_PATHS)
def test_predict_returns_predictions_exactly_as_google(alice, path):
    body = prompt_body(
        "a lighthouse at dusk",
        sampleCount=2,
        aspectRatio="16:9",
        sampleImageSize="1k",
        personGeneration="ALLOW_ADULT",
        safetySetting="BLOCK_MEDIUM_AND_ABOVE",
        outputOptions={"mimeType": "IMAGE/JPEG", "compressionQuality": 80},
        seed=7,
    )
    response = predict(alice, body, path=path, live=True)
    assert response.status_code == 200, response.content
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for item in predictions:
        assert set(item) == {"bytesBase64Encoded", "mimeType"} and item["mimeType"] == "image/jpeg"
        assert decode(item["bytesBase64Encoded"]).size == (1376, 768)
    job = Job.objects.get(public_id=response["x-imagegate-generation-id"])
    assert job.params["person_generation"] == "allow_adult"
    assert job.params["safety_level"] == "block_medium_and_above" and job.params["seed"] == 7
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 2


@pytest.mark.django_db(transaction=True)
def test_predict_filtered_images_and_safety_attributes(alice):
    response = predict(alice, prompt_body("x [filtered]", sampleCount=2, includeRaiReason=True))
    predictions = response.json()["predictions"]
    assert [sorted(p) for p in predictions] == [["bytesBase64Encoded", "mimeType"], ["raiFilteredReason"]]
    # Without includeRaiReason a filtered image is just absent; all filtered -> {} (as Google).
    assert predict(alice, prompt_body("y [filtered]", sampleCount=1)).json() == {}
    response = predict(alice, prompt_body("z", sampleCount=1, includeSafetyAttributes=True))
    predictions = response.json()["predictions"]
    assert "safetyAttributes" in predictions[0]
    assert predictions[-1]["contentType"] == "Positive Prompt"


@pytest.mark.django_db(transaction=True)
def test_predict_retired_model_with_auto_migration_is_served_by_its_successor(alice):
    alice.organization.auto_migrate_models = True
    alice.organization.save()
    response = predict(alice, prompt_body(sampleCount=1), model="imagen-4.0-fast-generate-001")
    assert response.status_code == 200, response.content
    job = Job.objects.get(public_id=response["x-imagegate-generation-id"])
    assert job.served_model == FLASH and "retired" in job.params["model_notice"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", CONTENT_PATHS)
def test_generate_content_answers_an_inline_image_part(alice, path):
    body = text_body(
        imageConfig={"aspectRatio": "9:16", "imageSize": "1k"}, thinkingConfig={"thinkingLevel": "HIGH"}
    )
    body["safetySettings"] = [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "block_low_and_above"},
    ]
    response = content(alice, body, path=path)
    assert response.status_code == 200, response.content
    data = response.json()
    (candidate,) = data["candidates"]
    assert candidate["finishReason"] == "STOP" and candidate["content"]["role"] == "model"
    inline = candidate["content"]["parts"][0]["inlineData"]
    assert inline["mimeType"] == "image/png" and decode(inline["data"]).size == (768, 1376)
    assert data["modelVersion"] == FLASH and data["responseId"].startswith("gen_")
    assert set(data["usageMetadata"]) == {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"}
    job = Job.objects.get(public_id=data["responseId"])
    assert job.count == 1 and job.params["safety_level"] == "block_low_and_above"  # the strictest


@pytest.mark.django_db(transaction=True)
def test_generate_content_safety_block_is_a_200_with_finish_reason(alice):
    response = content(alice, text_body("x [filtered]"))
    assert response.status_code == 200, response.content
    (candidate,) = response.json()["candidates"]
    assert candidate["finishReason"] == "IMAGE_SAFETY" and candidate["finishMessage"]
    assert candidate["content"]["parts"] == []


@pytest.mark.django_db(transaction=True)
def test_generate_content_is_tenant_scoped(alice, charlie):
    response = content(charlie, text_body("contoso"))
    public_id = response.json()["responseId"]
    assert Job.objects.get(public_id=public_id).organization == charlie.organization
    assert alice.client().get(f"/v1/generations/{public_id}").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_job_that_outlives_the_wait_is_504_deadline_exceeded(alice, settings):
    settings.COMPAT_WAIT_SECONDS = 1
    Route.objects.filter(account__name="sandbox", tier="fast").update(options={"latency_ms": 2500})
    response = content(alice, text_body("slow"))
    error = assert_google_error(response, 504, "DEADLINE_EXCEEDED")
    assert error["details"][0]["reason"] == "GENERATION_TIMEOUT"
    public_id = response["x-imagegate-generation-id"]
    assert alice.client().get(f"/v1/generations/{public_id}?wait=10").json()["status"] == "succeeded"


def test_bearer_key_works_on_the_vertex_resource_path(alice):
    """google-genai with vertexai=True, project, location and credentials=Credentials(token=KEY)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}")
    path = PREDICT_PATHS[3].format(model="imagen-9")
    assert_google_error(client.post(path, prompt_body(), format="json"), 404, "NOT_FOUND", "model")
