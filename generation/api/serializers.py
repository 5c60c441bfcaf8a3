"""Input validation and output shapes of the native generation API.

Unknown parameters are rejected with a 400 naming them: a parameter is never silently dropped.
Whether a route can honour a valid value (say, `seed` on a model without seeds) is checked next,
against the catalog (generation/catalog.py), also before anything is reserved or queued.
"""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from generation.documents import job_document, job_render
from generation.jobs.services import GenerationRequest
from generation.models import Batch, Job, WebhookDelivery
from tenants.errors import InvalidRequest
from tenants.json_types import StrictTypesSerializer
from tenants.models import Organization, Tier

SAFETY_LEVELS = ["block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"]
PERSON_GENERATION = ["dont_allow", "allow_adult", "allow_all"]
RESOLUTIONS = {"512": "512", "1k": "1K", "2k": "2K", "4k": "4K"}
FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}


@extend_schema_field(OpenApiTypes.STR)
class InputSpecField(serializers.Field):
    """An input image as sent: a file id, a URL or base64 data, all ASCII. Not a CharField: its
    validators look at every character in Python (~25 ms for a 1 MB image's base64), where
    `isascii` is one C pass."""

    default_error_messages = {
        "invalid": "Expected a file id (file_…), an https URL or base64 image data, as a string.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str) or not data or not data.isascii():
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class GenerationCreateInputSerializer(StrictTypesSerializer):
    """JSON types are strict (`"count": "2"` is a 400), as the published schema says."""

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
    # Each a file id (file_…), an https URL or base64 data (generation.files); how many a model
    # takes, and whether it takes a mask, is the catalog's call (a 400 naming the parameter).
    images = serializers.ListField(child=InputSpecField(), max_length=16, required=False)
    mask = InputSpecField(required=False, allow_null=True)
    # Refused before anything is reserved when the worst case (count x the highest unit price that
    # could apply) is above it. Kept as a decimal string: batch items are stored as JSON.
    max_cost = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=Decimal("0"), required=False, allow_null=True
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
            from generation.engine.outbound import outbound_url_check

            try:
                outbound_url_check(url=value, param="webhook_url")
            except InvalidRequest as exc:
                raise serializers.ValidationError(exc.message) from None
        return value

    def validate_max_cost(self, value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    def validate_metadata(self, value: dict) -> dict:
        if len(value) > 16 or any(len(key) > 40 for key in value):
            raise serializers.ValidationError("At most 16 keys of at most 40 characters.")
        return value

    def validate(self, attrs):
        if attrs.get("compression_quality") is not None and attrs["output_format"] == "png":
            raise serializers.ValidationError({"compression_quality": ["Applies only to jpeg and webp."]})
        return attrs

    def to_request(self) -> GenerationRequest:
        """The validated request; `images` / `mask` are still as sent (ids, URLs, base64) until
        generation.jobs.services.request_with_inputs resolves them to stored files."""
        data = dict(self.validated_data)
        data["images"] = tuple(data.get("images") or ())
        return GenerationRequest(**data)


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
    compression_quality = serializers.IntegerField(allow_null=True)
    seed = serializers.IntegerField(allow_null=True)
    negative_prompt = serializers.CharField(allow_null=True)
    input_images = serializers.ListField(child=serializers.CharField())
    mask = serializers.CharField(allow_null=True)
    safety_level = serializers.CharField(allow_null=True)
    person_generation = serializers.CharField(allow_null=True)
    fallback = serializers.ChoiceField(choices=Organization.Fallback.choices)
    notice = serializers.CharField(allow_null=True, help_text="e.g. why a pinned model was migrated")
    images = ImageOutputSerializer(many=True)
    usage = JobUsageOutputSerializer()
    error = ErrorOutputSerializer(allow_null=True)
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    metadata = serializers.DictField()
    webhook_url = serializers.CharField(allow_null=True)

    def to_representation(self, job: Job | dict) -> dict:
        document = job if isinstance(job, dict) else job_document(job, list(job.images.all()))
        return job_render(document)


# The other resources are rendered by generation.documents directly; these declare their shape for
# the OpenAPI schema, and generation/tests/test_documents.py holds the two against each other.
class BatchCountsOutputSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    filtered = serializers.IntegerField()
    canceled = serializers.IntegerField()


class BatchOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    status = serializers.ChoiceField(choices=Batch.Status.choices)
    counts = BatchCountsOutputSerializer()
    webhook_url = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    canceled_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class BatchItemOutputSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    custom_id = serializers.CharField()
    status = serializers.ChoiceField(choices=Job.Status.choices)
    generation = JobOutputSerializer(allow_null=True)


class WebhookEndpointOutputSerializer(serializers.Serializer):
    object = serializers.CharField()
    url = serializers.CharField(allow_null=True)
    enabled = serializers.BooleanField()
    secret = serializers.CharField(allow_null=True, help_text="null for read-only keys")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class WebhookDeliveryOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    event = serializers.CharField()
    object_id = serializers.CharField()
    url = serializers.CharField()
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices)
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


def list_of(
    name: str, item: serializers.Serializer, *, cursor: type[serializers.Field] = serializers.CharField
):
    """The list envelope of generation.pagination (`object`, `data`, `has_more`, `next_cursor`)."""
    return inline_serializer(
        name,
        {
            "object": serializers.CharField(),
            "data": item,
            "has_more": serializers.BooleanField(),
            "next_cursor": cursor(allow_null=True),
        },
    )
