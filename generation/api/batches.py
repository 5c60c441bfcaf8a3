"""The batch API (/v1/batches…): thin views over generation.batches.services."""

from __future__ import annotations

from django.conf import settings
from django.http import StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from generation.api.serializers import (
    BatchItemOutputSerializer,
    BatchOutputSerializer,
    GenerationCreateInputSerializer,
    list_of,
)
from generation.batches.services import (
    CUSTOM_ID_MAX,
    batch_cancel,
    batch_create,
    batch_get,
    batch_inputs_check,
    batch_items,
    batch_items_parse_jsonl,
    batch_list,
    batch_results_lines,
)
from generation.documents import batch_document, batch_item_document
from generation.jobs.services import request_plan
from generation.pagination import page_cursor, page_index_cursor, page_limit, page_response
from tenants.api import OrganizationScopedAPIView, as_imagegate_error
from tenants.errors import ImagegateError, InvalidRequest, RequestTooLarge
from tenants.models import ApiKey, Organization
from tenants.parsers import json_parse
from tenants.schema import ERRORS

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines")


# --- Batches ----------------------------------------------------------------------------------
class BatchCreateInputSerializer(serializers.Serializer):
    """For the schema: the JSON form. The same items may be uploaded as JSONL (one per line)."""

    requests = inline_serializer(
        "BatchRequestItem",
        {"custom_id": serializers.CharField(max_length=64), "body": serializers.JSONField()},
        many=True,
    )
    webhook_url = serializers.URLField(required=False)


BATCH = BatchOutputSerializer
BATCH_LIST = list_of("BatchList", BatchOutputSerializer(many=True))
BATCH_ITEMS = list_of("BatchItemList", BatchItemOutputSerializer(many=True))


def _batch_input(request) -> tuple[object, str | None]:
    """(items, webhook_url) from a JSON body, a JSONL body, or a multipart JSONL file."""
    content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    # The body's size was checked before anything read it (BATCH_BODY_MAX_BYTES, in
    # tenants.middleware), so a multipart upload is never spooled past that either.
    if content_type == "multipart/form-data":
        try:
            upload = request._request.FILES.get("file")
            webhook_url = request._request.POST.get("webhook_url") or None
        except MultiPartParserError as exc:  # e.g. no boundary in the Content-Type
            raise InvalidRequest(f"Malformed multipart body: {exc}", param="file") from None
        if upload is None:
            raise InvalidRequest("Upload the JSONL as the multipart field 'file'.", param="file")
        text = upload.read().decode("utf-8", errors="replace")
        return batch_items_parse_jsonl(text=text), webhook_url
    body = request._request.read(settings.BATCH_BODY_MAX_BYTES + 1)
    if len(body) > settings.BATCH_BODY_MAX_BYTES:
        raise RequestTooLarge(f"The request body is larger than {settings.BATCH_BODY_MAX_BYTES} bytes.")
    if content_type in JSONL_TYPES:
        text = body.decode("utf-8", errors="replace")
        return batch_items_parse_jsonl(text=text), request.query_params.get("webhook_url") or None
    data = json_parse(body)
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object with 'requests'.")
    unknown = sorted(set(data) - {"requests", "webhook_url"})
    if unknown:
        raise InvalidRequest(f"Unknown parameter '{unknown[0]}'.", param=unknown[0])
    return data.get("requests"), data.get("webhook_url")


def batch_items_validate(*, organization: Organization, api_key: ApiKey, items: object) -> list[dict]:
    """Validate every item as POST /v1/generations would; returns [{"custom_id", "body"}] with the
    validated bodies. The first invalid item raises InvalidRequest naming it (line = index + 1)."""
    if not isinstance(items, list) or not items:
        raise InvalidRequest("requests must be a non-empty list.", param="requests")
    if len(items) > settings.BATCH_MAX_REQUESTS:
        raise InvalidRequest(
            f"A batch holds at most {settings.BATCH_MAX_REQUESTS} requests, got {len(items)}.",
            param="requests",
        )
    seen: set[str] = set()
    validated = []
    for index, item in enumerate(items):
        where = f"requests[{index}]"
        label = f"Request {index + 1} (line {index + 1})"
        if not isinstance(item, dict) or set(item) - {"custom_id", "body"}:
            raise InvalidRequest(f"{label} must be an object with custom_id and body only.", param=where)
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID_MAX:
            raise InvalidRequest(
                f"{label}: custom_id must be a string of 1-{CUSTOM_ID_MAX} characters.",
                param=f"{where}.custom_id",
            )
        if custom_id in seen:
            raise InvalidRequest(f"{label}: duplicate custom_id {custom_id!r}.", param=f"{where}.custom_id")
        seen.add(custom_id)
        serializer = GenerationCreateInputSerializer(data=item.get("body"))
        try:
            serializer.is_valid(raise_exception=True)
            request = serializer.to_request()
            request_plan(organization=organization, api_key=api_key, request=request)
            batch_inputs_check(organization=organization, request=request)
        except (serializers.ValidationError, ImagegateError) as exc:
            error = as_imagegate_error(exc)
            assert error is not None  # noqa: S101 - both exception types always convert
            param = f"{where}.body.{error.param}" if error.param else f"{where}.body"
            raise InvalidRequest(f"{label} (custom_id {custom_id!r}): {error.message}", param=param) from None
        body = {key: value for key, value in serializer.validated_data.items() if value is not None}
        validated.append({"custom_id": custom_id, "body": body})
    return validated


