"""Platform endpoints that are not part of any tenant's API: health and JSON error pages."""

import logging
import sys
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error

from config.outages import SERVICE_UNAVAILABLE, is_dependency_outage
from config.redis_client import get_redis, redis_degraded

logger = logging.getLogger(__name__)
# Paths answered in the API's JSON error shape (signed image files included: API clients fetch them).
API_PREFIXES = ("/v1/", "/v1beta/", "/v1beta1/", "/files/")


class _DatabaseReadiness:
    """Readiness must not flap on a blip: the database is 'down' for readiness only after it has
    failed for READINESS_GRACE_SECONDS with no success in between. Redis never fails readiness
    (every Redis user has a fallback); it is reported as degraded."""

    def __init__(self) -> None:
        self.failing_since = 0.0

    def check(self) -> tuple[str, bool]:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:  # report, do not raise
            logger.exception("healthz: database check failed")
            now = time.monotonic()
            self.failing_since = self.failing_since or now
            return "error", now - self.failing_since < settings.READINESS_GRACE_SECONDS
        self.failing_since = 0.0
        return "ok", True


_database = _DatabaseReadiness()


def healthz(request: HttpRequest) -> JsonResponse:
    """Readiness (load balancers, the k8s readinessProbe): 503 only when the database has been
    unreachable for longer than the grace period; a Redis outage is reported, never fatal. Public,
    so it says only "ok", "error" or "degraded" per dependency: exception names and messages go to
    the log, never to whoever polls this URL."""
    checks = {}
    checks["database"], ready = _database.check()
    client = get_redis()
    if client is not None:
        if redis_degraded():
            checks["redis"] = "degraded"
        else:
            try:
                client.ping()
                checks["redis"] = "ok"
            except Exception:
                logger.exception("healthz: redis check failed")
                checks["redis"] = "degraded"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if ready else 503
    )


def livez(request: HttpRequest) -> JsonResponse:
    """Liveness of a web process: it answers. No dependency is checked (restarting a web process
    cures neither a database nor a Redis outage)."""
    return JsonResponse({"status": "ok"})


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
    """handler500. A database or Redis outage under any view (DRF or not, or a middleware) is a 503
    with Retry-After in the API's error shape, never a 500 (see config/outages.py)."""
    if is_dependency_outage(sys.exc_info()[1]):
        response: HttpResponse
        if _is_api(request):
            response = JsonResponse({"error": SERVICE_UNAVAILABLE}, status=503)
        else:
            response = HttpResponse(
                SERVICE_UNAVAILABLE["message"], status=503, content_type="text/plain; charset=utf-8"
            )
        response["Retry-After"] = str(settings.SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS)
        return response
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
