"""What the OpenAI- and Google-compatible endpoints share: one scoped base view, and the synchronous
run of a native generation request through `generation.api.waiting.job_submit_document` (same jobs,
limits and billing as `POST /v1/generations?wait=`).

The compat views answer with the image bytes inline (base64), read back from our image store: the
stored file is what was billed and what `GET /v1/generations/{id}` serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pybase64
from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from generation.api.serializers import GenerationCreateInputSerializer
from generation.api.waiting import idempotency_key_of, job_submit_document
from generation.engine.storage import image_open
from generation.files.services import Upload
from generation.jobs.services import GenerationRequest, request_with_inputs
from generation.models import Job
from tenants.api import OrganizationScopedAPIView, as_imagegate_error
from tenants.errors import ImagegateError, InvalidRequest

from .errors import GenerationTimeout, job_failure_error, with_param_names


class CompatAPIView(OrganizationScopedAPIView):
    """Base of every compat view: `generate` scope, errors in the protocol's shape."""

    required_scope = "generate"
    # Our parameter names -> the protocol's, for error messages (see compat.errors.with_param_names).
    param_names: ClassVar[dict[str, str]] = {}

    @staticmethod
    def render_error(error: ImagegateError) -> Response:
        """How errors look in this protocol (tenants.api.exception_handler calls it)."""
        raise NotImplementedError

    def native_request(self, data: dict) -> GenerationRequest:
        """Validate the mapped request with the native API's own rules (one set of rules)."""
        serializer = GenerationCreateInputSerializer(data=data)
        if not serializer.is_valid():
            error = as_imagegate_error(ValidationError(serializer.errors)) or InvalidRequest()
            raise with_param_names(error, self.param_names)
        return serializer.to_request()

    # The protocol's names for the input images and the mask, in error messages.
    images_param: ClassVar[str] = "images"
    mask_param: ClassVar[str] = "mask"

    def generate(
        self,
        request: GenerationRequest,
        *,
        images: Sequence[str | Upload] | None = None,
        mask: str | Upload | None = None,
    ) -> dict:
        """Run the request to completion; the finished job's document with at least one image
        (delivered or filtered). Raises in the protocol's terms when it failed or took too long.
        An `Idempotency-Key` header (optional, e.g. the SDKs' `extra_headers`) makes a retry
        answer from the same job instead of generating, and billing, again. `images` / `mask`
        (uploaded bytes, file ids, URLs or base64) are stored first, as for the native API."""
        try:
            if images or request.images:
                request = request_with_inputs(
                    organization=self.organization,
                    api_key=self.api_key,
                    request=request,
                    images=images,
                    mask=mask,
                    images_param=self.images_param,
                    mask_param=self.mask_param,
                )
            document = job_submit_document(
                organization=self.organization,
                api_key=self.api_key,
                request=request,
                wait=float(settings.COMPAT_WAIT_SECONDS),
                idempotency_key=idempotency_key_of(self.request),
            )
        except ImagegateError as error:
            raise with_param_names(error, self.param_names) from None
        if document["status"] not in Job.TERMINAL:
            raise GenerationTimeout(headers={"x-imagegate-generation-id": document["id"]})
        if document["status"] != Job.Status.SUCCEEDED:
            raise job_failure_error(document)
        return document


def image_base64(image: dict) -> str:
    """A delivered image of a job document, base64-encoded (SIMD base64: ~0.1 ms per MB)."""
    with image_open(image["storage_path"]) as file:
        return pybase64.b64encode(file.read()).decode("ascii")


def uncompressed(response: Response) -> Response:
    """Base64 image payloads are sent as is: gzip costs tens of ms of CPU per image and saves about
    a quarter of the bytes (tests/bench/compression.py). `no-transform` asks proxies not to
    re-encode them either."""
    response["Cache-Control"] = "no-store, no-transform"
    return response
