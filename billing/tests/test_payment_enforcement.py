"""A failed payment blocks live generation with 402 once the grace period is over; test keys keep
working; `invoice.paid` unblocks. Exercised through the real POST /v1/generations."""

from datetime import UTC, datetime, timedelta

import time_machine

from billing import services
from billing.selectors import live_generation_blocked
from tests.fake_stripe import invoice_object, stripe_event

GENERATE = "/v1/generations"
BODY = {"prompt": "a lighthouse"}
FAILED_AT = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def assert_payment_required(response):
    assert response.status_code == 402, response.content
    assert response.json() == {
        "error": {
            "type": "billing_error",
            "code": "payment_required",
            "message": "Payment is required to use live keys. Update your payment method in the dashboard.",
            "param": None,
        }
    }
    assert response["X-Request-Id"]


def test_failed_payment_past_grace_blocks_live_keys_until_invoice_paid(
    alice, stripe_catalog, stripe_webhook, settings
):
    assert settings.BILLING_GRACE_PERIOD_DAYS == 7
    account = services.billing_customer_ensure(organization=alice.organization)
    live, test = alice.client(alice.raw_live_key), alice.client()

    with time_machine.travel(FAILED_AT, tick=False) as clock:
        failed = stripe_event(
            "invoice.payment_failed", invoice_object(customer=account.stripe_customer_id, paid=False)
        )
        assert stripe_webhook(failed).status_code == 200
        assert live.post(GENERATE, BODY, format="json").status_code == 202  # the grace period starts now

        clock.move_to(FAILED_AT + timedelta(days=7) - timedelta(seconds=1))
        assert live.post(GENERATE, BODY, format="json").status_code == 202

        clock.move_to(FAILED_AT + timedelta(days=7))
        assert_payment_required(live.post(GENERATE, BODY, format="json"))
        assert test.post(GENERATE, BODY, format="json").status_code == 202  # test keys keep working
        assert live.get("/v1/generations").status_code == 200  # only generation is blocked

        paid = stripe_event("invoice.paid", invoice_object(customer=account.stripe_customer_id, paid=True))
        assert stripe_webhook(paid).status_code == 200
        assert live.post(GENERATE, BODY, format="json").status_code == 202


def test_grace_period_is_configurable(alice, stripe_catalog, stripe_webhook, settings):
    settings.BILLING_GRACE_PERIOD_DAYS = 0
    account = services.billing_customer_ensure(organization=alice.organization)
    with time_machine.travel(FAILED_AT, tick=False):
        stripe_webhook(
            stripe_event(
                "invoice.payment_failed", invoice_object(customer=account.stripe_customer_id, paid=False)
            )
        )
        assert_payment_required(alice.client(alice.raw_live_key).post(GENERATE, BODY, format="json"))


def test_an_organization_without_billing_state_is_never_blocked(alice, charlie):
    assert not live_generation_blocked(organization=alice.organization)
    assert alice.client(alice.raw_live_key).post(GENERATE, BODY, format="json").status_code == 202
    assert charlie.client().post(GENERATE, BODY, format="json").status_code == 202


def test_the_block_is_per_organization(alice, charlie, stripe_catalog, stripe_webhook):
    account = services.billing_customer_ensure(organization=alice.organization)
    with time_machine.travel(FAILED_AT, tick=False) as clock:
        stripe_webhook(
            stripe_event(
                "invoice.payment_failed", invoice_object(customer=account.stripe_customer_id, paid=False)
            )
        )
        clock.move_to(FAILED_AT + timedelta(days=8))
        assert live_generation_blocked(organization=alice.organization)
        assert not live_generation_blocked(organization=charlie.organization)
