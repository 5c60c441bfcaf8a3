"""Input validation and output shapes of the native generation API.

Unknown parameters are rejected with a 400 naming them: a parameter is never silently dropped.
Whether a route can honour a valid value (say, `seed` on a model without seeds) is checked next,
against the catalog (generation/catalog.py), also before anything is reserved or queued.
"""

from __future__ import annotations

from rest_framework import serializers

from generation.engine.storage import image_url
from generation.jobs.services import GenerationRequest
from generation.models import Job
from tenants.errors import InvalidRequest
from tenants.models import Organization, Tier

SAFETY_LEVELS = ["block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"]
PERSON_GENERATION = ["dont_allow", "allow_adult", "allow_all"]
RESOLUTIONS = {"512": "512", "1k": "1K", "2k": "2K", "4k": "4K"}
FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}


class GenerationCreateInputSerializer(serializers.Serializer):
    prompt = serializers.CharField(max_length=4000)
    tier = serializers.ChoiceField(choices=Tier.choices, required=False)
    model = serializers.CharField(max_length=100, required=False)
    aspect_ratio = serializers.RegexField(r"^\d{1,2}:\d{1,2}$", max_length=5, default="1:1")
    count = serializers.IntegerField(min_value=1, max_value=4, default=1)
    resolution = serializers.CharField(max_length=4, default="1K")
    output_format = serializers.CharField(max_length=5, default="png")
    compression_quality = serializers.IntegerField(
        min_value=0, max_value=100, required=False, allow_null=True
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True)
    negative_prompt = serializers.CharField(max_length=1000, required=False, allow_null=True)
    safety_level = serializers.ChoiceField(choices=SAFETY_LEVELS, required=False, allow_null=True)
    person_generation = serializers.ChoiceField(choices=PERSON_GENERATION, required=False, allow_null=True)
    fallback = serializers.ChoiceField(choices=Organization.Fallback.values, required=False)
    webhook_url = serializers.URLField(max_length=2000, required=False, allow_null=True)
    metadata = serializers.DictField(
        child=serializers.CharField(max_length=500, allow_blank=True), required=False
    )

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: [f"Unknown parameter '{unknown[0]}'."]})
        return super().to_internal_value(data)

    def validate_resolution(self, value: str) -> str:
        normalized = RESOLUTIONS.get(value.strip().lower())
        if normalized is None:
            raise serializers.ValidationError(f"Must be one of {', '.join(RESOLUTIONS.values())}.")
        return normalized

    def validate_output_format(self, value: str) -> str:
        normalized = FORMATS.get(value.strip().lower())
        if normalized is None:
            raise serializers.ValidationError("Must be png, jpeg or webp.")
        return normalized

    def validate_prompt(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The prompt must not be empty.")
        return value.strip()

    def validate_webhook_url(self, value: str | None) -> str | None:
        if value:
            from generation.webhooks.services import webhook_url_check

            try:
                webhook_url_check(url=value, param="webhook_url")
            except InvalidRequest as exc:
                raise serializers.ValidationError(exc.message) from None
        return value

    def validate_metadata(self, value: dict) -> dict:
        if len(value) > 16 or any(len(key) > 40 for key in value):
            raise serializers.ValidationError("At most 16 keys of at most 40 characters.")
        return value

    def validate(self, attrs):
        if attrs.get("compression_quality") is not None and attrs["output_format"] == "png":
            raise serializers.ValidationError({"compression_quality": ["Applies only to jpeg and webp."]})
        return attrs

    def to_request(self) -> GenerationRequest:
        return GenerationRequest(**self.validated_data)


class ImageOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField(allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    mime_type = serializers.CharField(allow_null=True)
    filtered = serializers.BooleanField()
    filter_reason = serializers.CharField(allow_null=True)


class JobUsageOutputSerializer(serializers.Serializer):
    images = serializers.IntegerField()
    amount = serializers.CharField()
    currency = serializers.CharField()


class ErrorOutputSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class JobOutputSerializer(serializers.Serializer):
    """The Job resource. Fields are declared for the OpenAPI schema; `to_representation` is written
    out by hand because it runs on every request that returns a job."""

    id = serializers.CharField()
    object = serializers.CharField()
    status = serializers.ChoiceField(choices=Job.Status.choices)
    livemode = serializers.BooleanField()
    tier = serializers.CharField()
    served_tier = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    route = serializers.CharField(allow_null=True)
    fallback_reason = serializers.CharField(allow_null=True)
    prompt = serializers.CharField()
    count = serializers.IntegerField()
    aspect_ratio = serializers.CharField()
    resolution = serializers.CharField()
    output_format = serializers.CharField()
    seed = serializers.IntegerField(allow_null=True)
    negative_prompt = serializers.CharField(allow_null=True)
    images = ImageOutputSerializer(many=True)
    usage = JobUsageOutputSerializer()
    error = ErrorOutputSerializer(allow_null=True)
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    metadata = serializers.DictField()

    def to_representation(self, job: Job | dict) -> dict:
        document = job if isinstance(job, dict) else job_document(job, list(job.images.all()))
        return job_render(document)


def _iso(value) -> str | None:
    return serializers.DateTimeField().to_representation(value) if value else None


def job_document(job: Job, images: list) -> dict:
    """Everything the Job resource shows, as plain JSON-able data (image storage paths instead of
    URLs). Built from database rows, or by the worker from what it just wrote, and pushed to the
    waiting request (generation.jobs.notifications), which then answers without querying again."""
    params = job.params
    succeeded = job.status == Job.Status.SUCCEEDED
    created = job.created_at
    finished = job.finished_at
    return {
        "id": job.public_id,
        "object": "generation",
        "status": job.status,
        "livemode": job.livemode,
        "tier": job.tier,
        "served_tier": job.served_tier or None,
        "model": job.served_model or job.requested_model or None,
        "route": job.route or None,
        "fallback_reason": job.fallback_reason or None,
        "prompt": job.prompt,
        "count": job.count,
        "aspect_ratio": params.get("aspect_ratio"),
        "resolution": params.get("resolution"),
        "output_format": params.get("output_format"),
        "compression_quality": params.get("compression_quality"),
        "seed": params.get("seed"),
        "negative_prompt": params.get("negative_prompt"),
        "safety_level": params.get("safety_level"),
        "person_generation": params.get("person_generation"),
        "fallback": job.fallback_policy,
        "notice": params.get("model_notice"),
        "images": [
            {
                "id": image.public_id,
                "storage_path": image.storage_path,
                "width": image.width,
                "height": image.height,
                "mime_type": image.mime_type or None,
                "filtered": image.filtered,
                "filter_reason": image.filter_reason or None,
            }
            for image in (images if succeeded else [])
        ],
        "usage": {"images": job.images_delivered, "amount": f"{job.amount:.4f}", "currency": job.currency},
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "attempts": job.attempts,
        "created_at": _iso(created),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(finished),
        "latency_ms": int((finished - created).total_seconds() * 1000) if finished and created else None,
        "metadata": job.metadata,
        "webhook_url": job.webhook_url or None,
        "image_url_ttl_seconds": job.organization.image_url_ttl_seconds,
    }


def job_render(document: dict) -> dict:
    """The public Job resource: the document with fresh signed image URLs (expiring after the TTL)."""
    rendered = dict(document)
    ttl = rendered.pop("image_url_ttl_seconds")
    rendered["images"] = [
        {
            "id": image["id"],
            "url": None
            if image["filtered"]
            else image_url(public_id=image["id"], storage_path=image["storage_path"], ttl_seconds=ttl),
            **{k: image[k] for k in ("width", "height", "mime_type", "filtered", "filter_reason")},
        }
        for image in document["images"]
    ]
    return rendered
