"""The native generation API (/v1/generations, /v1/models), signed image files and the API docs."""

from __future__ import annotations

import time

from django.conf import settings
from django.http import FileResponse, Http404, JsonResponse
from django.views import View
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView
from rest_framework import serializers
from rest_framework.response import Response

from generation.api.serializers import (
    GenerationCreateInputSerializer,
    JobOutputSerializer,
    job_document,
    job_render,
)
from generation.api.waiting import idempotency_key_of, job_document_of, job_submit_document, job_wait_document
from generation.engine.storage import image_open, image_url_expiry
from generation.errors import GenerationFailed, InvalidSignature
from generation.jobs.selectors import job_get, job_list, models_for_organization
from generation.jobs.services import job_cancel, request_with_inputs
from generation.models import Image, Job
from generation.pagination import page_cursor, page_limit, page_response
from tenants.api import OrganizationScopedAPIView
from tenants.errors import InvalidRequest
from tenants.schema import ERRORS
from tenants.selectors import organization_spend_status

MAX_WAIT_SECONDS = 60
# HTTP status for a job that failed while the client waited for it (`?wait=`).
_FAILED_STATUS = {
    "upstream_rejected": 400,
    "invalid_request": 400,
    "model_retired": 400,
    "permission_denied": 403,
}


def wait_seconds(request) -> float | None:
    raw = request.query_params.get("wait")
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds.", param="wait") from None
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise InvalidRequest(f"wait must be between 0 and {MAX_WAIT_SECONDS} seconds.", param="wait")
    return value


def job_response(document: dict, *, waited: bool) -> Response:
    data = job_render(document)
    headers = {"Location": f"/v1/generations/{document['id']}"}
    status = document["status"]
    if waited and status == Job.Status.FAILED:
        error = document["error"] or {"code": "upstream_unavailable", "message": ""}
        http_status = _FAILED_STATUS.get(error["code"], 503)
        if http_status == 503:  # retryable: say when (a new job, not this one, is what to retry)
            headers["Retry-After"] = str(settings.SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS)
        # Rendered by the one exception handler, like every other error.
        raise GenerationFailed(
            code=error["code"],
            message=error["message"],
            status_code=http_status,
            generation=data,
            headers=headers,
        )
    return Response(data, status=200 if status in Job.TERMINAL else 202, headers=headers)


WAIT_PARAMETER = OpenApiParameter(
    "wait", float, description="Seconds (0-60) to wait for the job to finish before answering."
)
JOB_LIST = inline_serializer(
    "GenerationList",
    {
        "object": serializers.CharField(),
        "data": JobOutputSerializer(many=True),
        "has_more": serializers.BooleanField(),
        "next_cursor": serializers.CharField(allow_null=True),
    },
)


class GenerationListCreateView(OrganizationScopedAPIView):
    """POST: submit a generation (async; `?wait=N` answers as soon as it finishes, N ≤ 60 s).
    GET: this organization's generations, newest first, cursor-paginated."""

    required_scope = {"GET": "read", "POST": "generate"}

    @extend_schema(
        request=GenerationCreateInputSerializer,
        responses={200: JobOutputSerializer, 202: JobOutputSerializer, **ERRORS},
        parameters=[
            WAIT_PARAMETER,
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Same key + same body = same job.",
            ),
        ],
        operation_id="generations_create",
    )
    def post(self, request):
        wait = wait_seconds(request)
        idempotency_key = idempotency_key_of(request)
        serializer = GenerationCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        generation = request_with_inputs(
            organization=self.organization, api_key=self.api_key, request=serializer.to_request()
        )
        document = job_submit_document(
            organization=self.organization,
            api_key=self.api_key,
            request=generation,
            wait=wait,
            idempotency_key=idempotency_key,
        )
        response = job_response(document, waited=bool(wait))
        # What is left of this month's quota and caps, after this request's reservation.
        status = organization_spend_status(organization=self.organization, api_key=self.api_key)
        for name, value in status.headers().items():
            response[name] = value
        return response

    @extend_schema(
        responses={200: JOB_LIST, **ERRORS},
        parameters=[
            OpenApiParameter("status", str, enum=Job.Status.values),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
            OpenApiParameter("limit", int, description="1-100, default 20"),
        ],
        operation_id="generations_list",
    )
    def get(self, request):
        status = request.query_params.get("status") or None
        if status is not None and status not in Job.Status.values:
            raise InvalidRequest(f"status must be one of {', '.join(Job.Status.values)}.", param="status")
        limit = page_limit(request)
        cursor = page_cursor(request, prefix="gen", what="a generation id")
        jobs, has_more = job_list(organization=self.organization, status=status, cursor=cursor, limit=limit)
        return page_response(jobs, has_more=has_more, render=lambda job: JobOutputSerializer(job).data)


class GenerationDetailView(OrganizationScopedAPIView):
    required_scope = "read"

    @extend_schema(responses={200: JobOutputSerializer, **ERRORS}, parameters=[WAIT_PARAMETER])
    def get(self, request, public_id: str):
        job = job_get(organization=self.organization, public_id=public_id)
        wait = wait_seconds(request)
        if wait and not job.is_terminal:
            return job_response(job_wait_document(job=job, timeout=wait), waited=False)
        return job_response(job_document_of(job), waited=False)


class GenerationCancelView(OrganizationScopedAPIView):
    required_scope = "generate"

    @extend_schema(request=None, responses={200: JobOutputSerializer, **ERRORS})
    def post(self, request, public_id: str):
        job = job_cancel(organization=self.organization, public_id=public_id)
        return job_response(job_document(job, []), waited=False)


class ModelListView(OrganizationScopedAPIView):
    required_scope = "read"

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def get(self, request):
        return Response(models_for_organization(organization=self.organization))


class ImageFileView(View):
    """Serves a stored image to whoever holds its signed, unexpired URL (no API key needed)."""

    def get(self, request, public_id: str, ext: str):
        now = time.time()
        expires_at = image_url_expiry(
            public_id=public_id,
            expires=request.GET.get("expires"),
            signature=request.GET.get("signature"),
            now=now,
        )
        if expires_at is None:  # a plain Django view (no API key): the handler's JSON shape by hand
            error = InvalidSignature()
            return JsonResponse({"error": error.as_dict()}, status=error.status_code)
        image = (
            Image.objects.filter(public_id=public_id, filtered=False)
            .only("storage_path", "mime_type")
            .first()
        )
        if image is None or not image.storage_path.endswith(f".{ext}"):
            raise Http404
        response = FileResponse(image_open(image.storage_path), content_type=image.mime_type)
        # A cached copy must not outlive the URL: at most an hour, never past its expiry.
        response["Cache-Control"] = f"private, max-age={max(0, min(3600, int(expires_at - now)))}"
        return response


class OpenApiSchemaView(SpectacularJSONAPIView):
    authentication_classes = []
    permission_classes = []


class ApiDocsView(SpectacularRedocView):
    authentication_classes = []
    permission_classes = []

    # Redoc (third-party, served from our static files) injects its styles at run time and runs its
    # search in a blob: worker; only this page gets those two allowances, never an inline script.
    CONTENT_SECURITY_POLICY = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; worker-src blob:; "
        "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
    )

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        response["Content-Security-Policy"] = self.CONTENT_SECURITY_POLICY
        return response
