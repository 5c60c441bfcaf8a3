"""pytest plugin: a fake Stripe on 127.0.0.1 that stripe-python talks to for real, and signed webhooks.

Fixtures:
  fake_stripe       a started `fakes.stripe_server.FakeStripe`, with settings pointing the app at it
  stripe_catalog    fake_stripe after `stripe_sync` (product, meters, prices stored on the plans)
  stripe_webhook    post(event, *, timestamp=None, secret=None, client=None) -> response, signed
                    with `stripe.WebhookSignature.generate_signature_header` like Stripe signs

Helpers build Stripe-shaped event payloads (API 2026-10-28: periods live on subscription items).
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import stripe
from django.test import Client

from fakes.stripe_server import FakeStripe

WEBHOOK_SECRET = "whsec_test_imagegate_0123456789"
SECRET_KEY = "sk_test_imagegate_fake"
_ids = itertools.count(1)


@pytest.fixture
def fake_stripe(settings):
    fake = FakeStripe()
    base_url = fake.start()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = base_url
    settings.STRIPE_TIMEOUT_SECONDS = 5.0
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    yield fake
    fake.stop()


@pytest.fixture
def stripe_catalog(fake_stripe, db):
    from billing.catalog import stripe_catalog_sync

    stripe_catalog_sync()
    return fake_stripe


def stripe_event(
    event_type: str, obj: dict, *, created: int | None = None, event_id: str | None = None
) -> dict:
    return {
        "id": event_id or f"evt_test_{next(_ids):06d}{int(time.time() * 1000) % 100000:05d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": obj},
    }


def subscription_object(
    *, customer: str, price_ids: list[str], status: str = "active", subscription_id: str = "sub_test_1"
) -> dict:
    now = int(time.time())
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "start_date": now,
        "ended_at": now if status == "canceled" else None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_test_{index}",
                    "object": "subscription_item",
                    "price": {"id": price_id, "object": "price"},
                    "current_period_start": now,
                    "current_period_end": now + 30 * 86400,
                }
                for index, price_id in enumerate(price_ids)
            ],
        },
    }


def invoice_object(*, customer: str, paid: bool, subscription: str = "sub_test_1") -> dict:
    now = int(time.time())
    return {
        "id": f"in_test_{next(_ids)}",
        "object": "invoice",
        "customer": customer,
        "status": "paid" if paid else "open",
        "amount_due": 1234,
        "currency": "usd",
        "period_start": now - 30 * 86400,
        "period_end": now,
        "status_transitions": {"paid_at": now if paid else None},
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": subscription}},
    }


def plan_price_ids(plan) -> list[str]:
    ids = [plan.stripe_price_fast_id, plan.stripe_price_standard_id, plan.stripe_price_ultra_id]
    return [plan.stripe_base_price_id, *ids] if plan.stripe_base_price_id else ids


def activate_subscription(organization, plan, *, subscription_id: str | None = None):
    """Give `organization` a Stripe customer (in the fake) and an active subscription to `plan`, the
    way production gets one: our customer service, then Stripe's `customer.subscription.created`."""
    from billing import services

    account = services.billing_customer_ensure(organization=organization)
    plan.refresh_from_db()
    services.stripe_event_process(
        event=stripe_event(
            "customer.subscription.created",
            subscription_object(
                customer=account.stripe_customer_id,
                price_ids=plan_price_ids(plan),
                subscription_id=subscription_id or f"sub_test_{organization.public_id}",
            ),
        )
    )
    account.refresh_from_db()
    return account


@pytest.fixture
def stripe_webhook(fake_stripe):
    def post(
        event: dict, *, timestamp: int | None = None, secret: str | None = None, client: Client | None = None
    ):
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            body, secret or WEBHOOK_SECRET, timestamp=timestamp if timestamp is not None else int(time.time())
        )
        return (client or Client()).post(
            "/webhooks/stripe", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )

    return post
