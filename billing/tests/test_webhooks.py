import json
import time

import pytest
import stripe
from django.test import Client

from billing import services
from billing.models import BillingAccount, StripeEvent
from tenants.models import Plan
from tests.fake_stripe import (
    WEBHOOK_SECRET,
    invoice_object,
    plan_price_ids,
    stripe_event,
    subscription_object,
)

URL = "/webhooks/stripe"


@pytest.fixture
def account(alice, stripe_catalog) -> BillingAccount:
    """alice's organization with a Stripe customer, not yet subscribed."""
    return services.billing_customer_ensure(organization=alice.organization)


@pytest.fixture
def pro(stripe_catalog) -> Plan:
    return Plan.objects.get(code="pro")


def subscription_event(
    account, plan, *, event_type="customer.subscription.created", status="active", **kwargs
):
    return stripe_event(
        event_type,
        subscription_object(
            customer=account.stripe_customer_id,
            price_ids=plan_price_ids(plan),
            status=status,
            subscription_id=kwargs.pop("subscription_id", "sub_test_1"),
        ),
        **kwargs,
    )


def state(account) -> tuple:
    account.refresh_from_db()
    return (
        account.stripe_subscription_id,
        account.subscription_status,
        account.plan_id,
        account.payment_failed_at,
        StripeEvent.objects.count(),
    )


def test_a_subscription_event_mirrors_status_plan_and_period(account, pro, stripe_webhook):
    organization = account.organization
    organization.plan = Plan.objects.get(code="free")
    organization.save()

    response = stripe_webhook(subscription_event(account, pro))

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    account.refresh_from_db()
    assert account.stripe_subscription_id == "sub_test_1"
    assert account.subscription_status == "active"
    assert account.plan == pro
    assert account.current_period_end is not None
    organization.refresh_from_db()
    assert organization.plan == pro  # limits and prices follow what the organization pays for
    event = StripeEvent.objects.get()
    assert (event.type, event.organization, event.outcome) == (
        "customer.subscription.created",
        organization,
        "applied",
    )


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda body, header: (body, header.replace("v1=", "v1=0")), id="bad-signature"),
        pytest.param(lambda body, header: (body.replace("active", "trialing"), header), id="tampered-body"),
        pytest.param(lambda body, header: (body, None), id="no-header"),
        pytest.param(lambda body, header: (body, "t=1,v1=abc"), id="garbage-header"),
    ],
)
def test_a_bad_signature_is_400_and_changes_nothing(account, pro, mangle):
    before = state(account)
    body = json.dumps(subscription_event(account, pro))
    header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    body, header = mangle(body, header)
    extra = {"HTTP_STRIPE_SIGNATURE": header} if header else {}

    response = Client().post(URL, data=body, content_type="application/json", **extra)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert state(account) == before


def test_a_stale_signature_is_400_and_changes_nothing(account, pro, stripe_webhook):
    before = state(account)

    response = stripe_webhook(subscription_event(account, pro), timestamp=int(time.time()) - 600)

    assert response.status_code == 400
    assert state(account) == before


def test_a_signature_made_with_another_secret_is_400(account, pro, stripe_webhook):
    assert stripe_webhook(subscription_event(account, pro), secret="whsec_someone_else").status_code == 400
    assert StripeEvent.objects.count() == 0


def test_without_a_webhook_secret_every_webhook_is_refused(account, pro, stripe_webhook, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    assert stripe_webhook(subscription_event(account, pro)).status_code == 400
    assert StripeEvent.objects.count() == 0


def test_a_replayed_event_is_processed_once(account, pro, stripe_webhook):
    created = subscription_event(account, pro, created=int(time.time()) - 60)
    assert stripe_webhook(created).status_code == 200
    later = subscription_event(account, pro, event_type="customer.subscription.updated", status="past_due")
    assert stripe_webhook(later).status_code == 200

    replay = stripe_webhook(created)

    assert replay.status_code == 200
    assert replay.json() == {"received": True, "duplicate": True}
    account.refresh_from_db()
    assert account.subscription_status == "past_due"  # the replay did not re-apply "active"
    assert StripeEvent.objects.filter(event_id=created["id"]).count() == 1


def test_an_older_event_arriving_late_is_ignored(account, pro, stripe_webhook):
    now = int(time.time())
    stripe_webhook(subscription_event(account, pro, event_type="customer.subscription.updated", created=now))
    stale = subscription_event(
        account, pro, event_type="customer.subscription.updated", status="past_due", created=now - 30
    )

    assert stripe_webhook(stale).status_code == 200

    account.refresh_from_db()
    assert account.subscription_status == "active"
    assert StripeEvent.objects.get(event_id=stale["id"]).outcome.startswith("ignored")


def test_checkout_completed_links_the_subscription(account, stripe_webhook):
    session = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": account.stripe_customer_id,
        "subscription": "sub_test_from_checkout",
        "client_reference_id": account.organization.public_id,
        "payment_status": "paid",
        "status": "complete",
    }

    assert stripe_webhook(stripe_event("checkout.session.completed", session)).status_code == 200

    account.refresh_from_db()
    assert account.stripe_subscription_id == "sub_test_from_checkout"


def test_deleted_subscription_returns_the_organization_to_the_default_plan(account, pro, stripe_webhook):
    stripe_webhook(subscription_event(account, pro, created=int(time.time()) - 60))

    stripe_webhook(
        subscription_event(account, pro, event_type="customer.subscription.deleted", status="canceled")
    )

    account.refresh_from_db()
    assert account.subscription_status == "canceled"
    assert not account.has_billable_subscription
    account.organization.refresh_from_db()
    assert account.organization.plan.code == "free"


def test_payment_failure_starts_grace_once_and_invoice_paid_clears_it(account, stripe_webhook):
    customer = account.stripe_customer_id
    first = stripe_event(
        "invoice.payment_failed", invoice_object(customer=customer, paid=False), created=1_790_000_000
    )
    retry = stripe_event(
        "invoice.payment_failed", invoice_object(customer=customer, paid=False), created=1_790_086_400
    )
    stripe_webhook(first)
    stripe_webhook(retry)

    account.refresh_from_db()
    assert int(account.payment_failed_at.timestamp()) == 1_790_000_000  # grace runs from the first failure

    stripe_webhook(stripe_event("invoice.paid", invoice_object(customer=customer, paid=True)))

    account.refresh_from_db()
    assert account.payment_failed_at is None
    assert account.last_invoice_paid_at is not None


def test_events_for_unknown_customers_and_types_are_acknowledged_and_ignored(fake_stripe, db, stripe_webhook):
    unknown = stripe_event("invoice.paid", invoice_object(customer="cus_not_ours", paid=True))
    other = stripe_event("charge.refunded", {"id": "ch_1", "object": "charge"})

    assert stripe_webhook(unknown).status_code == 200
    assert stripe_webhook(other).status_code == 200

    assert StripeEvent.objects.get(event_id=unknown["id"]).outcome == "ignored: unknown customer"
    assert StripeEvent.objects.get(event_id=other["id"]).outcome == "ignored: event type not handled"


def test_only_post_is_allowed(db):
    assert Client().get(URL).status_code == 405
