"""Platform endpoints that are not part of any tenant's API: health and JSON error pages."""

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.defaults import page_not_found, server_error

from config.redis_client import get_redis

logger = logging.getLogger(__name__)
# Paths answered in the API's JSON error shape (signed image files included: API clients fetch them).
API_PREFIXES = ("/v1/", "/v1beta/", "/v1beta1/", "/files/")


def healthz(request: HttpRequest) -> JsonResponse:
    """Public, so it says only "ok" or "error" per dependency: exception names and messages (driver,
    host names) go to the log, never to whoever polls this URL."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - report, do not raise
        logger.exception("healthz: database check failed")
        checks["database"] = "error"
    client = get_redis()
    if client is not None:
        try:
            client.ping()
            checks["redis"] = "ok"
        except Exception:  # noqa: BLE001
            logger.exception("healthz: redis check failed")
            checks["redis"] = "error"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503
    )


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path.rstrip("/") in {"/v1", "/v1beta", "/v1beta1"}


def _is_api(request: HttpRequest) -> bool:
    return is_api_path(request.path)


def not_found(request: HttpRequest, exception=None):
    if _is_api(request):
        return JsonResponse(
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "not_found",
                    "message": "Unknown URL.",
                    "param": None,
                }
            },
            status=404,
        )
    return page_not_found(request, exception)


def error(request: HttpRequest):
    if _is_api(request):
        return JsonResponse(
            {
                "error": {
                    "type": "api_error",
                    "code": "internal_error",
                    "message": "An internal error occurred.",
                    "param": None,
                }
            },
            status=500,
        )
    return server_error(request)
