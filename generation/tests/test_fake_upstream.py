"""The fake Google upstream speaks Google's wire format: routes, auth, validation, payloads,
hooks, scripted answers and the control API, all over real HTTP."""

import asyncio
import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import time_machine
from PIL import Image

from generation.engine.providers import vertex_auth
from tests.fake_upstream import PROJECT

ROOT = Path(__file__).resolve().parents[2]
IMAGEN = "imagen-4.0-fast-generate-001"
FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"


def predict_body(prompt: str = "a fox", **parameters) -> dict:
    return {"instances": [{"prompt": prompt}], "parameters": {"sampleCount": 1, **parameters}}


def content_body(prompt: str = "a fox", **image_config) -> dict:
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": image_config},
    }


def post(
    fake, path: str, body: object, *, key: str | None = "default", headers: dict | None = None
) -> httpx.Response:
    all_headers = dict(headers or {})
    if key is not None:
        all_headers["x-goog-api-key"] = fake.api_key if key == "default" else key
    return httpx.post(f"{fake.url}{path}", json=body, headers=all_headers, timeout=30)


def bearer(fake) -> dict:
    """A real token, fetched the way providers do (google-auth signs a JWT for the fake /token)."""
    token = asyncio.run(vertex_auth.TokenCache().access_token(fake.service_account_info()))
    return {"authorization": f"Bearer {token}"}


def image_of(data_b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_b64)))


def final_part(response: httpx.Response) -> dict:
    return response.json()["candidates"][0]["content"]["parts"][-1]


# Routes and auth


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/v1beta/models/{IMAGEN}:predict", predict_body()),
        (f"/v1/models/{IMAGEN}:predict", predict_body()),
        (f"/v1/publishers/google/models/{IMAGEN}:predict", predict_body()),
        (f"/v1beta1/publishers/google/models/{IMAGEN}:predict", predict_body()),
        (f"/v1beta/models/{FLASH}:generateContent", content_body()),
        (f"/v1/models/{FLASH}:generateContent", content_body()),
        (f"/v1/publishers/google/models/{PRO}:generateContent", content_body()),
        (f"/v1beta1/publishers/google/models/{FLASH}:generateContent", content_body()),
    ],
)
def test_api_key_families(fake_upstream, path, body):
    response = post(fake_upstream, path, body)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize(
    ("model", "method", "body"),
    [(IMAGEN, "predict", predict_body()), (FLASH, "generateContent", content_body())],
)
def test_vertex_project_family_takes_issued_bearer_tokens(fake_upstream, version, model, method, body):
    path = f"/{version}/projects/{PROJECT}/locations/global/publishers/google/models/{model}:{method}"

    assert post(fake_upstream, path, body, key=None, headers=bearer(fake_upstream)).status_code == 200
    denied = post(fake_upstream, path, body, key=None, headers={"authorization": "Bearer ya29.made-up"})
    assert denied.status_code == 401
    assert denied.json()["error"]["status"] == "UNAUTHENTICATED"


def test_tokens_expire(fake_upstream):
    path = f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/{FLASH}:generateContent"
    with time_machine.travel(datetime(2026, 11, 24, 9, 0, tzinfo=UTC), tick=True) as traveller:
        headers = bearer(fake_upstream)
        traveller.move_to(datetime(2026, 11, 24, 10, 0, tzinfo=UTC) + timedelta(seconds=1))
        response = post(fake_upstream, path, content_body(), key=None, headers=headers)

    assert response.status_code == 401


def test_wrong_key_is_400_like_google(fake_upstream):
    response = post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body(), key="wrong")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "API key not valid. Please pass a valid API key."
    assert error["details"][0]["reason"] == "API_KEY_INVALID"


def test_missing_key_is_403_like_google(fake_upstream):
    response = post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body(), key=None)

    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def test_key_in_query_string_and_open_mode(fake_upstream):
    path = f"/v1beta/models/{FLASH}:generateContent"
    assert (
        post(fake_upstream, f"{path}?key={fake_upstream.api_key}", content_body(), key=None).status_code
        == 200
    )

    fake_upstream.configure(api_key=None)

    assert post(fake_upstream, path, content_body(), key="anything").status_code == 200


def test_token_endpoint(fake_upstream):
    info = fake_upstream.service_account_info()
    bad = httpx.post(f"{fake_upstream.url}/token", data={"grant_type": "password", "assertion": "x"})
    assert bad.status_code == 400 and bad.json()["error"] == "unsupported_grant_type"

    claims = base64.urlsafe_b64encode(
        json.dumps({"iss": info["client_email"], "scope": "x"}).encode()
    ).decode()
    good = httpx.post(
        f"{fake_upstream.url}/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": f"e30.{claims}.sig"},
    )

    assert good.status_code == 200
    assert good.json()["expires_in"] == 3599 and good.json()["token_type"] == "Bearer"
    assert fake_upstream.stats()["token_refreshes_by_client"] == {info["client_email"]: 1}


