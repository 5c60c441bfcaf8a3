from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import Client

from billing.models import BillingAccount
from billing.selectors import organization_invoice_preview, organization_statement
from billing.services import billing_account_payment_failed_set
from billing.tests.helpers import usage_record_create
from tenants import services as tenant_services
from tenants.models import Plan

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def usage(alice, charlie, clock):
    org = alice.organization
    for _ in range(3):
        usage_record_create(organization=org, api_key=alice.live_key, tier="fast")
    usage_record_create(
        organization=org, api_key=alice.live_key, tier="ultra", created_at=datetime(2026, 11, 1, tzinfo=UTC)
    )
    second_key, _ = tenant_services.api_key_create(
        organization=org, name="batch", mode="live", scopes=["generate"]
    )
    usage_record_create(organization=org, api_key=second_key, tier="standard")
    usage_record_create(
        organization=org,
        api_key=second_key,
        tier="standard",
        created_at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC),
    )
    usage_record_create(
        organization=org, api_key=alice.key, tier="fast", livemode=False, unit_price=Decimal(0)
    )
    usage_record_create(organization=charlie.organization, tier="ultra")
    return second_key


def test_statement_by_tier_and_key_counts_live_usage_in_the_period(alice, usage):
    statement = organization_statement(
        organization=alice.organization, period_start=date(2026, 11, 1), period_end=date(2026, 12, 1)
    )

    assert {tier: (line.images, line.amount) for tier, line in statement.by_tier.items()} == {
        "fast": (3, Decimal("0.27")),
        "standard": (1, Decimal("0.12")),
        "ultra": (1, Decimal("0.19")),  # at the first instant of the period: included
    }
    assert [(k.name, k.images, k.amount) for k in statement.by_key] == [
        ("alice live", 4, Decimal("0.46")),
        ("batch", 1, Decimal("0.12")),
    ]
    assert statement.by_key[1].api_key_id == usage.public_id
    assert (statement.images, statement.amount, statement.currency) == (5, Decimal("0.58"), "usd")


def test_each_tier_line_is_rounded_to_cents_like_stripe_rounds_invoice_lines(alice, clock):
    for _ in range(3):
        usage_record_create(organization=alice.organization, unit_price=Decimal("0.0125"))

    statement = organization_statement(
        organization=alice.organization, period_start=date(2026, 11, 1), period_end=date(2026, 12, 1)
    )

    assert statement.by_tier["fast"].amount == Decimal("0.04")  # 3 x 1.25 cents = 3.75 cents


def test_invoice_preview_adds_the_base_price_and_follows_the_subscription_period(alice, usage, clock):
    org = alice.organization
    org.plan.base_price_monthly = Decimal("49.00")
    org.plan.save()
    BillingAccount.objects.create(
        organization=org,
        current_period_start=datetime(2026, 11, 10, tzinfo=UTC),
        current_period_end=datetime(2026, 12, 10, tzinfo=UTC),
    )

    preview = organization_invoice_preview(organization=org)

    # Only usage since the subscription period began (Nov 10): 3 fast + 1 standard.
    assert preview.lines == [
        ("Pro plan", 1, Decimal("49.00")),
        ("Fast images", 3, Decimal("0.27")),
        ("Standard images", 1, Decimal("0.12")),
    ]
    assert preview.total == Decimal("49.39")


def test_ledger_only_billing_page_shows_usage_and_says_billing_is_not_configured(alice, usage, settings):
    settings.STRIPE_SECRET_KEY = ""
    client = Client()
    client.force_login(alice.user)

    response = client.get("/billing/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Billing is not configured" in page
    assert "0.27" in page and "batch" in page
    assert "Subscribe to" not in page


def test_billing_page_offers_paid_plans_when_stripe_is_configured(alice, stripe_catalog):
    client = Client()
    client.force_login(alice.user)
    page = client.get("/billing/").content.decode()
    assert "Subscribe to Pro" in page and "Subscribe to Free" not in page
    assert "Manage payment methods" in page
    assert Plan.objects.get(code="pro").stripe_price_fast_id


def test_billing_page_warns_during_grace_and_after(alice, clock, settings):
    account = BillingAccount.objects.create(organization=alice.organization)
    billing_account_payment_failed_set(account=account, failed_at=NOW - timedelta(days=1))
    account.save()
    client = Client()
    client.force_login(alice.user)
    assert "A payment failed. Update your payment method before" in client.get("/billing/").content.decode()
    billing_account_payment_failed_set(account=account, failed_at=NOW - timedelta(days=8))
    account.save()
    assert "live API keys answer 402" in client.get("/billing/").content.decode()
