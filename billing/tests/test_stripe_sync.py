from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from billing.catalog import dollars_to_cents_decimal
from billing.models import BillingMeter
from tenants.models import Plan

CATALOG_PATHS = {"/v1/products", "/v1/prices", "/v1/billing/meters"}


def creates(fake) -> list:
    return [r for r in fake.received("POST") if r.path in CATALOG_PATHS and r.status == 200]


@pytest.fixture
def team_plan(db) -> Plan:
    """A plan with a monthly base price, next to the seeded Free and Pro (no base price)."""
    return Plan.objects.create(
        code="team",
        name="Team",
        included_images_per_month=50_000,
        base_price_monthly=Decimal("49.00"),
        price_fast=Decimal("0.0800"),
        price_standard=Decimal("0.1100"),
        price_ultra=Decimal("0.0125"),
        requests_per_minute=1200,
        max_concurrent_jobs=64,
        allowed_tiers=["fast", "standard", "ultra"],
    )


def test_sync_creates_product_meters_and_prices(fake_stripe, team_plan, capsys):
    call_command("stripe_sync")

    assert len(fake_stripe.products) == 1
    meters = {m["event_name"]: m for m in fake_stripe.meters.values()}
    assert set(meters) == {"imagegate_images_fast", "imagegate_images_standard", "imagegate_images_ultra"}
    assert all(m["default_aggregation"]["formula"] == "sum" for m in meters.values())
    assert {row.tier: row.stripe_meter_id for row in BillingMeter.objects.all()} == {
        "fast": meters["imagegate_images_fast"]["id"],
        "standard": meters["imagegate_images_standard"]["id"],
        "ultra": meters["imagegate_images_ultra"]["id"],
    }

    pro, team, free = (Plan.objects.get(code=c) for c in ("pro", "team", "free"))
    product_id = next(iter(fake_stripe.products))
    assert pro.stripe_product_id == team.stripe_product_id == product_id
    for plan in (pro, team):
        for tier in ("fast", "standard", "ultra"):
            price = fake_stripe.prices[getattr(plan, f"stripe_price_{tier}_id")]
            assert price["recurring"]["usage_type"] == "metered"
            assert price["recurring"]["meter"] == meters[f"imagegate_images_{tier}"]["id"]
            assert price["recurring"]["interval"] == "month"
            assert Decimal(price["unit_amount_decimal"]) == plan.price_for(tier) * 100
            assert price["product"] == product_id
    assert fake_stripe.prices[team.stripe_price_ultra_id]["unit_amount_decimal"] == "1.25"
    base = fake_stripe.prices[team.stripe_base_price_id]
    assert base["unit_amount"] == 4900 and base["recurring"]["usage_type"] == "licensed"
    assert pro.stripe_base_price_id == ""  # Pro has no base price
    # The free plan gets no prices.
    assert (free.stripe_price_fast_id, free.stripe_base_price_id) == ("", "")
    assert len(fake_stripe.prices) == 7
    assert "11 created, 0 updated, 0 unchanged" in capsys.readouterr().out


def test_second_run_creates_nothing(fake_stripe, team_plan):
    call_command("stripe_sync")
    first = len(creates(fake_stripe))
    objects = fake_stripe.created_objects()
    ids = list(Plan.objects.order_by("code").values_list("stripe_price_fast_id", "stripe_base_price_id"))

    call_command("stripe_sync")

    assert first == 1 + 3 + 7
    assert len(creates(fake_stripe)) == first
    assert fake_stripe.created_objects() == objects
    assert (
        list(Plan.objects.order_by("code").values_list("stripe_price_fast_id", "stripe_base_price_id")) == ids
    )


def test_a_changed_price_gets_a_new_stripe_price_that_takes_over_the_lookup_key(fake_stripe, db):
    call_command("stripe_sync")
    pro = Plan.objects.get(code="pro")
    old_fast, old_standard = pro.stripe_price_fast_id, pro.stripe_price_standard_id
    pro.price_fast = Decimal("0.0700")
    pro.save()

    call_command("stripe_sync")

    pro.refresh_from_db()
    assert pro.stripe_price_standard_id == old_standard
    assert pro.stripe_price_fast_id != old_fast
    assert fake_stripe.prices[pro.stripe_price_fast_id]["unit_amount_decimal"] == "7"
    assert fake_stripe.prices[pro.stripe_price_fast_id]["lookup_key"] == "imagegate_pro_fast"
    assert fake_stripe.prices[old_fast]["lookup_key"] is None


def test_sync_adopts_existing_meters_when_our_table_was_lost(fake_stripe, db):
    call_command("stripe_sync")
    meter_ids = set(fake_stripe.meters)
    BillingMeter.objects.all().delete()

    call_command("stripe_sync")

    assert set(fake_stripe.meters) == meter_ids
    assert set(BillingMeter.objects.values_list("stripe_meter_id", flat=True)) == meter_ids


def test_without_a_key_the_command_explains(db, settings):
    settings.STRIPE_SECRET_KEY = ""
    with pytest.raises(CommandError, match="STRIPE_SECRET_KEY"):
        call_command("stripe_sync")


@pytest.mark.parametrize(
    "dollars,cents",
    [("0.09", "9"), ("0.0900", "9"), ("0.19", "19"), ("0.0125", "1.25"), ("49.00", "4900"), ("1", "100")],
)
def test_dollars_to_cents_decimal(dollars, cents):
    assert dollars_to_cents_decimal(Decimal(dollars)) == cents
