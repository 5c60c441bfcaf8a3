"""OpenAI images API: `POST /v1/images/generations` and `POST /v1/images/edits`, synchronous, in
OpenAI's request and error shapes.

Works with `OpenAI(base_url="https://host/v1", api_key=KEY).images.generate(...)` and
`.images.edit(image=..., mask=..., prompt=...)` unchanged. Edits are multipart: `image` (one file)
or `image[]` (several; as many as the tier's model takes), an optional `mask` (OpenAI's meaning:
fully transparent pixels mark where to edit; without alpha, white marks it), and the same fields
as generations. For edits, `size` auto (or omitted) keeps the first image's shape: the nearest of
1:1, 4:3, 3:4, 16:9, 9:16. `input_fidelity` is accepted and has no effect (the model keeps what
it keeps); `safety_identifier` is kept in the job's metadata like `user`.

`size` → aspect ratio (the nearest ratio every model serves; pixels follow the model's table):

    auto (or omitted), 1024x1024, 256x256, 512x512 → 1:1
    1792x1024 → 16:9      1536x1024 → 4:3       (1.75 is nearest 16:9, 1.5 is nearest 4:3)
    1024x1792 → 9:16      1024x1536 → 3:4
    anything else → 400 param=size

`model`: one of our tiers or aliases (`fast`, `standard`, `ultra`, `imagen-4-fast`, `imagen-4`,
`imagen-4-ultra`) or a concrete model id (`gemini-3.1-flash-image`, …). OpenAI's own model names
(`gpt-image-*`, `dall-e-*`) or no model pick the tier from `quality`: `high`/`hd` → standard,
`auto`/`low`/`medium`/`standard` → fast. With one of our models, `quality` is validated only.
`n` 1–4; `response_format` b64_json (default) | url (signed, expiring); `output_format` png | jpeg |
webp; `output_compression` 0–100 (jpeg/webp); `moderation` auto | low (→ safety level
block_only_high); `background` auto | opaque; `user` is kept in the job's metadata.
"""

from __future__ import annotations

import io
from datetime import datetime

from drf_spectacular.utils import extend_schema
from PIL import Image as PILImage
from rest_framework import serializers
from rest_framework.response import Response

from generation.api.files import multipart_of, upload_read
from generation.documents import job_render
from tenants.errors import InvalidRequest

from .base import CompatAPIView, image_base64, uncompressed
from .errors import ContentFiltered, render_openai_error

SIZES = {
    "auto": "1:1",
    "256x256": "1:1",
    "512x512": "1:1",
    "1024x1024": "1:1",
    "1792x1024": "16:9",
    "1536x1024": "4:3",
    "1024x1792": "9:16",
    "1024x1536": "3:4",
}
QUALITY_TIERS = {
    "auto": "fast",
    "low": "fast",
    "medium": "fast",
    "standard": "fast",
    "high": "standard",
    "hd": "standard",
}
OPENAI_MODEL_PREFIXES = ("gpt-image", "dall-e", "chatgpt-image")


class ImageGenerationInputSerializer(serializers.Serializer):
    prompt = serializers.CharField(max_length=4000)
    model = serializers.CharField(max_length=100, required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True)
    size = serializers.CharField(max_length=20, required=False, allow_null=True)
    quality = serializers.CharField(max_length=20, required=False, allow_null=True)
    response_format = serializers.CharField(max_length=20, required=False, allow_null=True)
    output_format = serializers.CharField(max_length=10, required=False, allow_null=True)
    output_compression = serializers.IntegerField(required=False, allow_null=True)
    moderation = serializers.CharField(max_length=10, required=False, allow_null=True)
    background = serializers.CharField(max_length=20, required=False, allow_null=True)
    user = serializers.CharField(max_length=500, required=False, allow_null=True, allow_blank=True)
    stream = serializers.BooleanField(required=False, allow_null=True)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: [f"Unknown parameter: '{unknown[0]}'."]})
        return super().to_internal_value(data)

    def validate_n(self, value):
        if value is not None and not 1 <= value <= 4:
            raise serializers.ValidationError(f"Invalid value {value} for 'n': must be between 1 and 4.")
        return value

    def validate_size(self, value):
        if value is not None and value not in SIZES:
            raise serializers.ValidationError(
                f"Invalid value '{value}' for 'size'. Supported values are: {', '.join(SIZES)}."
            )
        return value

    def validate_quality(self, value):
        if value is not None and value not in QUALITY_TIERS:
            raise serializers.ValidationError(
                f"Invalid value '{value}' for 'quality'. Supported values are: {', '.join(QUALITY_TIERS)}."
            )
        return value

    def validate_response_format(self, value):
        if value is not None and value not in ("b64_json", "url"):
            raise serializers.ValidationError("Supported values are: 'b64_json' and 'url'.")
        return value

    def validate_output_compression(self, value):
        if value is not None and not 0 <= value <= 100:
            raise serializers.ValidationError("Must be between 0 and 100.")
        return value

    def validate_moderation(self, value):
        if value is not None and value not in ("auto", "low"):
            raise serializers.ValidationError("Supported values are: 'auto' and 'low'.")
        return value

    def validate_background(self, value):
        if value is not None and value not in ("auto", "opaque"):
            raise serializers.ValidationError("Supported values are: 'auto' and 'opaque' (no transparency).")
        return value

    def validate_stream(self, value):
        if value:
            raise serializers.ValidationError("Streaming is not supported; send stream=false or omit it.")
        return value

    def native(self) -> dict:
        """The request in the native API's vocabulary (validated again by its serializer)."""
        data = self.validated_data
        model = (data.get("model") or "").strip()
        native: dict = {"prompt": data["prompt"], "aspect_ratio": SIZES[data.get("size") or "auto"]}
        if not model or model.lower().startswith(OPENAI_MODEL_PREFIXES):
            native["tier"] = QUALITY_TIERS[data.get("quality") or "auto"]
        else:
            native["model"] = model
        if data.get("n") is not None:
            native["count"] = data["n"]
        if data.get("output_format"):
            native["output_format"] = data["output_format"]
        if data.get("output_compression") is not None:
            native["compression_quality"] = data["output_compression"]
        if data.get("moderation") == "low":
            native["safety_level"] = "block_only_high"
        if data.get("user"):
            native["metadata"] = {"openai_user": data["user"]}
        return native