class BatchListCreateView(OrganizationScopedAPIView):
    """POST: up to 1,000 generation requests as one batch (JSON, or JSONL body/upload).
    GET: this organization's batches, newest first."""

    required_scope = {"GET": "read", "POST": "generate"}

    @extend_schema(
        request={"application/json": BatchCreateInputSerializer, "application/jsonl": OpenApiTypes.STR},
        responses={201: BATCH, **ERRORS},
        parameters=[OpenApiParameter("webhook_url", str, description="With a JSONL body only.")],
        operation_id="batches_create",
    )
    def post(self, request):
        items, webhook_url = _batch_input(request)
        items = batch_items_validate(organization=self.organization, api_key=self.api_key, items=items)
        batch = batch_create(
            organization=self.organization, api_key=self.api_key, items=items, webhook_url=webhook_url
        )
        batch.refresh_from_db()
        return Response(
            batch_document(batch), status=201, headers={"Location": f"/v1/batches/{batch.public_id}"}
        )

    @extend_schema(
        responses={200: BATCH_LIST, **ERRORS},
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("limit", int, description="1-100")],
        operation_id="batches_list",
    )
    def get(self, request):
        batches, has_more = batch_list(
            organization=self.organization,
            cursor=page_cursor(request, prefix="batch"),
            limit=page_limit(request),
        )
        return page_response(batches, has_more=has_more, render=batch_document)


class BatchDetailView(OrganizationScopedAPIView):
    required_scope = "read"

    @extend_schema(responses={200: BATCH, **ERRORS}, operation_id="batches_retrieve")
    def get(self, request, public_id: str):
        return Response(batch_document(batch_get(organization=self.organization, public_id=public_id)))


class BatchItemsView(OrganizationScopedAPIView):
    required_scope = "read"

    @extend_schema(
        responses={200: BATCH_ITEMS, **ERRORS},
        parameters=[
            OpenApiParameter("cursor", int, description="next_cursor of the previous page"),
            OpenApiParameter("limit", int, description="1-200, default 50"),
        ],
        operation_id="batches_items",
    )
    def get(self, request, public_id: str):
        batch, rows, next_cursor = batch_items(
            organization=self.organization,
            public_id=public_id,
            cursor=page_index_cursor(request),
            limit=page_limit(request, default=50, maximum=200),
        )
        return Response(
            {
                "object": "list",
                "data": [batch_item_document(batch, *row) for row in rows],
                "has_more": next_cursor is not None,
                "next_cursor": str(next_cursor) if next_cursor is not None else None,
            }
        )


class BatchCancelView(OrganizationScopedAPIView):
    required_scope = "generate"

    @extend_schema(request=None, responses={200: BATCH, **ERRORS}, operation_id="batches_cancel")
    def post(self, request, public_id: str):
        return Response(batch_document(batch_cancel(organization=self.organization, public_id=public_id)))


class BatchResultsView(OrganizationScopedAPIView):
    required_scope = "read"

    @extend_schema(
        responses={(200, "application/jsonl"): OpenApiTypes.STR, **ERRORS}, operation_id="batches_results"
    )
    def get(self, request, public_id: str):
        batch = batch_get(organization=self.organization, public_id=public_id)
        lines = batch_results_lines(organization=self.organization, public_id=batch.public_id)
        response = StreamingHttpResponse(lines, content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="{batch.public_id}-results.jsonl"'
        return response
