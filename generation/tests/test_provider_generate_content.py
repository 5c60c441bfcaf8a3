"""Gemini image models over `:generateContent`, against the fake Google upstream over real HTTP."""

import base64
import io
import json
import socket

import httpx
import pytest
from PIL import Image

from generation.engine.dimensions import GEMINI_FLASH_DIMENSIONS, GEMINI_PRO_DIMENSIONS
from generation.engine.providers import generate_content
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

FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"


def decoded(image) -> Image.Image:
    return Image.open(io.BytesIO(image.data))


async def test_gemini_api_call_shape_and_result(fake_upstream):
    target = fake_upstream.target(options={"thinking_level": "MINIMAL"})
    request = ProviderRequest(prompt="a red apple", count=1, aspect_ratio="16:9", resolution="1K")

    result = await fake_upstream.call(generate_content.generate, target, request)

    assert len(result.images) == 1 and result.missing == 0 and result.upstream_calls == 1
    assert result.images[0].mime_type == "image/png"
    assert decoded(result.images[0]).size == (1376, 768)
    (sent,) = fake_upstream.model_requests()
    assert sent["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert "x-goog-api-key" in sent["headers"]
    assert sent["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "a red apple"}]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "1K"},
            "thinkingConfig": {"thinkingLevel": "MINIMAL"},
        },
    }
    assert result.usage == {
        "promptTokenCount": 2,
        "candidatesTokenCount": 1120,
        "thoughtsTokenCount": 0,
        "totalTokenCount": 1122,
        "imageTokenCount": 1120,
    }


async def test_no_thinking_config_without_the_option(fake_upstream):
    await fake_upstream.call(
        generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="a", count=1)
    )

    assert "thinkingConfig" not in fake_upstream.model_requests()[0]["body"]["generationConfig"]


async def test_vertex_service_account_uses_global_project_path_and_bearer(fake_upstream):
    target = fake_upstream.target(kind="vertex_ai", model=PRO)

    result = await fake_upstream.call(generate_content.generate, target, ProviderRequest(prompt="a", count=1))

    assert len(result.images) == 1
    assert result.usage["thoughtsTokenCount"] == 180  # pro always thinks
    (sent,) = fake_upstream.model_requests()
    assert (
        sent["path"]
        == f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/{PRO}:generateContent"
    )
    assert sent["headers"]["authorization"].startswith("Bearer ***")


async def test_vertex_express_uses_publisher_path_and_key(fake_upstream):
    target = fake_upstream.target(kind="vertex_ai", auth="api_key")

    result = await fake_upstream.call(generate_content.generate, target, ProviderRequest(prompt="a", count=1))

    assert len(result.images) == 1
    (sent,) = fake_upstream.model_requests()
    assert sent["path"] == f"/v1/publishers/google/models/{FLASH}:generateContent"
    assert "x-goog-api-key" in sent["headers"]


@pytest.mark.parametrize("kind", ["gemini_api", "vertex_ai"])
async def test_four_images_are_four_concurrent_calls(fake_upstream, kind):
    fake_upstream.configure(latency_ms=300)
    target = fake_upstream.target(kind=kind)
    request = ProviderRequest(prompt="four apples", count=4, seed=7)

    result = await fake_upstream.call(generate_content.generate, target, request)

    assert len(result.images) == 4 and result.missing == 0
    assert result.upstream_calls == 4
    assert result.usage["imageTokenCount"] == 4 * 1120
    assert result.usage["totalTokenCount"] == 4 * (1120 + 2)
    sent = fake_upstream.model_requests()
    assert len(sent) == 4
    assert sorted(r["body"]["generationConfig"]["seed"] for r in sent) == [7, 8, 9, 10]
    assert fake_upstream.stats()["token_refreshes"] == (1 if kind == "vertex_ai" else 0)
    # Concurrent, not sequential: all four were received before the first answer went out.
    assert max(r["at"] for r in sent) - min(r["at"] for r in sent) < 0.25


