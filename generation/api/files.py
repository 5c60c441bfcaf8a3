"""Input files: `POST /v1/files` (multipart field `file`), `GET` / `DELETE /v1/files/{id}`.

An uploaded image is stored once and named by its `file_…` id in later requests (`images`,
`mask`, Gemini `fileData.fileUri`), so a product photo used in a hundred edits is sent once.
Another organization's file id is a 404, as everywhere.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http.multipartparser import MultiPartParserError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from generation.documents import file_document
from generation.files.services import Upload, file_delete, file_get, file_upload
from tenants.api import OrganizationScopedAPIView
from tenants.errors import InvalidRequest
from tenants.schema import ERRORS

FILE_DOCUMENT = inline_serializer(
    "File",
    {
        "id": serializers.CharField(),
        "object": serializers.CharField(),
        "purpose": serializers.CharField(),
        "source": serializers.ChoiceField(choices=["upload", "url", "inline"]),
        "filename": serializers.CharField(allow_null=True),
        "mime_type": serializers.CharField(),
        "width": serializers.IntegerField(),
        "height": serializers.IntegerField(),
        "bytes": serializers.IntegerField(),
        "created_at": serializers.DateTimeField(),
        "expires_at": serializers.DateTimeField(),
    },
)


def multipart_of(request):
    """(fields, files) of a multipart/form-data request, parsed by Django (files above
    FILE_UPLOAD_MAX_MEMORY_SIZE spool to disk). Anything else, or a malformed body, is a 400."""
    content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    if content_type != "multipart/form-data":
        raise InvalidRequest("Send the request as multipart/form-data.", param=None)
    try:
        return request._request.POST, request._request.FILES
    except (MultiPartParserError, RequestDataTooBig) as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc}") from None


def upload_read(uploaded, *, param: str) -> Upload:
    """A multipart file's bytes, refused by its size before it is read into memory."""
    if uploaded.size > settings.FILES_MAX_BYTES:
        raise InvalidRequest(
            f"{param}: the file is {uploaded.size} bytes; the limit is {settings.FILES_MAX_BYTES}.",
            param=param,
        )
    return Upload(data=uploaded.read(), filename=uploaded.name or "")


class FileCreateView(OrganizationScopedAPIView):
    """Upload an input image (PNG, JPEG or WEBP, sniffed from the bytes; EXIF dropped)."""

    required_scope = "generate"

    @extend_schema(
        request={"multipart/form-data": inline_serializer("FileUpload", {"file": serializers.FileField()})},
        responses={201: FILE_DOCUMENT, **ERRORS},
        operation_id="files_create",
    )
    def post(self, request):
        fields, files = multipart_of(request)
        uploaded = files.get("file")
        if uploaded is None:
            raise InvalidRequest("Upload the image as the multipart field 'file'.", param="file")
        unknown = sorted((set(fields) | set(files)) - {"file", "purpose"})
        if unknown:
            raise InvalidRequest(f"Unknown parameter '{unknown[0]}'.", param=unknown[0])
        if fields.get("purpose") not in (None, "input_image", "vision", "user_data"):
            raise InvalidRequest("purpose must be input_image.", param="purpose")
        file = file_upload(organization=self.organization, upload=upload_read(uploaded, param="file"))
        return Response(file_document(file), status=201)


class FileDetailView(OrganizationScopedAPIView):
    required_scope = {"GET": "read", "DELETE": "generate"}

    @extend_schema(responses={200: FILE_DOCUMENT, **ERRORS}, operation_id="files_retrieve")
    def get(self, request, public_id: str):
        return Response(file_document(file_get(organization=self.organization, public_id=public_id)))

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS}, operation_id="files_delete")
    def delete(self, request, public_id: str):
        file_delete(organization=self.organization, public_id=public_id)
        return Response({"id": public_id, "object": "file", "deleted": True})
