"""Turns a failed Google exchange (an error response or an httpx exception) into our typed errors.

Google answers errors as `google.rpc.Status` JSON, `{"error": {"code", "message", "status",
"details"}}`; Vertex sometimes wraps it in a one-element list. Invariants: every function here is
pure (no I/O), never raises on a malformed body, and never puts credentials into a message.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from generation.engine.providers.base import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
# ErrorInfo reasons Google attaches to a 400 that is really about the API key, not the request.
API_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
MAX_MESSAGE_CHARS = 500

# Anything that looks like a credential is scrubbed from messages before they reach logs or users:
# `key=` query parameters, bearer tokens and Google API keys (which start with "AIza").
_SECRET_PATTERNS = [
    (re.compile(r"(?i)(key=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"AIza[0-9A-Za-z_-]{20,}"), "[redacted]"),
]


@dataclass(frozen=True)
class GoogleError:
    """The useful part of a `google.rpc.Status` body."""

    code: int | None
    message: str
    status: str | None  # e.g. "RESOURCE_EXHAUSTED"
    details: list[dict] = field(default_factory=list)

    def detail(self, type_url: str) -> dict | None:
        return next((d for d in self.details if d.get("@type") == type_url), None)


def parse_error_body(content: bytes) -> GoogleError | None:
    """The Status inside an error body, or None when the body is not Google's JSON error shape."""
    try:
        payload = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(payload, list) and len(payload) == 1:  # Vertex: `[{"error": {...}}]`
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    details = error.get("details")
    return GoogleError(
        code=code if isinstance(code, int) else None,
        message=str(error.get("message") or ""),
        status=error.get("status") if isinstance(error.get("status"), str) else None,
        details=[d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
    )


def parse_duration(value: object) -> float | None:
    """Seconds from a protobuf Duration: JSON form "53s" / "1.5s", or `{"seconds", "nanos"}`."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)s\s*", value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):
        try:
            return int(value.get("seconds", 0)) + int(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def retry_delay(error: GoogleError | None) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` in seconds, when Google sent one."""
    info = error.detail(RETRY_INFO_TYPE) if error else None
    return parse_duration(info.get("retryDelay")) if info else None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (never negative)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT; a naive parse result means the same
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def scrub(text: str) -> str:
    """Remove anything credential-shaped and cap the length: messages end up in logs and job rows."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _is_api_key_problem(error: GoogleError) -> bool:
    # Google answers a wrong API key with 400 INVALID_ARGUMENT "API key not valid", not 401/403.
    # Treating it as a bad request would stop failover to a route whose key works.
    info = error.detail(ERROR_INFO_TYPE)
    if info and info.get("reason") in API_KEY_REASONS:
        return True
    return error.message.startswith(("API key not valid", "API key expired"))


# Google's wording for a model it does not serve (any more): "models/imagen-4.0-generate-001 is not
# found for API version v1beta, or is not supported for predict." (Vertex: "Publisher Model
# `projects/…/publishers/google/models/…` was not found or your project does not have access").
_MODEL_NOT_FOUND = re.compile(r"(?i)\bmodels?/\S+.*\b(?:is|was) not found|publisher model .* not found")


def _is_model_not_found(error: GoogleError | None) -> bool:
    """A 404 about the model itself, as opposed to a wrong URL or a missing resource: only this
    one means "retired" (a proxy's HTML 404 or a wrong base URL must not disable routes)."""
    return error is not None and error.status == "NOT_FOUND" and bool(_MODEL_NOT_FOUND.search(error.message))


def error_from_response(response: httpx.Response) -> UpstreamError:
    """The typed error for a non-2xx Google response (the body must already be read)."""
    status_code = response.status_code
    error = parse_error_body(response.content)
    if error is not None:
        upstream_status = error.status
        summary = f"{status_code} {upstream_status or ''}".rstrip()
        message = scrub(f"Google {summary}: {error.message or 'no message'}")
    else:
        upstream_status = None
        snippet = response.content[:200].decode("utf-8", "replace").strip() or "empty body"
        message = scrub(f"Google {status_code} with a non-JSON body: {snippet}")
    error_class = _error_class(status_code, error)
    retry_after = None
    if error_class.retryable:
        retry_after = retry_delay(error)
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error_class(
        message, http_status=status_code, upstream_status=upstream_status, retry_after=retry_after
    )


def _error_class(status_code: int, error: GoogleError | None) -> type[UpstreamError]:
    if status_code == 400:
        if error is not None and _is_api_key_problem(error):
            return UpstreamAuthError
        if error is not None and error.status == "FAILED_PRECONDITION":
            # e.g. "User location is not supported", billing not enabled: this account cannot
            # serve the request, another route may. Not the caller's fault, not worth a retry.
            return UpstreamError
        return UpstreamBadRequest
    if status_code in (401, 403):
        return UpstreamAuthError
    if status_code == 404:
        return UpstreamModelNotFound if _is_model_not_found(error) else UpstreamNotFound
    if status_code == 408:
        return UpstreamTimeout
    if status_code == 429:
        return UpstreamRateLimited
    if status_code >= 500:
        return UpstreamServerError
    if 400 <= status_code < 500:
        return UpstreamError
    return UpstreamProtocolError


def error_from_exception(exc: httpx.HTTPError) -> UpstreamError:
    """The typed error for an httpx failure before a complete response arrived."""
    where = ""
    with contextlib.suppress(RuntimeError):  # the exception was raised without a request attached
        where = f" to {exc.request.url.host}:{exc.request.url.port or ''}".rstrip(":")
    detail = scrub(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"Google request{where} timed out ({type(exc).__name__}): {detail}")
    if isinstance(exc, httpx.TransportError):
        return UpstreamConnectionError(f"Google connection{where} failed ({type(exc).__name__}): {detail}")
    return UpstreamProtocolError(f"Google exchange{where} failed ({type(exc).__name__}): {detail}")