# Validation


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [{"prompt": ""}], "parameters": {}}, "prompt is required"),
        ({"instances": [], "parameters": {}}, "instances"),
        (predict_body(sampleCount=5), "sampleCount"),
        (predict_body(sampleCount=0), "sampleCount"),
        (predict_body(aspectRatio="2:3"), "aspect ratio"),
        (predict_body(sampleImageSize="4K"), "sampleImageSize"),
        (predict_body(outputOptions={"mimeType": "image/gif"}), "mime type"),
    ],
)
def test_predict_validation(fake_upstream, body, fragment):
    response = post(fake_upstream, f"/v1beta/models/{IMAGEN}:predict", body)

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fragment in response.json()["error"]["message"]


def test_predict_size_is_case_insensitive_like_imagen(fake_upstream):
    response = post(fake_upstream, f"/v1beta/models/{IMAGEN}:predict", predict_body(sampleImageSize="2k"))

    assert response.status_code == 200
    assert image_of(response.json()["predictions"][0]["bytesBase64Encoded"]).size == (2048, 2048)


def test_vertex_seed_needs_watermark_off(fake_upstream):
    path = f"/v1/publishers/google/models/{IMAGEN}:predict"

    assert post(fake_upstream, path, predict_body(seed=1)).status_code == 400
    assert post(fake_upstream, path, predict_body(seed=1, addWatermark=False)).status_code == 200


@pytest.mark.parametrize(
    ("model", "body", "fragment"),
    [
        (FLASH, {"contents": []}, "contents is not specified"),
        (FLASH, {"contents": [{"parts": [{"text": "  "}]}]}, "must not be empty"),
        (
            FLASH,
            {**content_body(), "generationConfig": {"candidateCount": 2}},
            "Multiple candidates is not enabled",
        ),
        (FLASH, content_body(imageSize="1k"), "image size"),
        (PRO, content_body(imageSize="512"), "image size"),
        (PRO, content_body(aspectRatio="1:8"), "aspect ratio"),
        (
            FLASH,
            content_body(imageOutputOptions={"mimeType": "image/jpeg"}),
            'Unknown name "imageOutputOptions"',
        ),
        (
            FLASH,
            {
                **content_body(),
                "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "block_none"}],
            },
            "threshold",
        ),
    ],
)
def test_generate_content_validation(fake_upstream, model, body, fragment):
    response = post(fake_upstream, f"/v1beta/models/{model}:generateContent", body)

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1beta/models/imagen-3.0-generate-002:predict", predict_body()),
        (f"/v1beta/models/{FLASH}:predict", predict_body()),  # right model, wrong method
        ("/v1beta/models/gemini-2.5-flash:generateContent", content_body()),
    ],
)
def test_unknown_models_are_404_in_googles_shape(fake_upstream, path, body):
    response = post(fake_upstream, path, body)

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND" and "is not found for API version v1beta" in error["message"]


def test_malformed_json_is_400(fake_upstream):
    response = httpx.post(
        f"{fake_upstream.url}/v1beta/models/{FLASH}:generateContent",
        content=b"{not json",
        headers={"x-goog-api-key": fake_upstream.api_key},
    )

    assert response.status_code == 400
    assert "Invalid JSON payload" in response.json()["error"]["message"]


# Payloads


def test_a_1k_png_weighs_like_googles(fake_upstream):
    response = post(fake_upstream, f"/v1beta/models/{IMAGEN}:predict", predict_body())

    (prediction,) = response.json()["predictions"]
    png = base64.b64decode(prediction["bytesBase64Encoded"])
    assert prediction["mimeType"] == "image/png"
    assert 1_200_000 < len(png) < 1_900_000
    assert Image.open(io.BytesIO(png)).size == (1024, 1024)


def test_predict_jpeg(fake_upstream):
    response = post(
        fake_upstream,
        f"/v1beta/models/{IMAGEN}:predict",
        predict_body(outputOptions={"mimeType": "image/jpeg"}),
    )

    prediction = response.json()["predictions"][0]
    assert prediction["mimeType"] == "image/jpeg"
    assert image_of(prediction["bytesBase64Encoded"]).format == "JPEG"


def test_generate_content_jpeg_on_vertex(fake_upstream):
    response = post(
        fake_upstream,
        f"/v1/publishers/google/models/{FLASH}:generateContent",
        content_body(imageOutputOptions={"mimeType": "image/jpeg"}),
    )

    inline = final_part(response)["inlineData"]
    assert inline["mimeType"] == "image/jpeg" and image_of(inline["data"]).format == "JPEG"


