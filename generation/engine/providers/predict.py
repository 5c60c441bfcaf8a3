"""Imagen 4 over `:predict` (Gemini Developer API, Vertex AI, Vertex express mode).

One call returns up to `sampleCount` images. Invariants: `len(images) + missing == count`;
images Google filtered are returned flagged (never counted as delivered); a 400 "the prompt could
not be submitted" is a content block (all images filtered), not a bad request.
"""

from __future__ import annotations

import binascii

import httpx
import pybase64

from generation.engine.providers import google_http
from generation.engine.providers.base import (
    WRONG_SHAPE,
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    Target,
    UpstreamBadRequest,
    UpstreamProtocolError,
    wrong_shape,
)

# Google rejects prompts with "sensitive words" before generating, as a 400 INVALID_ARGUMENT.
PROMPT_BLOCKED_MARKER = "The prompt could not be submitted"


def build_body(target: Target, request: ProviderRequest) -> dict:
    output_options: dict = {"mimeType": "image/jpeg" if request.output_format == "jpeg" else "image/png"}
    if request.output_format == "jpeg" and request.compression_quality is not None:
        output_options["compressionQuality"] = request.compression_quality
    parameters: dict = {
        "sampleCount": request.count,
        "aspectRatio": request.aspect_ratio,
        "sampleImageSize": request.resolution,
        "outputOptions": output_options,
        # Without it a filtered sample silently disappears; with it we can tell "filtered" from "lost".
        "includeRaiReason": True,
    }
    if request.seed is not None:
        parameters["seed"] = request.seed
        if target.kind == "vertex_ai":
            parameters["addWatermark"] = False  # Vertex ignores/rejects a seed while watermarking
    if request.negative_prompt:
        parameters["negativePrompt"] = request.negative_prompt
    if request.safety_level:
        parameters["safetySetting"] = request.safety_level.upper()
    if request.person_generation:
        parameters["personGeneration"] = request.person_generation.upper()
    return {"instances": [{"prompt": request.prompt}], "parameters": parameters}


async def generate(client: httpx.AsyncClient, target: Target, request: ProviderRequest) -> ProviderResult:
    try:
        payload = await google_http.post(client, target, "predict", build_body(target, request))
    except UpstreamBadRequest as exc:
        if PROMPT_BLOCKED_MARKER in exc.message:
            # Keep Google's own words from the marker on; they say why and carry a support code.
            reason = exc.message[exc.message.index(PROMPT_BLOCKED_MARKER) :]
            return ProviderResult(images=[_filtered(reason) for _ in range(request.count)], upstream_calls=1)
        raise
    try:
        return parse_response(payload, request)
    except WRONG_SHAPE as exc:
        raise wrong_shape("predict", exc) from None


def parse_response(payload: dict, request: ProviderRequest) -> ProviderResult:
    predictions = payload.get("predictions") or []
    fallback_mime = "image/jpeg" if request.output_format == "jpeg" else "image/png"
    delivered: list[ProviderImage] = []
    filtered: list[ProviderImage] = []
    filter_reason: str | None = None
    for element in predictions:
        if not isinstance(element, dict):
            continue
        data = element.get("bytesBase64Encoded")
        if data:
            try:
                image_bytes = pybase64.b64decode(data, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise UpstreamProtocolError("Google predict returned undecodable image bytes") from None
            delivered.append(
                ProviderImage(data=image_bytes, mime_type=element.get("mimeType") or fallback_mime)
            )
        elif element.get("raiFilteredReason"):
            filter_reason = str(element["raiFilteredReason"])
            filtered.append(_filtered(filter_reason))
        # Anything else ("Positive Prompt" safety attributes, `contentType` rows) is not an image.

    if not delivered and not filtered:
        raise UpstreamProtocolError("Google predict answered 200 without any image or filter reason")
    count = request.count
    images = (delivered + filtered)[:count]
    shortfall = count - len(images)
    if shortfall and filter_reason:
        # Google reports several filtered samples in one element ("filtered out 2 generated
        # images", "All images were filtered out"), so the rest of the shortfall is filtered too.
        images += [_filtered(filter_reason) for _ in range(shortfall)]
        shortfall = 0
    error = None
    if shortfall:
        error = UpstreamProtocolError(
            f"Google predict returned {len(images)} of {count} images without saying why", http_status=200
        )
    return ProviderResult(images=images, missing=shortfall, error=error, upstream_calls=1)


def _filtered(reason: str) -> ProviderImage:
    return ProviderImage(data=None, mime_type=None, filtered=True, filter_reason=reason)