@pytest.mark.parametrize("aspect_ratio", list(GEMINI_FLASH_DIMENSIONS["1K"]))
async def test_every_flash_aspect_ratio_has_the_documented_size(fake_upstream, aspect_ratio):
    request = ProviderRequest(prompt="a map", count=1, aspect_ratio=aspect_ratio)

    result = await fake_upstream.call(generate_content.generate, fake_upstream.target(), request)

    assert list(decoded(result.images[0]).size) == GEMINI_FLASH_DIMENSIONS["1K"][aspect_ratio]


@pytest.mark.parametrize("aspect_ratio", list(GEMINI_PRO_DIMENSIONS["2K"]))
async def test_every_pro_aspect_ratio_has_the_documented_size(fake_upstream, aspect_ratio):
    target = fake_upstream.target(kind="vertex_ai", model=PRO)
    request = ProviderRequest(prompt="a map", count=1, aspect_ratio=aspect_ratio, resolution="2K")

    result = await fake_upstream.call(generate_content.generate, target, request)

    assert list(decoded(result.images[0]).size) == GEMINI_PRO_DIMENSIONS["2K"][aspect_ratio]


@pytest.mark.parametrize(("resolution", "image_tokens"), [("512", 747), ("2K", 1680), ("4K", 2520)])
async def test_resolutions_have_their_size_and_token_count(fake_upstream, resolution, image_tokens):
    request = ProviderRequest(prompt="a map", count=1, aspect_ratio="16:9", resolution=resolution)

    result = await fake_upstream.call(generate_content.generate, fake_upstream.target(), request)

    assert list(decoded(result.images[0]).size) == GEMINI_FLASH_DIMENSIONS[resolution]["16:9"]
    assert result.usage["imageTokenCount"] == image_tokens


async def test_jpeg_on_vertex_is_requested_and_delivered(fake_upstream):
    target = fake_upstream.target(kind="vertex_ai")
    request = ProviderRequest(
        prompt="a", count=1, output_format="jpeg", compression_quality=70, person_generation="allow_adult"
    )

    result = await fake_upstream.call(generate_content.generate, target, request)

    assert result.images[0].mime_type == "image/jpeg"
    assert decoded(result.images[0]).format == "JPEG"
    image_config = fake_upstream.model_requests()[0]["body"]["generationConfig"]["imageConfig"]
    assert image_config["imageOutputOptions"] == {"mimeType": "image/jpeg", "compressionQuality": 70}
    assert image_config["personGeneration"] == "ALLOW_ADULT"


async def test_gemini_api_never_sends_vertex_only_fields(fake_upstream):
    # The Gemini API rejects imageOutputOptions/personGeneration as unknown fields (the fake too).
    request = ProviderRequest(prompt="a", count=1, output_format="jpeg", person_generation="allow_adult")

    result = await fake_upstream.call(generate_content.generate, fake_upstream.target(), request)

    assert result.images[0].mime_type == "image/png"  # what Google sent; transcoding is not our job here
    assert fake_upstream.model_requests()[0]["body"]["generationConfig"]["imageConfig"] == {
        "aspectRatio": "1:1",
        "imageSize": "1K",
    }


async def test_safety_setting_covers_the_four_categories(fake_upstream):
    request = ProviderRequest(prompt="a", count=1, safety_level="block_medium_and_above")

    await fake_upstream.call(generate_content.generate, fake_upstream.target(), request)

    assert fake_upstream.model_requests()[0]["body"]["safetySettings"] == [
        {"category": category, "threshold": "BLOCK_MEDIUM_AND_ABOVE"}
        for category in (
            "HARM_CATEGORY_HARASSMENT",
            "HARM_CATEGORY_HATE_SPEECH",
            "HARM_CATEGORY_SEXUALLY_EXPLICIT",
            "HARM_CATEGORY_DANGEROUS_CONTENT",
        )
    ]


async def test_filtered_image_is_flagged_and_not_delivered(fake_upstream):
    result = await fake_upstream.call(
        generate_content.generate,
        fake_upstream.target(),
        ProviderRequest(prompt="a crowd [filter:1]", count=4),
    )

    filtered = [i for i in result.images if i.filtered]
    assert len(result.images) == 4 and len(filtered) == 1 and result.missing == 0
    assert filtered[0].data is None
    assert "filtered out because it violated" in filtered[0].filter_reason
    assert result.usage["imageTokenCount"] == 3 * 1120  # the blocked call produced no image tokens


