"""Request ids: every response carries `X-Request-Id`, and every log line written while serving it."""

import contextvars
import logging
import re
import uuid

from django.conf import settings
from django.middleware.gzip import GZipMiddleware

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


class RequestIdMiddleware:
    """Honours a sane client-supplied `X-Request-Id` (so traces join up), otherwise mints one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _CLIENT_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-Id"] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonGZipMiddleware(GZipMiddleware):
    """Gzips JSON responses for clients that accept it, except image payloads.

    Measured by tests/bench/compression.py on this machine: a list of 100 generations (77 KB)
    shrinks 98% for 0.1-0.2 ms of CPU, while a response carrying one base64 PNG (2-4 MB) shrinks
    only ~23% for ~90 ms of CPU (+105 ms latency on loopback; a 4-image response: ~360 ms), more
    than our whole per-image budget. So responses marked `no-transform` (the OpenAI/Google-compat
    image answers), streamed files and anything over `max_bytes` go out as they are.
    """

    max_bytes = 1_000_000

    def process_response(self, request, response):
        if (
            response.streaming
            or not response.get("Content-Type", "").startswith("application/json")
            or "no-transform" in response.get("Cache-Control", "")
            or len(response.content) > self.max_bytes
        ):
            return response
        return super().process_response(request, response)


class ContentSecurityPolicyMiddleware:
    """Sends CONTENT_SECURITY_POLICY on every HTML response that did not set its own.

    A fixed policy, so a small middleware rather than django-csp: templates and static/js carry no
    inline script, style or event handler, so no nonces are needed; a page that needs a different
    policy (the third-party API docs page) sets the header itself.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.get("Content-Type", "").startswith("text/html")
            and "Content-Security-Policy" not in response
        ):
            response["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY
        return response
