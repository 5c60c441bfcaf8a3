"""The fake validates what Stripe validates for the calls we make (through the real SDK)."""

import time

import pytest

from billing import errors, stripe_client
from fakes.stripe_server import parse_form


def test_bracket_encoding_is_decoded_like_stripe_does():
    assert parse_form("line_items[0][price]=p1&line_items[1][price]=p2&line_items[1][quantity]=1&a[b]=c") == {
        "line_items": [{"price": "p1"}, {"price": "p2", "quantity": "1"}],
        "a": {"b": "c"},
    }


def meter_event(**overrides):
    params = {
        "event_name": "imagegate_images_fast",
        "stripe_customer_id": "cus_1",
        "value": 1,
        "identifier": "usg_1",
        "timestamp": int(time.time()),
        "idempotency_key": f"k-{time.monotonic_ns()}",
    }
    return stripe_client.meter_event_create(**{**params, **overrides})


def test_meter_event_identifiers_are_unique(fake_stripe):
    meter_event()
    with pytest.raises(errors.DuplicateMeterEvent):
        meter_event()
    assert [r.outcome for r in fake_stripe.received()] == ["accepted", "duplicate"]


@pytest.mark.parametrize("age", [35 * 86400 + 60, -(5 * 60 + 60)])
def test_meter_event_timestamps_must_be_recent(fake_stripe, age):
    with pytest.raises(errors.PaymentProviderRejected, match="Timestamp"):
        meter_event(timestamp=int(time.time()) - age)
    assert fake_stripe.meter_events == {}


def test_a_saved_500_is_replayed_for_the_same_idempotency_key(fake_stripe):
    fake_stripe.meter_event_failure_rate = 1.0
    with pytest.raises(errors.PaymentProviderUnavailable):
        meter_event(idempotency_key="same")
    fake_stripe.meter_event_failure_rate = 0.0
    with pytest.raises(errors.PaymentProviderUnavailable):
        meter_event(idempotency_key="same")
    assert meter_event(idempotency_key="fresh")["identifier"] == "usg_1"


def test_a_reused_idempotency_key_with_other_parameters_is_refused(fake_stripe):
    meter_event(idempotency_key="k1")
    with pytest.raises(errors.PaymentProviderRejected, match="same parameters"):
        meter_event(idempotency_key="k1", identifier="usg_2")


def test_metered_line_items_must_not_carry_a_quantity(stripe_catalog):
    from tenants.models import Plan

    pro = Plan.objects.get(code="pro")
    customer = stripe_client.customer_create(
        name="x", email="", organization_public_id="org_1", idempotency_key="c1"
    )
    with pytest.raises(errors.PaymentProviderRejected, match="Quantity should not be specified"):
        stripe_client.checkout_session_create(
            customer_id=customer,
            line_items=[{"price": pro.stripe_price_fast_id, "quantity": 1}],
            success_url="http://x/ok",
            cancel_url="http://x/no",
            client_reference_id="org_1",
            metadata={},
            idempotency_key="s1",
        )


def test_a_metered_price_needs_a_meter(stripe_catalog):
    product = next(iter(stripe_catalog.products))
    with pytest.raises(errors.PaymentProviderRejected, match="meter is required"):
        stripe_client.price_create(
            params={
                "product": product,
                "currency": "usd",
                "unit_amount_decimal": "9",
                "recurring": {"interval": "month", "usage_type": "metered"},
            },
            idempotency_key="p1",
        )


def test_a_portal_session_needs_a_known_customer(fake_stripe):
    with pytest.raises(errors.PaymentProviderRejected, match="No such customer"):
        stripe_client.portal_session_create(
            customer_id="cus_nope", return_url="http://x", idempotency_key="p"
        )


def test_a_bad_api_key_is_refused(fake_stripe, settings):
    settings.STRIPE_SECRET_KEY = "pk_test_publishable"
    with pytest.raises(errors.PaymentProviderRejected):
        stripe_client.meter_list_active()


def test_meter_event_identifiers_are_deduplicated_for_24_hours_only(stripe_catalog):
    """Like Stripe: a retry a day later is a second event, counted again."""
    import time_machine

    with time_machine.travel(time.time(), tick=False) as clock:
        meter_event(timestamp=int(time.time()))
        clock.shift(23 * 3600)
        with pytest.raises(errors.DuplicateMeterEvent):
            meter_event(timestamp=int(time.time()))
        clock.shift(3600)
        meter_event(timestamp=int(time.time()))
    assert [r.outcome for r in stripe_catalog.received("POST", "/v1/billing/meter_events")] == [
        "accepted",
        "duplicate",
        "accepted",
    ]
    assert len(stripe_catalog.meter_event_log) == 2


def test_event_summaries_sum_a_customers_events_in_a_minute_aligned_range(stripe_catalog):
    meter = next(m for m in stripe_catalog.meters.values() if m["event_name"] == "imagegate_images_fast")
    start = (int(time.time()) // 60 - 10) * 60
    meter_event(identifier="a", value=3, timestamp=start)
    meter_event(identifier="b", value=2, timestamp=start + 59)
    meter_event(identifier="c", value=5, timestamp=start + 60)
    meter_event(identifier="d", value=7, timestamp=start, stripe_customer_id="cus_other")
    meter_event(identifier="e", value=11, timestamp=start, event_name="imagegate_images_ultra")

    def summary(begin, end):
        return stripe_client.meter_event_summary(
            meter_id=meter["id"], customer_id="cus_1", start_time=begin, end_time=end
        )

    assert summary(start, start + 60) == 5
    assert summary(start, start + 120) == 10
    assert summary(start + 120, start + 180) == 0
    with pytest.raises(errors.PaymentProviderRejected, match="minute boundaries"):
        summary(start + 1, start + 60)