@pytest.mark.parametrize(
    ("model", "size", "image_tokens"),
    [(FLASH, "512", 747), (FLASH, "1K", 1120), (FLASH, "2K", 1680), (PRO, "1K", 1120), (PRO, "2K", 1120)],
)
def test_generate_content_usage_and_envelope(fake_upstream, model, size, image_tokens):
    response = post(fake_upstream, f"/v1beta/models/{model}:generateContent", content_body(imageSize=size))

    payload = response.json()
    usage = payload["usageMetadata"]
    assert usage["candidatesTokensDetails"] == [{"modality": "IMAGE", "tokenCount": image_tokens}]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0)
    )
    assert payload["modelVersion"] == model and payload["responseId"]
    assert payload["candidates"][0]["finishReason"] == "STOP"
    assert "thoughtSignature" in final_part(response)


def test_thinking_level_high_costs_thought_tokens(fake_upstream):
    body = content_body()
    body["generationConfig"]["thinkingConfig"] = {"thinkingLevel": "HIGH"}

    response = post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", body)

    assert response.json()["usageMetadata"]["thoughtsTokenCount"] > 0


# Prompt hooks


def test_block_prompt_hook(fake_upstream):
    predict = post(fake_upstream, f"/v1beta/models/{IMAGEN}:predict", predict_body("x [block-prompt]"))
    content = post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body("x [block-prompt]"))

    assert predict.status_code == 400
    assert "The prompt could not be submitted" in predict.json()["error"]["message"]
    assert content.status_code == 200
    assert content.json()["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}
    assert "candidates" not in content.json() and content.json()["usageMetadata"]["promptTokenCount"] > 0


def test_filter_hook_on_predict(fake_upstream):
    some = post(
        fake_upstream,
        f"/v1beta/models/{IMAGEN}:predict",
        predict_body("x [filter:1]", sampleCount=3, includeRaiReason=True),
    )
    silent = post(
        fake_upstream, f"/v1beta/models/{IMAGEN}:predict", predict_body("x [filter:1]", sampleCount=3)
    )
    everything = post(
        fake_upstream,
        f"/v1beta/models/{IMAGEN}:predict",
        predict_body("x [filter:2]", sampleCount=2, includeRaiReason=True),
    )

    predictions = some.json()["predictions"]
    assert "filtered out 1 generated images" in predictions[0]["raiFilteredReason"]
    assert [("bytesBase64Encoded" in p) for p in predictions] == [False, True, True]
    assert len(silent.json()["predictions"]) == 2  # without includeRaiReason, filtered samples vanish
    assert [list(p) for p in everything.json()["predictions"]] == [["raiFilteredReason"]]


def test_filter_hook_on_generate_content_counts_calls_per_prompt(fake_upstream):
    path = f"/v1beta/models/{FLASH}:generateContent"
    answers = [post(fake_upstream, path, content_body("x [filter:2]")).json() for _ in range(3)]

    reasons = [a["candidates"][0]["finishReason"] for a in answers]
    assert reasons == ["IMAGE_SAFETY", "IMAGE_SAFETY", "STOP"]
    assert "filtered out" in answers[0]["candidates"][0]["finishMessage"]
    assert "parts" not in answers[0]["candidates"][0]["content"]


def test_no_image_hook(fake_upstream):
    response = post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body("x [no-image]"))

    candidate = response.json()["candidates"][0]
    assert candidate["finishReason"] == "NO_IMAGE"
    assert all("inlineData" not in part for part in candidate["content"]["parts"])


def test_thoughts_hook(fake_upstream):
    response = post(
        fake_upstream,
        f"/v1beta/models/{FLASH}:generateContent",
        content_body("x [thoughts]", aspectRatio="16:9"),
    )

    parts = response.json()["candidates"][0]["content"]["parts"]
    assert [("text" in p, "inlineData" in p, bool(p.get("thought"))) for p in parts] == [
        (True, False, True),
        (False, True, True),
        (True, False, False),
        (False, True, False),
    ]
    assert image_of(parts[1]["inlineData"]["data"]).size == (688, 384)
    assert image_of(parts[3]["inlineData"]["data"]).size == (1376, 768)


# Scripted answers, knobs and the control API


def test_scripted_answers_are_consumed_in_order_model_first(fake_upstream):
    fake_upstream.script("*", [{"status": 500}])
    fake_upstream.script(
        FLASH, [{"status": 429, "retry_delay": "0.2s", "retry_after": 1}, {"status": 200}, {"status": 503}]
    )
    path = f"/v1beta/models/{FLASH}:generateContent"

    answers = [post(fake_upstream, path, content_body()) for _ in range(5)]

    assert [a.status_code for a in answers] == [429, 200, 503, 500, 200]
    rate_limited = answers[0]
    assert rate_limited.headers["retry-after"] == "1"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"} in rate_limited.json()[
        "error"
    ]["details"]
    assert answers[2].json()["error"]["status"] == "UNAVAILABLE"


