"""The one hierarchy of domain errors. `tenants.api.exception_handler` renders them as

    {"error": {"type": ..., "code": ..., "message": ..., "param": ...}}

with the HTTP status below. `code` values are part of the public API: never rename one.
"""

from __future__ import annotations


class ImagegateError(Exception):
    status_code = 500
    type = "api_error"
    code = "internal_error"
    default_message = "An internal error occurred."

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ):
        self.message = message or self.default_message
        self.extra = dict(extra or {})  # more top-level members of the error body (never "error")
        self.param = param
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def as_dict(self) -> dict:
        return {"type": self.type, "code": self.code, "message": self.message, "param": self.param}


class InvalidRequest(ImagegateError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"
    default_message = "The request is invalid."


class InvalidApiKey(ImagegateError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"
    default_message = "Invalid API key."


class PaymentRequired(ImagegateError):
    status_code = 402
    type = "billing_error"
    code = "payment_required"
    default_message = "Payment is required to use live keys. Update your payment method in the dashboard."


class TenantSuspended(ImagegateError):
    status_code = 403
    type = "permission_error"
    code = "tenant_suspended"
    default_message = "This organization is suspended. Contact support."


class PermissionDenied(ImagegateError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"
    default_message = "This API key is not allowed to do that."


class NotFound(ImagegateError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"
    default_message = "No such object."


class Conflict(ImagegateError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"
    default_message = "The request conflicts with the current state of the object."


class RateLimited(ImagegateError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limited"
    default_message = "Too many requests. Retry after the time in the Retry-After header."


class QuotaExceeded(ImagegateError):
    status_code = 429
    type = "rate_limit_error"
    code = "quota_exceeded"
    default_message = "The monthly image quota of this organization is used up."


class ServiceUnavailable(ImagegateError):
    """The database or Redis failed under this request (a restart, a failover, a timeout): never a
    500, always retryable, with Retry-After (see config/outages.py)."""

    status_code = 503
    type = "api_error"
    code = "service_unavailable"
    default_message = "The service is briefly unavailable. Retry after the time in the Retry-After header."


class SpendCapExceeded(ImagegateError):
    """The organization's monthly spend cap would be exceeded by this request's worst case."""

    status_code = 429
    type = "rate_limit_error"
    code = "spend_cap_exceeded"
    default_message = "This request would exceed the organization's monthly spend cap."


class KeyCapExceeded(ImagegateError):
    """The API key's monthly image or spend cap would be exceeded by this request."""

    status_code = 429
    type = "rate_limit_error"
    code = "key_cap_exceeded"
    default_message = "This request would exceed the API key's monthly cap."


class MaxCostExceeded(InvalidRequest):
    """The request's worst-case cost is above the `max_cost` it was sent with (nothing reserved)."""

    code = "max_cost_exceeded"
    default_message = "The worst-case cost of this request is above its max_cost."


class MethodNotAllowed(ImagegateError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    default_message = "This HTTP method is not allowed here."


class RequestTooLarge(ImagegateError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"
    default_message = "The request body is too large."


class ApiKeyInQuery(InvalidRequest):
    """A key in the URL ends up in access logs, proxies and browser history: refused, never used."""

    code = "api_key_in_query"
    default_message = (
        "API keys are never accepted in the query string (it is logged by proxies). Remove the "
        "'key'/'api_key' parameter, revoke that key, and send a new one as 'Authorization: Bearer <key>' "
        "or 'x-goog-api-key'."
    )


class TestModeLimitExceeded(ImagegateError):
    __test__ = False  # not a pytest test class despite the name

    status_code = 429
    type = "rate_limit_error"
    code = "test_mode_limit_exceeded"
    default_message = "This organization used up today's test-mode images. Use a live key or retry tomorrow."


class EmailNotVerified(ImagegateError):
    status_code = 403
    type = "permission_error"
    code = "email_not_verified"
    default_message = "Verify your e-mail address first: follow the link we sent you."
