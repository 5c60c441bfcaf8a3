"""Request guards that run before any view, parser or URL lookup touches the request.

One place for limits that must hold whatever the view: the body size (Django's
DATA_UPLOAD_MAX_MEMORY_SIZE never applies to DRF, which reads the raw stream, and multipart uploads
are spooled to disk before any view could check them), NUL characters in the path or query (an
ORM lookup with one is a 500 on PostgreSQL), API keys in query strings, and the admin allowlist.
Refusals use the error shape of the view the URL routes to (native, OpenAI or Google).
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from rest_framework.renderers import JSONRenderer

from config.client_address import client_in_networks
from config.views import is_api_path
from tenants import errors

QUERY_KEY_PARAMS = ("key", "api_key")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def error_response(request: HttpRequest, error: errors.ImagegateError) -> HttpResponse:
    """Render `error` as the view behind this URL would have (plain text outside the API)."""
    if not is_api_path(request.path):
        return HttpResponse(error.message, status=error.status_code, content_type="text/plain; charset=utf-8")
    from tenants.api import render_native_error

    renderer = render_native_error
    try:
        view_class = getattr(resolve(request.path_info).func, "cls", None)
        renderer = getattr(view_class, "render_error", None) or render_native_error
    except Resolver404:
        pass
    response = renderer(error)
    response.accepted_renderer = JSONRenderer()
    response.accepted_media_type = "application/json"
    response.renderer_context = {}  # type: ignore[attr-defined]
    return response.render()


# Where a body may carry input images (multipart files or base64 in JSON): IMAGE_BODY_MAX_BYTES.
_IMAGE_INPUT_PATHS = ("/v1/files", "/v1/images/edits", "/v1/generations", "/playground")


def body_limit(path: str) -> int:
    path = path.rstrip("/")
    if path == "/v1/batches":
        return settings.BATCH_BODY_MAX_BYTES
    if path in _IMAGE_INPUT_PATHS or path.endswith(":generateContent"):
        return max(settings.IMAGE_BODY_MAX_BYTES, settings.REQUEST_BODY_MAX_BYTES)
    return settings.REQUEST_BODY_MAX_BYTES


def _too_large(limit: int) -> errors.RequestTooLarge:
    return errors.RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")


def _bound_body(request: HttpRequest) -> errors.ImagegateError | None:
    limit = body_limit(request.path_info)
    raw_length = request.META.get("CONTENT_LENGTH") or ""
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            return errors.InvalidRequest("The Content-Length header is not a number.")
        return _too_large(limit) if length > limit else None
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django reads a body only up to Content-Length; a chunked one would silently be empty. Read
        # it here, at most limit + 1 bytes, and hand the view an ordinary sized body.
        body = request.META["wsgi.input"].read(limit + 1) if "wsgi.input" in request.META else b""
        if len(body) > limit:
            return _too_large(limit)
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[assignment]
    return None


def _refusal(request: HttpRequest) -> errors.ImagegateError | None:
    if "\x00" in request.path_info:
        return errors.InvalidRequest("The URL path must not contain NUL characters.", param="path")
    for name, values in request.GET.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return errors.InvalidRequest("Query parameters must not contain NUL characters.", param=name)
    if is_api_path(request.path):
        for name in QUERY_KEY_PARAMS:
            if name in request.GET:
                return errors.ApiKeyInQuery(param=name)
    if request.method in BODY_METHODS:
        error = _bound_body(request)
        if error is None and not is_api_path(request.path) and request.content_type in FORM_TYPES:
            # Dashboard forms: fields a view looks up directly (a plan code, a role) would reach the
            # database with the NUL. Django's CSRF check parses these bodies anyway; API views read
            # their own bodies (JSON through tenants.parsers) and are left alone.
            for name, values in request.POST.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return errors.InvalidRequest("Form fields must not contain NUL characters.", param=name)
        return error
    return None


class RequestGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if (
            request.path_info.startswith("/admin/")
            and settings.ADMIN_ALLOWED_IPS
            and not client_in_networks(request, settings.ADMIN_ALLOWED_IPS)
        ):
            raise Http404("Not here.")
        error = _refusal(request)
        if error is not None:
            return error_response(request, error)
        return self.get_response(request)