class ImageGenerationView(CompatAPIView):
    """OpenAI-compatible image generation (see the module docstring for the mapping)."""

    render_error = staticmethod(render_openai_error)
    param_names = {
        "count": "n",
        "aspect_ratio": "size",
        "tier": "model",
        "compression_quality": "output_compression",
        "safety_level": "moderation",
        "metadata": "user",
    }

    # Excluded from our OpenAPI document on purpose: the contract is OpenAI's published images API,
    # which the official SDKs already implement; duplicating it here would only drift.
    @extend_schema(exclude=True)
    def post(self, request):
        serializer = ImageGenerationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = self.generate(self.native_request(serializer.native()))
        return images_response(document, response_format=serializer.validated_data.get("response_format"))


class ImageEditInputSerializer(ImageGenerationInputSerializer):
    """The text fields of an edit (multipart sends every value as a string)."""

    input_fidelity = serializers.ChoiceField(choices=["high", "low"], required=False, allow_null=True)
    safety_identifier = serializers.CharField(
        max_length=500, required=False, allow_null=True, allow_blank=True
    )

    def native(self) -> dict:
        native = super().native()
        identifier = self.validated_data.get("safety_identifier")
        if identifier:
            native["metadata"] = {**native.get("metadata", {}), "openai_safety_identifier": identifier}
        return native


EDIT_RATIOS = {"1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4, "16:9": 16 / 9, "9:16": 9 / 16}


def nearest_ratio(data: bytes) -> str | None:
    """The listed aspect ratio nearest to an image's own (header only); None if unreadable."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError):
        return None  # the input's own validation names the problem
    shape = width / height
    return min(EDIT_RATIOS, key=lambda ratio: abs(EDIT_RATIOS[ratio] - shape))


class ImageEditView(ImageGenerationView):
    """OpenAI-compatible image edits (see the module docstring)."""

    images_param = "image"

    @extend_schema(exclude=True)  # OpenAI's published images API is the contract
    def post(self, request):
        fields, files = multipart_of(request)
        unknown = sorted(set(files) - {"image", "image[]", "mask"})
        if unknown:
            raise InvalidRequest(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
        uploads = [upload_read(f, param="image") for f in files.getlist("image") + files.getlist("image[]")]
        if not uploads:
            raise InvalidRequest("image is required: send it as the multipart file 'image'.", param="image")
        mask_file = files.get("mask")
        mask = upload_read(mask_file, param="mask") if mask_file is not None else None
        serializer = ImageEditInputSerializer(data={key: fields.get(key) for key in fields})
        serializer.is_valid(raise_exception=True)
        native = serializer.native()
        if serializer.validated_data.get("size") in (None, "auto"):
            native["aspect_ratio"] = nearest_ratio(uploads[0].data) or "1:1"
        document = self.generate(self.native_request(native), images=uploads, mask=mask)
        return images_response(document, response_format=serializer.validated_data.get("response_format"))


def images_response(document: dict, *, response_format: str | None) -> Response:
    """`{created, data: [{b64_json | url}], ...}` for the delivered images; all filtered is an error."""
    delivered = [image for image in document["images"] if not image["filtered"]]
    if not delivered:
        reason = next((i["filter_reason"] for i in document["images"] if i["filter_reason"]), None)
        raise ContentFiltered(
            f"All images were removed by the safety filter ({reason}). You were not charged for them."
            if reason
            else None
        )
    if response_format == "url":
        rendered = {image["id"]: image["url"] for image in job_render(document)["images"]}
        data = [{"url": rendered[image["id"]]} for image in delivered]
    else:
        data = [{"b64_json": image_base64(image)} for image in delivered]
    first = delivered[0]
    body = {
        "created": _unix(document["created_at"]),
        "data": data,
        "output_format": document["output_format"],
        "size": f"{first['width']}x{first['height']}" if first["width"] else None,
    }
    response = Response(body, headers={"x-imagegate-generation-id": document["id"]})
    return uncompressed(response)


def _unix(iso: str | None) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()) if iso else 0
