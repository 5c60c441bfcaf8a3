"""The one door to Stripe: the only module that imports `stripe`.

It speaks stripe-python 16's `StripeClient` (`client.v1.…`) to the base address in STRIPE_API_BASE,
returns plain dicts, and turns every Stripe failure into `billing.errors`. Every create call carries
an explicit idempotency key; callers pass a deterministic one wherever a retry must not create a
second object. Stripe v1 replays the saved response for a reused key for 24 h *including 500s*, so
callers that retry across attempts (the outbox) derive a fresh key per attempt and rely on the
meter event `identifier` for deduplication instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import stripe
from django.conf import settings

from billing import errors

DEFAULT_API_BASE = "https://api.stripe.com"
# Stripe's answer to a second meter event with the same identifier (400, stripe-should-retry: false).
_DUPLICATE_MESSAGE = "An event already exists with identifier"


def is_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def webhooks_configured() -> bool:
    return bool(settings.STRIPE_WEBHOOK_SECRET)


def new_idempotency_key(prefix: str) -> str:
    """For calls where a retry may safely create a second object (a checkout or portal session)."""
    return f"{prefix}-{uuid.uuid4().hex}"


@functools.lru_cache(maxsize=8)
def _client(api_key: str, api_base: str, timeout: float, max_network_retries: int) -> stripe.StripeClient:
    base_addresses: dict[str, str] = {"api": api_base}
    if api_base != DEFAULT_API_BASE:
        # A fake or proxy serves everything, including the v2 meter-event host.
        base_addresses.update(meter_events=api_base, files=api_base, connect=api_base)
    return stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,  # type: ignore[arg-type]
        max_network_retries=max_network_retries,
        # One requests.Session per thread (the SDK keeps them thread-local).
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def get_client() -> stripe.StripeClient:
    if not is_configured():
        raise errors.BillingNotConfigured()
    return _client(
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_API_BASE,
        float(settings.STRIPE_TIMEOUT_SECONDS),
        int(settings.STRIPE_MAX_NETWORK_RETRIES),
    )


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _translate(exc: stripe.StripeError) -> errors.PaymentProviderError:
    status = exc.http_status
    code = getattr(exc, "code", None)
    message = f"Stripe: {exc.user_message or str(exc) or type(exc).__name__}"
    if isinstance(exc, stripe.InvalidRequestError) and (
        code == "duplicate_meter_event" or _DUPLICATE_MESSAGE in (exc.user_message or "")
    ):
        return errors.DuplicateMeterEvent(message, stripe_code=code)
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or status is None:
        return errors.PaymentProviderUnavailable(message, stripe_code=code)
    if status >= 500 or status == 409:
        return errors.PaymentProviderUnavailable(message, stripe_code=code)
    return errors.PaymentProviderRejected(message, stripe_code=code)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        raise _translate(exc) from exc


def _missing(exc: stripe.StripeError) -> bool:
    return isinstance(exc, stripe.InvalidRequestError) and exc.http_status == 404


# --- Customers, Checkout, Portal ------------------------------------------------------------------


def customer_create(*, name: str, email: str, organization_public_id: str, idempotency_key: str) -> str:
    params: dict[str, Any] = {"name": name, "metadata": {"organization_id": organization_public_id}}
    if email:
        params["email"] = email
    with _translated():
        customer = get_client().v1.customers.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    return customer.id


def checkout_session_create(
    *,
    customer_id: str,
    line_items: list[dict[str, Any]],
    success_url: str,
    cancel_url: str,
    client_reference_id: str,
    metadata: dict[str, str],
    idempotency_key: str,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "subscription",
        "customer": customer_id,
        "line_items": line_items,
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": client_reference_id,
        "metadata": metadata,
        "subscription_data": {"metadata": metadata},
    }
    with _translated():
        session = get_client().v1.checkout.sessions.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    return _plain(session)


def portal_session_create(*, customer_id: str, return_url: str, idempotency_key: str) -> dict[str, Any]:
    with _translated():
        session = get_client().v1.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": return_url},
            options={"idempotency_key": idempotency_key},
        )
    return _plain(session)


# --- Catalog: product, meters, prices (manage.py stripe_sync) -----------------------------------


def product_retrieve(*, product_id: str) -> dict[str, Any] | None:
    try:
        return _plain(get_client().v1.products.retrieve(product_id))
    except stripe.StripeError as exc:
        if _missing(exc):
            return None
        raise _translate(exc) from exc


def product_create(*, name: str, metadata: dict[str, str], idempotency_key: str) -> dict[str, Any]:
    with _translated():
        product = get_client().v1.products.create(
            params={"name": name, "metadata": metadata}, options={"idempotency_key": idempotency_key}
        )
    return _plain(product)


def product_update(*, product_id: str, name: str, idempotency_key: str) -> dict[str, Any]:
    with _translated():
        product = get_client().v1.products.update(
            product_id, params={"name": name}, options={"idempotency_key": idempotency_key}
        )
    return _plain(product)


def meter_retrieve(*, meter_id: str) -> dict[str, Any] | None:
    try:
        return _plain(get_client().v1.billing.meters.retrieve(meter_id))
    except stripe.StripeError as exc:
        if _missing(exc):
            return None
        raise _translate(exc) from exc


def meter_list_active() -> list[dict[str, Any]]:
    with _translated():
        page = get_client().v1.billing.meters.list(params={"status": "active", "limit": 100})
        return [_plain(meter) for meter in page.auto_paging_iter()]


def meter_create(*, event_name: str, display_name: str, idempotency_key: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "display_name": display_name,
        "event_name": event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    }
    with _translated():
        meter = get_client().v1.billing.meters.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    return _plain(meter)


def price_find_by_lookup_key(*, lookup_key: str) -> dict[str, Any] | None:
    with _translated():
        page = get_client().v1.prices.list(params={"lookup_keys": [lookup_key], "limit": 1})
    return _plain(page.data[0]) if page.data else None


def price_create(*, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    with _translated():
        price = get_client().v1.prices.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    return _plain(price)


# --- Usage -------------------------------------------------------------------------------------


def meter_event_create(
    *,
    event_name: str,
    stripe_customer_id: str,
    value: int,
    identifier: str,
    timestamp: int,
    idempotency_key: str,
) -> dict[str, Any]:
    """One call, no SDK-level retries: the outbox owns retrying (with backoff, across runs)."""
    params: dict[str, Any] = {
        "event_name": event_name,
        "payload": {"stripe_customer_id": stripe_customer_id, "value": str(value)},
        "identifier": identifier,
        "timestamp": timestamp,
    }
    with _translated():
        event = get_client().v1.billing.meter_events.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key, "max_network_retries": 0},
        )
    return _plain(event)


def meter_event_summary(*, meter_id: str, customer_id: str, start_time: int, end_time: int) -> int:
    """What Stripe has aggregated for one customer on one meter in [start_time, end_time) (minute-
    aligned unix seconds). Stripe processes meter events asynchronously: recent events may be missing."""
    params: dict[str, Any] = {
        "customer": customer_id,
        "start_time": start_time,
        "end_time": end_time,
        "limit": 100,
    }
    with _translated():
        page = get_client().v1.billing.meters.event_summaries.list(meter_id, params=params)  # type: ignore[arg-type]
        total = sum(Decimal(str(summary.aggregated_value)) for summary in page.auto_paging_iter())
    return int(total)


# --- Webhooks ----------------------------------------------------------------------------------


def webhook_event_construct(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """Verify `Stripe-Signature` on the raw body with the library's verifier, then return the event."""
    if not webhooks_configured():
        raise errors.InvalidWebhookSignature("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            settings.STRIPE_WEBHOOK_SECRET,
            stripe.Webhook.DEFAULT_TOLERANCE,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        raise errors.InvalidWebhookSignature() from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise errors.InvalidWebhookSignature("The webhook body is not JSON.") from None
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise errors.InvalidWebhookSignature("The webhook body is not a Stripe event.")
    return event