def test_scripted_list_wrapped_and_raw_bodies(fake_upstream):
    fake_upstream.script(
        IMAGEN, [{"status": 500, "list_wrapped": True}, {"status": 502, "body": "<html>bad gateway</html>"}]
    )
    path = f"/v1beta/models/{IMAGEN}:predict"

    wrapped, raw = post(fake_upstream, path, predict_body()), post(fake_upstream, path, predict_body())

    assert isinstance(wrapped.json(), list) and wrapped.json()[0]["error"]["code"] == 500
    assert raw.headers["content-type"].startswith("text/html") and raw.text == "<html>bad gateway</html>"


def test_latency_knobs(fake_upstream):
    path = f"/v1beta/models/{FLASH}:generateContent"
    fake_upstream.configure(latency_ms=400)
    started = time.monotonic()
    post(fake_upstream, path, content_body(imageSize="512"))
    configured = time.monotonic() - started

    fake_upstream.script(FLASH, [{"status": 200, "latency_ms": 0}])
    started = time.monotonic()
    post(fake_upstream, path, content_body(imageSize="512"))
    scripted = time.monotonic() - started

    assert configured >= 0.4 > scripted


def test_error_rate(fake_upstream):
    fake_upstream.configure(error_rate=1.0)

    answers = [
        post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body()) for _ in range(12)
    ]

    assert {a.status_code for a in answers} <= {429, 500, 503}
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"


def test_reset_forgets_scripts_config_and_logs(fake_upstream):
    fake_upstream.script("*", [{"status": 500}])
    fake_upstream.configure(error_rate=1.0, api_key="other")
    post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body(), key="other")

    fake_upstream.reset()

    assert fake_upstream.requests() == [] and fake_upstream.stats()["calls"] == 0
    assert post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body()).status_code == 200


@pytest.mark.parametrize(
    "knobs", [{"latency_ms": "slow"}, {"error_rate": -1}, {"api_key": 5}, {"colour": "red"}]
)
def test_config_rejects_nonsense(fake_upstream, knobs):
    response = httpx.post(f"{fake_upstream.url}/_fake/config", json=knobs)

    assert response.status_code == 400
    assert post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body()).status_code == 200


def test_request_log_redacts_credentials(fake_upstream):
    post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body("logged prompt"))
    post(
        fake_upstream,
        f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/{FLASH}:generateContent",
        content_body(),
        key=None,
        headers=bearer(fake_upstream),
    )

    log = fake_upstream.requests()
    first = log[0]
    assert first["method"] == "POST" and first["status"] == 200
    assert first["body"]["contents"][0]["parts"][0]["text"] == "logged prompt"
    assert first["headers"]["x-goog-api-key"] == "***" + fake_upstream.api_key[-4:]
    dumped = json.dumps(log)
    assert fake_upstream.api_key not in dumped
    assert "ya29." not in dumped and "BEGIN PRIVATE KEY" not in dumped


def test_stats(fake_upstream):
    post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body())
    post(fake_upstream, f"/v1beta/models/{FLASH}:generateContent", content_body())
    post(fake_upstream, f"/v1beta/models/{IMAGEN}:predict", predict_body())

    stats = fake_upstream.stats()

    assert stats["calls_by_model"] == {FLASH: 2, IMAGEN: 1}
    assert stats["calls_by_path"][f"/v1beta/models/{FLASH}:generateContent"] == 2
    assert stats["statuses"] == {"200": 3}


def test_many_concurrent_requests_overlap(fake_upstream):
    fake_upstream.configure(latency_ms=1000)
    path = f"{fake_upstream.url}/v1beta/models/{FLASH}:generateContent"
    body = content_body(imageSize="512")

    def one(_: int) -> int:
        return httpx.post(
            path, json=body, headers={"x-goog-api-key": fake_upstream.api_key}, timeout=30
        ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = list(pool.map(one, range(60)))
    elapsed = time.monotonic() - started

    assert statuses == [200] * 60
    assert elapsed < 10  # 60 x 1 s served one at a time would take a minute


@pytest.mark.slow
def test_module_entry_point_serves_the_fake():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "fakes.upstream",
        "--port",
        str(port),
        "--latency-ms",
        "0",
        "--api-key",
        "k-1",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "DEBUG": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/v1beta/models/{IMAGEN}:predict",
                    json=predict_body(),
                    headers={"x-goog-api-key": "k-1"},
                    timeout=10,
                )
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "fake_upstream did not start"
                time.sleep(0.2)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