async def test_prompt_block(fake_upstream):
    result = await fake_upstream.call(
        generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="x [block-prompt]", count=2)
    )

    assert [(i.filtered, i.filter_reason) for i in result.images] == [(True, "PROHIBITED_CONTENT")] * 2
    assert result.usage["promptTokenCount"] > 0  # blocked prompts are still billed for input


async def test_thoughts_are_skipped_and_the_final_image_wins(fake_upstream):
    request = ProviderRequest(prompt="a castle [thoughts]", count=1, aspect_ratio="4:3")

    result = await fake_upstream.call(generate_content.generate, fake_upstream.target(), request)

    (image,) = result.images
    assert decoded(image).size == (1200, 896)  # the thought image is half that size


async def test_no_image_is_a_retryable_protocol_error(fake_upstream):
    with pytest.raises(UpstreamProtocolError) as raised:
        await fake_upstream.call(
            generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="x [no-image]", count=1)
        )

    assert "NO_IMAGE" in raised.value.message
    assert raised.value.retryable


async def test_partial_failure_returns_what_arrived(fake_upstream):
    fake_upstream.script(FLASH, [{"status": 503}])

    result = await fake_upstream.call(
        generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="four apples", count=4)
    )

    assert len(result.images) == 3 and not any(i.filtered for i in result.images)
    assert result.missing == 1
    assert isinstance(result.error, UpstreamServerError) and result.error.upstream_status == "UNAVAILABLE"
    assert result.upstream_calls == 4
    assert result.usage["imageTokenCount"] == 3 * 1120


async def test_all_calls_failing_raises_the_non_retryable_error(fake_upstream):
    fake_upstream.script(
        FLASH,
        [{"status": 429, "retry_delay": "1s"}, {"status": 503}, {"status": 400, "message": "Bad thing."}],
    )

    with pytest.raises(UpstreamBadRequest) as raised:
        await fake_upstream.call(
            generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="a", count=3)
        )

    assert "Bad thing." in raised.value.message


async def test_all_calls_rate_limited_raises_with_the_longest_wait(fake_upstream):
    fake_upstream.script(
        FLASH, [{"status": 429, "retry_delay": "0.5s"}, {"status": 429, "retry_delay": "2s"}]
    )

    with pytest.raises(UpstreamRateLimited) as raised:
        await fake_upstream.call(
            generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="a", count=2)
        )

    assert raised.value.retry_after == 2.0


async def test_vertex_list_wrapped_rate_limit(fake_upstream):
    fake_upstream.script("*", [{"status": 429, "list_wrapped": True, "retry_delay": "0.2s"}])

    with pytest.raises(UpstreamRateLimited) as raised:
        await fake_upstream.call(
            generate_content.generate,
            fake_upstream.target(kind="vertex_ai"),
            ProviderRequest(prompt="a", count=1),
        )

    assert raised.value.retry_after == pytest.approx(0.2)


async def test_bad_request_from_google(fake_upstream):
    request = ProviderRequest(prompt="a", count=1, aspect_ratio="1:8")  # flash only, not pro

    with pytest.raises(UpstreamBadRequest) as raised:
        await fake_upstream.call(generate_content.generate, fake_upstream.target(model=PRO), request)

    assert "aspect ratio" in raised.value.message


async def test_unknown_model_is_not_found(fake_upstream):
    target = fake_upstream.target(model="gemini-2.0-flash")

    with pytest.raises(UpstreamNotFound):
        await fake_upstream.call(generate_content.generate, target, ProviderRequest(prompt="a", count=2))


async def test_wrong_api_key_is_an_auth_error(fake_upstream):
    fake_upstream.configure(api_key="a-different-key")

    with pytest.raises(UpstreamAuthError):
        await fake_upstream.call(
            generate_content.generate, fake_upstream.target(), ProviderRequest(prompt="a", count=1)
        )


