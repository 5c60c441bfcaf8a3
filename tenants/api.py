"""The API's tenancy boundary: one scoped base view and one exception handler.

Every API view subclasses `OrganizationScopedAPIView`, which authenticates the key, resolves the
organization once, refuses suspended tenants and missing scopes, and counts the request against the
organization's per-minute limit. Subclasses cannot override those hooks (checked at import), and
`tests/test_api_meta.py` fails if a URL routes to an API view that is not scoped.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from rest_framework import exceptions as drf_exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from config.outages import is_dependency_outage
from tenants import errors
from tenants.admission import request_admit
from tenants.models import ApiKey, Organization

logger = logging.getLogger(__name__)

_SCOPING_HOOKS = (
    "initial",
    "perform_authentication",
    "check_permissions",
    "check_object_permissions",
    "get_authenticators",
    "get_permissions",
    "authentication_classes",
    "permission_classes",
)


class JsonOnlyNegotiation(BaseContentNegotiation):
    """The API speaks JSON whatever the client's Accept header says."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class OrganizationScopedAPIView(APIView):
    """Base for every authenticated API view. Handlers read `self.organization` and `self.api_key`."""

    # One scope for the view, or one per HTTP method ({"GET": "read", "POST": "generate"}).
    required_scope: ClassVar[str | dict[str, str]]
    content_negotiation_class = JsonOnlyNegotiation
    organization: Organization
    api_key: ApiKey

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for hook in _SCOPING_HOOKS:
            if hook in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {hook}; tenancy is resolved only by OrganizationScopedAPIView"
                )
        scope = getattr(cls, "required_scope", None)
        scopes = list(scope.values()) if isinstance(scope, dict) else [scope]
        if not scopes or any(s not in ApiKey.Scope.values for s in scopes):
            raise TypeError(f"{cls.__name__} must set required_scope to one of {ApiKey.Scope.values}")

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authenticates; IsAuthenticated denies anonymous
        api_key: ApiKey = request.auth
        scope = self.required_scope
        if isinstance(scope, dict):
            scope = scope.get(request.method, ApiKey.Scope.READ)
        request.rate_limit = request_admit(api_key=api_key, scope=scope)
        self.organization = api_key.organization
        self.api_key = api_key

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        result = getattr(request, "rate_limit", None)
        if result is not None:
            for header, value in result.headers().items():
                response[header] = value
        return response


def _first_validation_error(detail, path: str = "") -> tuple[str | None, str]:
    """Flatten DRF's nested ValidationError detail to (param path, first message)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return _first_validation_error(value, path)
            return _first_validation_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                return _first_validation_error(item, f"{path}[{index}]")
        return (path or None), str(detail[0])
    return (path or None), str(detail)


def dependency_error(exc: BaseException | None) -> errors.ServiceUnavailable | None:
    """A database or Redis outage (restart, pool timeout, statement timeout) as a 503 with
    Retry-After; None for anything else (see config/outages.py)."""
    if not is_dependency_outage(exc):
        return None
    return errors.ServiceUnavailable(retry_after=settings.SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS)


def as_imagegate_error(exc: Exception) -> errors.ImagegateError | None:
    """Translate DRF and Django exceptions into our hierarchy; None for unexpected ones."""
    if isinstance(exc, errors.ImagegateError):
        return exc
    unavailable = dependency_error(exc)
    if unavailable is not None:
        return unavailable
    if isinstance(exc, RequestDataTooBig):
        return errors.RequestTooLarge()
    if isinstance(exc, SuspiciousOperation | MultiPartParserError):  # e.g. too many fields, bad multipart
        return errors.InvalidRequest(f"Malformed request: {exc}")
    if isinstance(exc, drf_exceptions.ValidationError):
        param, message = _first_validation_error(exc.detail)
        if param and message.startswith("This field"):
            message = f"{param}: {message}"
        return errors.InvalidRequest(message, param=param)
    if isinstance(exc, drf_exceptions.ParseError):
        return errors.InvalidRequest(f"Malformed request body: {exc.detail}")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return errors.InvalidRequest("Send the request body as JSON (Content-Type: application/json).")
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        return errors.InvalidApiKey(
            "No API key provided. Send it as 'Authorization: Bearer <key>' (or 'x-goog-api-key')."
        )
    if isinstance(exc, drf_exceptions.AuthenticationFailed):
        return errors.InvalidApiKey(str(exc.detail))
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return errors.PermissionDenied()
    if isinstance(exc, drf_exceptions.NotFound | Http404):
        return errors.NotFound()
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return errors.MethodNotAllowed(str(exc.detail))
    if isinstance(exc, drf_exceptions.Throttled):
        return errors.RateLimited(retry_after=int(getattr(exc, "wait", None) or 1))
    return None


def render_native_error(error: errors.ImagegateError) -> Response:
    response = Response({"error": error.as_dict(), **error.extra}, status=error.status_code)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    if error.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="imagegate"'
    for header, value in error.headers.items():
        response[header] = value
    return response


def exception_handler(exc: Exception, context: dict) -> Response:
    error = as_imagegate_error(exc)
    if error is None:
        logger.exception("Unhandled API error", exc_info=exc)
        error = errors.ImagegateError()
    view = context.get("view")
    render = getattr(view, "render_error", None) or render_native_error
    return render(error)
