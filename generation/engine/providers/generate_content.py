"""Gemini image models (gemini-3.1-flash-image, gemini-3-pro-image) over `:generateContent`.

Google serves one image per call (`candidateCount` > 1 is a 400), so `count` images are `count`
concurrent calls. Invariants: `len(images) + missing == count`; content blocks arrive as HTTP 200
and become filtered images, never errors; usage is summed over every call that answered, blocked
ones included (Google bills their prompt and thinking tokens). With a seed, call i sends
`seed + i` so the images differ but the whole set is reproducible. Google has no negative
prompt here; `negative_prompt` is not sent.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
from dataclasses import dataclass

import httpx
import pybase64

from generation.engine.providers import google_http
from generation.engine.providers.base import (
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    Target,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
)

# finishReason values that mean "Google refused to produce this image" (not worth a retry).
BLOCK_FINISH_REASONS = frozenset(
    {
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_OTHER",
        "IMAGE_RECITATION",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
    }
)
SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
USAGE_KEYS = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount")
SEED_MODULUS = 2**31  # Google's seed is an int32


SERVICE_TIERS = ("standard", "flex", "priority")
SERVICE_TIER_HEADER = "x-gemini-service-tier"


@dataclass
class _Outcome:
    image: ProviderImage | None = None  # delivered or filtered
    error: UpstreamError | None = None  # set when this call produced neither
    usage: dict | None = None
    service_tier: str | None = None  # the tier that served this call


def requested_service_tier(target: Target) -> str | None:
    """The route's `service_tier` option when it is a non-default Google tier, else None."""
    value = str(target.options.get("service_tier") or "").lower()
    return value if value in ("flex", "priority") else None


def served_service_tier(headers, requested: str | None) -> str:
    """What served the call: Google's `x-gemini-service-tier` header (priority capacity runs out
    → "standard"), else what we asked for."""
    value = (headers.get(SERVICE_TIER_HEADER) or "").strip().lower() if headers is not None else ""
    if value in SERVICE_TIERS:
        return value
    return requested or "standard"


def build_body(target: Target, request: ProviderRequest, *, seed: int | None) -> dict:
    image_config: dict = {"aspectRatio": request.aspect_ratio, "imageSize": request.resolution}
    if target.kind == "vertex_ai":
        # Only Vertex knows these imageConfig fields; the Gemini API rejects them as unknown names.
        if request.output_format == "jpeg":
            output_options: dict = {"mimeType": "image/jpeg"}
            if request.compression_quality is not None:
                output_options["compressionQuality"] = request.compression_quality
            image_config["imageOutputOptions"] = output_options
        if request.person_generation:
            image_config["personGeneration"] = request.person_generation.upper()
    generation_config: dict = {"responseModalities": ["IMAGE"], "imageConfig": image_config}
    thinking_level = target.options.get("thinking_level")
    if thinking_level:
        generation_config["thinkingConfig"] = {"thinkingLevel": thinking_level}
    if seed is not None:
        generation_config["seed"] = seed
    body: dict = {
        "contents": [{"role": "user", "parts": input_parts(request)}],
        "generationConfig": generation_config,
    }
    service_tier = requested_service_tier(target)
    if service_tier:
        body["service_tier"] = service_tier  # standard is the default: not sent
    if request.safety_level:
        threshold = request.safety_level.upper()
        body["safetySettings"] = [{"category": c, "threshold": threshold} for c in SAFETY_CATEGORIES]
    return body


MASK_INSTRUCTION = (
    "The last image is a mask for the first image: change only the areas that are white in the "
    "mask and keep everything under its black areas exactly as it is."
)


def input_parts(request: ProviderRequest) -> list[dict]:
    """The user turn: the prompt, then each input image as an inlineData part (Gemini takes them
    as reference images or the image to edit), then the mask, if any, as one more image with an
    instruction: Gemini has no mask field, it follows the mask as an image it is told about."""
    parts: list[dict] = [{"text": request.prompt}]
    for image in request.input_images:
        parts.append({"inlineData": {"mimeType": image.mime_type, "data": _b64(image.data)}})
    if request.input_mask is not None:
        mask = request.input_mask
        parts.append({"text": MASK_INSTRUCTION})
        parts.append({"inlineData": {"mimeType": mask.mime_type, "data": _b64(mask.data)}})
    return parts


