"""Billing's domain errors. They extend the one hierarchy in `tenants.errors`, so API views render
them like every other error; `code` values are public API, never rename one."""

from __future__ import annotations

from tenants.errors import ImagegateError, InvalidRequest


class BillingNotConfigured(ImagegateError):
    """No STRIPE_SECRET_KEY: billing runs ledger-only."""

    status_code = 503
    type = "api_error"
    code = "billing_not_configured"
    default_message = "Billing is not configured on this installation."


class PaymentProviderError(ImagegateError):
    """Stripe did not do what we asked. `retryable` says whether the same call may succeed later."""

    status_code = 502
    type = "api_error"
    code = "payment_provider_error"
    default_message = "The payment provider could not complete the request. Try again in a moment."
    retryable = False

    def __init__(self, message: str | None = None, *, stripe_code: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.stripe_code = stripe_code


class PaymentProviderUnavailable(PaymentProviderError):
    """Network error, timeout, 5xx, 409 or 429: the outcome is unknown or transient."""

    retryable = True


class PaymentProviderRejected(PaymentProviderError):
    """A 4xx: Stripe understood the request and refused it."""


class DuplicateMeterEvent(PaymentProviderRejected):
    """Stripe already holds a meter event with this identifier: the usage was delivered before."""


class InvalidWebhookSignature(InvalidRequest):
    code = "invalid_signature"
    default_message = "The Stripe-Signature header is missing, invalid or too old."
