"""Our one error hierarchy (tenants/errors.py), rendered in each foreign protocol's own shape.

Compat views set `render_error` to one of the renderers below; `tenants.api.exception_handler`
calls it, so authentication, scopes, rate limits and validation raise the same exceptions as on the
native API and only the JSON shape and status mapping differ:

- OpenAI: `{"error": {"message", "type", "param", "code"}}` with the statuses the openai SDK maps to
  its exception classes (400/401/403/404/409/422/429/5xx). Errors a retry cannot fix carry
  `x-should-retry: false` (the SDK otherwise retries 409/429/5xx twice); retryable 429s carry
  `retry-after`.
- Google: `{"error": {"code", "message", "status"}}` with canonical status names; the machine code
  is kept in a `google.rpc.ErrorInfo` detail and the wait in a `google.rpc.RetryInfo` detail.
"""

from __future__ import annotations

from rest_framework.response import Response

from generation import errors as generation_errors
from tenants import errors
from tenants.errors import ImagegateError

# Codes no retry can fix soon: the SDK must not spend the customer's time retrying them. A timed-out
# generation is still running (and billed if it delivers): a retry would start, and bill, another.
# An Idempotency-Key reused with another body stays a conflict however often it is sent.
NOT_RETRYABLE_CODES = frozenset(
    {
        "quota_exceeded",
        "spend_cap_exceeded",
        "key_cap_exceeded",
        "tenant_suspended",
        "payment_required",
        "generation_timeout",
        "idempotency_conflict",
    }
)

# A failed job's error code -> the error raised to the waiting compat client.
_JOB_FAILURES: dict[str, type[ImagegateError]] = {
    "upstream_rejected": errors.InvalidRequest,
    "invalid_request": errors.InvalidRequest,
    "model_retired": generation_errors.ModelRetired,
    "permission_denied": errors.PermissionDenied,
}

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GenerationTimeout(ImagegateError):
    status_code = 504
    type = "api_error"
    code = "generation_timeout"
    default_message = (
        "The generation did not finish in time. It keeps running and is billed only if it delivers; "
        "find it in GET /v1/generations."
    )


class ContentFiltered(errors.InvalidRequest):
    """Every image of an OpenAI-style request was removed by the safety filter (not billed)."""

    code = "content_filtered"
    default_message = "All images were removed by the safety filter. You were not charged for them."


def job_failure_error(document: dict) -> ImagegateError:
    """The exception a compat client gets for a job that ended without images."""
    if document["status"] == "canceled":
        return errors.Conflict("The generation was canceled before it finished.")
    error = document["error"] or {"code": "upstream_unavailable", "message": ""}
    error_class = _JOB_FAILURES.get(error["code"], generation_errors.UpstreamUnavailable)
    return error_class(error["message"] or None)


def with_param_names(error: ImagegateError, names: dict[str, str]) -> ImagegateError:
    """Rename our parameter names (in `param` and the message) to the protocol's, so a client
    reads about the field it actually sent."""
    if error.param is None:
        return error
    head, _, rest = error.param.partition(".")
    if head in names:
        foreign = names[head] + (f".{rest}" if rest else "")
        error.message = error.message.replace(f"{head}:", f"{foreign}:").replace(f"{head} ", f"{foreign} ", 1)
        error.param = foreign
    return error


def _openai_status(error: ImagegateError) -> int:
    if isinstance(error, generation_errors.UnknownModel | generation_errors.ModelRetired):
        return 404
    if isinstance(error, errors.PaymentRequired):
        return 403  # 402 is not one of the statuses the openai SDK maps to an exception class
    if error.status_code == 405:
        return 404
    return error.status_code


def render_openai_error(error: ImagegateError) -> Response:
    status = _openai_status(error)
    code = "model_not_found" if status == 404 and error.param == "model" else error.code
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": code}}
    response = Response(body, status=status)
    if error.code in NOT_RETRYABLE_CODES:
        response["x-should-retry"] = "false"
    elif error.retry_after is not None:
        response["retry-after"] = str(error.retry_after)
    for header, value in error.headers.items():
        response[header] = value
    return response


def _google_status(error: ImagegateError) -> int:
    if isinstance(error, generation_errors.UnknownModel | generation_errors.ModelRetired):
        return 404  # what Google answers for a model it does not (or no longer) serve
    if isinstance(error, errors.PaymentRequired):
        return 403
    return error.status_code


def render_google_error(error: ImagegateError) -> Response:
    status = _google_status(error)
    details: list[dict] = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": error.code.upper(),
            "domain": "imagegate",
            "metadata": {"param": error.param} if error.param else {},
        }
    ]
    retryable = error.retry_after is not None and error.code not in NOT_RETRYABLE_CODES
    if retryable:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{error.retry_after}s"}
        )
    body = {
        "error": {
            "code": status,
            "message": error.message,
            "status": _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
            "details": details,
        }
    }
    response = Response(body, status=status)
    if retryable:
        response["Retry-After"] = str(error.retry_after)
    for header, value in error.headers.items():
        response[header] = value
    return response