def _b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


async def generate(client: httpx.AsyncClient, target: Target, request: ProviderRequest) -> ProviderResult:
    seeds = [
        None if request.seed is None else (request.seed + i) % SEED_MODULUS for i in range(request.count)
    ]
    outcomes = await asyncio.gather(*(_call(client, target, request, seed) for seed in seeds))

    images = [o.image for o in outcomes if o.image is not None]
    errors = [o.error for o in outcomes if o.error is not None]
    usage = _sum_usage([o.usage for o in outcomes if o.usage is not None])
    if not images:
        raise _most_informative(errors)
    tiers = [o.service_tier for o in outcomes if o.image is not None and o.service_tier]
    return ProviderResult(
        images=images,
        missing=len(errors),
        error=errors[0] if errors else None,
        usage=usage,
        upstream_calls=len(outcomes),
        service_tier=collections.Counter(tiers).most_common(1)[0][0] if tiers else None,
    )


async def _call(
    client: httpx.AsyncClient, target: Target, request: ProviderRequest, seed: int | None
) -> _Outcome:
    try:
        payload, headers = await google_http.post_with_headers(
            client, target, "generateContent", build_body(target, request, seed=seed)
        )
    except UpstreamError as exc:
        return _Outcome(error=exc)
    outcome = parse_response(payload, request)
    outcome.service_tier = served_service_tier(headers, requested_service_tier(target))
    return outcome


def parse_response(payload: dict, request: ProviderRequest) -> _Outcome:
    """One generateContent answer: the final non-thought image, a block, or a protocol error."""
    usage = payload.get("usageMetadata") if isinstance(payload.get("usageMetadata"), dict) else None
    candidates = payload.get("candidates") or []
    if not candidates:
        feedback = payload.get("promptFeedback") or {}
        reason = feedback.get("blockReason")
        if reason:
            return _Outcome(image=_filtered(feedback.get("blockReasonMessage") or reason), usage=usage)
        return _unusable("Gemini answered 200 without candidates", usage)

    candidate = candidates[0]
    final = None
    # Thinking models may emit interim "thought" images first; the last non-thought image is the answer.
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue
        inline = part.get("inlineData")
        if inline and inline.get("data"):
            final = inline
    if final is not None:
        try:
            data = pybase64.b64decode(final["data"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            return _unusable("Gemini returned undecodable image bytes", usage)
        fallback_mime = "image/jpeg" if request.output_format == "jpeg" else "image/png"
        return _Outcome(
            image=ProviderImage(data=data, mime_type=final.get("mimeType") or fallback_mime), usage=usage
        )

    finish_reason = candidate.get("finishReason")
    if finish_reason in BLOCK_FINISH_REASONS:
        return _Outcome(image=_filtered(candidate.get("finishMessage") or finish_reason), usage=usage)
    # NO_IMAGE (the model answered in text only) and anything unexpected: worth another try.
    return _unusable(f"Gemini answered 200 without an image (finishReason={finish_reason})", usage)


def _unusable(message: str, usage: dict | None) -> _Outcome:
    # Still billed by Google (usage is kept), but nothing to deliver; retryable.
    return _Outcome(error=UpstreamProtocolError(message, http_status=200), usage=usage)


def _sum_usage(usages: list[dict]) -> dict:
    total = dict.fromkeys((*USAGE_KEYS, "imageTokenCount"), 0)
    for usage in usages:
        for key in USAGE_KEYS:
            total[key] += int(usage.get(key) or 0)
        for detail in usage.get("candidatesTokensDetails") or []:
            if detail.get("modality") == "IMAGE":
                total["imageTokenCount"] += int(detail.get("tokenCount") or 0)
    return total


def _most_informative(errors: list[UpstreamError]) -> UpstreamError:
    """All calls failed: the error the router should act on. A non-retryable one (bad request,
    auth) decides the outcome whatever the others say; among rate limits, the longest wait."""
    for error in errors:
        if not error.retryable:
            return error
    rate_limited = [e for e in errors if isinstance(e, UpstreamRateLimited)]
    if rate_limited:
        return max(rate_limited, key=lambda e: e.retry_after or 0.0)
    return errors[0]


def _filtered(reason: str) -> ProviderImage:
    return ProviderImage(data=None, mime_type=None, filtered=True, filter_reason=reason)