async def test_vertex_permission_denied_is_an_auth_error(fake_upstream):
    fake_upstream.script(
        FLASH, [{"status": 403, "message": "Permission 'aiplatform.endpoints.predict' denied."}]
    )

    with pytest.raises(UpstreamAuthError) as raised:
        await fake_upstream.call(
            generate_content.generate,
            fake_upstream.target(kind="vertex_ai"),
            ProviderRequest(prompt="a", count=1),
        )

    assert raised.value.upstream_status == "PERMISSION_DENIED"


async def test_slow_upstream_times_out(fake_upstream):
    fake_upstream.script(FLASH, [{"status": 200, "latency_ms": 3000}])
    target = fake_upstream.target(timeout_seconds=0.3)

    with pytest.raises(UpstreamTimeout):
        await fake_upstream.call(generate_content.generate, target, ProviderRequest(prompt="a", count=1))


async def test_connection_refused(fake_upstream):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = fake_upstream.target(base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(UpstreamConnectionError):
        await fake_upstream.call(generate_content.generate, target, ProviderRequest(prompt="a", count=2))


# Shapes the fake never sends, at the network edge.

PNG_1 = base64.b64encode(b"\x89PNG first").decode()
PNG_2 = base64.b64encode(b"\x89PNG second").decode()


async def answer(fake_upstream, payload: dict) -> tuple:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=payload)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        try:
            result = await generate_content.generate(
                client, fake_upstream.target(), ProviderRequest(prompt="a", count=1)
            )
        except UpstreamProtocolError as exc:
            return None, exc
    return result, None


async def test_a_thought_image_after_the_final_one_is_still_skipped(fake_upstream):
    parts = [
        {"inlineData": {"mimeType": "image/png", "data": PNG_1}},
        {"inlineData": {"mimeType": "image/png", "data": PNG_2}, "thought": True},
    ]

    result, _ = await answer(
        fake_upstream, {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}
    )

    assert result.images[0].data == b"\x89PNG first"


async def test_the_last_of_several_final_images_wins(fake_upstream):
    parts = [{"inlineData": {"mimeType": "image/png", "data": d}} for d in (PNG_1, PNG_2)]

    result, _ = await answer(fake_upstream, {"candidates": [{"content": {"parts": parts}}]})

    assert result.images[0].data == b"\x89PNG second"


@pytest.mark.parametrize("reason", sorted(generate_content.BLOCK_FINISH_REASONS))
async def test_block_finish_reasons_are_filtered(fake_upstream, reason):
    result, _ = await answer(
        fake_upstream, {"candidates": [{"content": {"role": "model"}, "finishReason": reason}]}
    )

    assert result.images[0].filtered and result.images[0].filter_reason == reason


async def test_prompt_block_message_is_preferred(fake_upstream):
    payload = {"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": "Blocked for reasons."}}

    result, _ = await answer(fake_upstream, payload)

    assert result.images[0].filter_reason == "Blocked for reasons."


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"candidates": [{"content": {"parts": [{"text": "just words"}]}, "finishReason": "STOP"}]},
        {"candidates": [{"finishReason": "MALFORMED_RESPONSE"}]},
        {"candidates": [{"content": {"parts": [{"inlineData": {"data": "@@not base64@@"}}]}}]},
    ],
)
async def test_unusable_answers_are_protocol_errors(fake_upstream, payload):
    result, error = await answer(fake_upstream, payload)

    assert result is None and isinstance(error, UpstreamProtocolError)


@pytest.mark.parametrize(
    "body",
    [
        {"candidates": "not a list"},
        {"candidates": [{"content": {"parts": [{"inlineData": {"data": 5, "mimeType": "image/png"}}]}}]},
        {"candidates": [{"content": {"parts": "nope"}}]},
    ],
)
async def test_valid_json_of_the_wrong_shape_is_a_retryable_route_fault(fake_upstream, body):
    """A 200 of the wrong shape is failed over like a 5xx, never an internal error of ours."""
    fake_upstream.script(
        FLASH, [{"status": 200, "body": json.dumps(body), "content_type": "application/json"}]
    )
    request = ProviderRequest(prompt="a red apple", count=1)
    with pytest.raises(UpstreamProtocolError) as caught:
        await fake_upstream.call(generate_content.generate, fake_upstream.target(), request)
    assert caught.value.retryable and caught.value.route_fault
