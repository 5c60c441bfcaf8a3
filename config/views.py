"""Platform endpoints that are not part of any tenant's API: health and JSON error pages."""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.defaults import page_not_found, server_error

from config.redis_client import get_redis

API_PREFIXES = ("/v1/", "/v1beta/", "/v1beta1/")


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, do not raise
        checks["database"] = f"error: {type(exc).__name__}"
    client = get_redis()
    if client is not None:
        try:
            client.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503
    )


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES) or request.path.rstrip("/") in {"/v1", "/v1beta", "/v1beta1"}


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
