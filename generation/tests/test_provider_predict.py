"""Imagen `:predict` provider against the fake Google upstream over real HTTP."""

import io
import socket

import httpx
import pytest
from PIL import Image

from generation.engine.dimensions import IMAGEN_DIMENSIONS
from generation.engine.providers import predict
from generation.engine.providers.base import (
    ProviderRequest,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from tests.fake_upstream import PROJECT

pytestmark = pytest.mark.anyio

MODEL = "imagen-4.0-generate-001"


def imagen(fake_upstream, **kwargs):
    return fake_upstream.target(protocol="predict", model=MODEL, **kwargs)


def decoded(image) -> Image.Image:
    return Image.open(io.BytesIO(image.data))


async def test_gemini_api_call_shape_and_result(fake_upstream):
    request = ProviderRequest(prompt="a lighthouse at dusk", count=1, aspect_ratio="16:9")

    result = await fake_upstream.call(predict.generate, imagen(fake_upstream), request)

    assert len(result.images) == 1 and result.missing == 0 and result.error is None
    assert result.upstream_calls == 1
    image = result.images[0]
    assert image.mime_type == "image/png" and not image.filtered
    assert decoded(image).format == "PNG"
    (sent,) = fake_upstream.model_requests()
    assert sent["path"] == f"/v1beta/models/{MODEL}:predict"
    assert sent["headers"]["x-goog-api-key"] == "***" + fake_upstream.api_key[-4:]
    assert "authorization" not in sent["headers"]
    assert sent["body"] == {
        "instances": [{"prompt": "a lighthouse at dusk"}],
        "parameters": {
            "sampleCount": 1,
            "aspectRatio": "16:9",
            "sampleImageSize": "1K",
            "outputOptions": {"mimeType": "image/png"},
            "includeRaiReason": True,
        },
    }


async def test_vertex_service_account_uses_project_path_and_bearer(fake_upstream):
    target = imagen(fake_upstream, kind="vertex_ai", region="us-central1")

    result = await fake_upstream.call(predict.generate, target, ProviderRequest(prompt="a fox", count=2))

    assert len(result.images) == 2
    (sent,) = fake_upstream.model_requests()
    assert sent["path"] == (
        f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models/{MODEL}:predict"
    )
    assert sent["headers"]["authorization"].startswith("Bearer ***")
    assert "x-goog-api-key" not in sent["headers"]
    assert fake_upstream.stats()["token_refreshes"] == 1


async def test_vertex_express_uses_publisher_path_and_key(fake_upstream):
    target = imagen(fake_upstream, kind="vertex_ai", auth="api_key")

    result = await fake_upstream.call(predict.generate, target, ProviderRequest(prompt="a fox", count=1))

    assert len(result.images) == 1
    (sent,) = fake_upstream.model_requests()
    assert sent["path"] == f"/v1/publishers/google/models/{MODEL}:predict"
    assert "x-goog-api-key" in sent["headers"]


async def test_four_images_in_one_call(fake_upstream):
    result = await fake_upstream.call(
        predict.generate, imagen(fake_upstream), ProviderRequest(prompt="four cats", count=4)
    )

    assert len(result.images) == 4
    assert all(decoded(image).size == (1024, 1024) for image in result.images)
    (sent,) = fake_upstream.model_requests()
    assert sent["body"]["parameters"]["sampleCount"] == 4


@pytest.mark.parametrize("resolution", ["1K", "2K"])
@pytest.mark.parametrize("aspect_ratio", list(IMAGEN_DIMENSIONS["1K"]))
async def test_every_aspect_ratio_has_the_documented_size(fake_upstream, resolution, aspect_ratio):
    request = ProviderRequest(prompt="a map", count=1, aspect_ratio=aspect_ratio, resolution=resolution)

    result = await fake_upstream.call(predict.generate, imagen(fake_upstream), request)

    assert list(decoded(result.images[0]).size) == IMAGEN_DIMENSIONS[resolution][aspect_ratio]


async def test_jpeg_when_asked(fake_upstream):
    request = ProviderRequest(prompt="a fox", count=1, output_format="jpeg", compression_quality=80)

    result = await fake_upstream.call(predict.generate, imagen(fake_upstream), request)

    assert result.images[0].mime_type == "image/jpeg"
    assert decoded(result.images[0]).format == "JPEG"
    assert fake_upstream.model_requests()[0]["body"]["parameters"]["outputOptions"] == {
        "mimeType": "image/jpeg",
        "compressionQuality": 80,
    }


async def test_optional_parameters_are_sent_only_when_set(fake_upstream):
    request = ProviderRequest(
        prompt="a fox",
        count=1,
        seed=42,
        negative_prompt="blur",
        safety_level="block_only_high",
        person_generation="allow_adult",
    )

    await fake_upstream.call(predict.generate, imagen(fake_upstream, kind="vertex_ai"), request)
    await fake_upstream.call(predict.generate, imagen(fake_upstream), request)

    vertex, gemini = (r["body"]["parameters"] for r in fake_upstream.model_requests())
    expected = {"seed": 42, "negativePrompt": "blur", "safetySetting": "BLOCK_ONLY_HIGH"}
    assert vertex.items() >= {**expected, "personGeneration": "ALLOW_ADULT", "addWatermark": False}.items()
    assert gemini.items() >= expected.items()
    assert "addWatermark" not in gemini  # the Gemini API always watermarks


async def test_filtered_samples_are_flagged_and_not_delivered(fake_upstream):
    result = await fake_upstream.call(
        predict.generate, imagen(fake_upstream), ProviderRequest(prompt="a crowd [filter:2]", count=4)
    )

    delivered = [i for i in result.images if not i.filtered]
    filtered = [i for i in result.images if i.filtered]
    assert len(delivered) == 2 and len(filtered) == 2
    assert result.missing == 0
    assert all(i.data is None and "filtered out 2 generated images" in i.filter_reason for i in filtered)


async def test_all_samples_filtered(fake_upstream):
    result = await fake_upstream.call(
        predict.generate, imagen(fake_upstream), ProviderRequest(prompt="a crowd [filter:4]", count=3)
    )

    assert [i.filtered for i in result.images] == [True, True, True]
    assert "All images were filtered out" in result.images[0].filter_reason
    assert result.missing == 0 and result.error is None


async def test_blocked_prompt_is_a_content_block_not_a_bad_request(fake_upstream):
    result = await fake_upstream.call(
        predict.generate, imagen(fake_upstream), ProviderRequest(prompt="something [block-prompt]", count=2)
    )

    assert [i.filtered for i in result.images] == [True, True]
    assert result.images[0].filter_reason.startswith("The prompt could not be submitted")
    assert fake_upstream.model_requests()[0]["status"] == 400


async def test_rate_limit_with_retry_info(fake_upstream):
    fake_upstream.script(MODEL, [{"status": 429, "retry_delay": "0.2s"}])

    with pytest.raises(UpstreamRateLimited) as raised:
        await fake_upstream.call(
            predict.generate, imagen(fake_upstream), ProviderRequest(prompt="a", count=1)
        )

    assert raised.value.retry_after == pytest.approx(0.2)
    assert raised.value.upstream_status == "RESOURCE_EXHAUSTED"


async def test_vertex_list_wrapped_server_error(fake_upstream):
    fake_upstream.script(
        MODEL, [{"status": 500, "list_wrapped": True, "message": "Internal error encountered."}]
    )

    with pytest.raises(UpstreamServerError) as raised:
        await fake_upstream.call(
            predict.generate, imagen(fake_upstream, kind="vertex_ai"), ProviderRequest(prompt="a", count=1)
        )

    assert raised.value.upstream_status == "INTERNAL"
    assert "Internal error encountered." in raised.value.message


async def test_request_google_rejects_is_a_bad_request(fake_upstream):
    # Imagen has no 2:3; the fake validates like Google (our router validates before calling).
    request = ProviderRequest(prompt="a", count=1, aspect_ratio="2:3")

    with pytest.raises(UpstreamBadRequest) as raised:
        await fake_upstream.call(predict.generate, imagen(fake_upstream), request)

    assert "aspect ratio" in raised.value.message
    assert not raised.value.route_fault


async def test_unknown_model_is_not_found(fake_upstream):
    target = fake_upstream.target(protocol="predict", model="imagen-3.0-generate-002")

    with pytest.raises(UpstreamNotFound) as raised:
        await fake_upstream.call(predict.generate, target, ProviderRequest(prompt="a", count=1))

    assert "is not found for API version v1beta" in raised.value.message


async def test_wrong_api_key_is_an_auth_error(fake_upstream):
    fake_upstream.configure(api_key="a-different-key")

    with pytest.raises(UpstreamAuthError) as raised:
        await fake_upstream.call(
            predict.generate, imagen(fake_upstream), ProviderRequest(prompt="a", count=1)
        )

    assert raised.value.http_status == 400
    assert fake_upstream.api_key not in raised.value.message


async def test_slow_upstream_times_out(fake_upstream):
    fake_upstream.script(MODEL, [{"status": 200, "latency_ms": 3000}])

    with pytest.raises(UpstreamTimeout):
        await fake_upstream.call(
            predict.generate, imagen(fake_upstream, timeout_seconds=0.3), ProviderRequest(prompt="a", count=1)
        )


async def test_connection_refused(fake_upstream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = imagen(fake_upstream, base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(UpstreamConnectionError):
        await fake_upstream.call(predict.generate, target, ProviderRequest(prompt="a", count=1))


async def test_proxy_html_error_page(fake_upstream):
    fake_upstream.script("*", [{"status": 502, "body": "<html><h1>502 Bad Gateway</h1></html>"}])

    with pytest.raises(UpstreamServerError) as raised:
        await fake_upstream.call(
            predict.generate, imagen(fake_upstream), ProviderRequest(prompt="a", count=1)
        )

    assert "502 Bad Gateway" in raised.value.message


# Shapes the fake never sends, at the network edge.


def edge_target(fake_upstream, payload: object, status: int = 200):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload)

    return imagen(fake_upstream), httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_short_answer_without_reason_counts_as_missing(fake_upstream):
    png = "iVBORw0KGgo="
    target, client = edge_target(
        fake_upstream,
        {
            "predictions": [
                {"bytesBase64Encoded": png, "mimeType": "image/png"},
                {"contentType": "Positive Prompt", "safetyAttributes": {"categories": [], "scores": []}},
            ]
        },
    )
    async with client:
        result = await predict.generate(client, target, ProviderRequest(prompt="a", count=3))

    assert len(result.images) == 1 and result.images[0].data == b"\x89PNG\r\n\x1a\n"
    assert result.missing == 2
    assert isinstance(result.error, UpstreamProtocolError)


@pytest.mark.parametrize(
    "payload", [{}, {"predictions": []}, {"predictions": [{"contentType": "Positive Prompt"}]}]
)
async def test_answer_without_any_image_is_a_protocol_error(fake_upstream, payload):
    target, client = edge_target(fake_upstream, payload)
    async with client:
        with pytest.raises(UpstreamProtocolError):
            await predict.generate(client, target, ProviderRequest(prompt="a", count=1))


async def test_non_json_200_is_a_protocol_error(fake_upstream):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>captive portal</html>")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamProtocolError):
            await predict.generate(client, imagen(fake_upstream), ProviderRequest(prompt="a", count=1))
