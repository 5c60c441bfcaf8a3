"""Spend controls seen from the API: caps answer 429 with their own codes (not retryable on the
compat routes), max_cost is refused before anything is reserved, remaining quota and spend are in
the headers and in GET /v1/organization, a finished job settles its reservation to what it cost,
and live keys are refused on a price-0 plan."""

from decimal import Decimal

import pytest

from generation.models import Job
from generation.tests.test_pipeline import generate, live  # noqa: F401 - the fixture
from tenants.models import ApiKey, Organization, Plan, QuotaPeriod, SpendReservation

URL = "/v1/generations"


def post(persona, body, *, live_key=True):
    return persona.client(persona.raw_live_key if live_key else persona.raw_key).post(
        URL, body, format="json"
    )


def error_of(response, status):
    assert response.status_code == status, response.content
    return response.json()["error"]


@pytest.mark.django_db
def test_a_key_over_its_image_cap_is_429_key_cap_exceeded_and_nothing_is_reserved(alice):
    ApiKey.objects.filter(pk=alice.live_key.pk).update(monthly_image_cap=3)
    assert post(alice, {"prompt": "x", "count": 2}).status_code == 202

    error = error_of(post(alice, {"prompt": "x", "count": 2}), 429)

    assert (error["type"], error["code"]) == ("rate_limit_error", "key_cap_exceeded")
    assert Job.objects.count() == 1
    assert QuotaPeriod.objects.get(organization=alice.organization).images_reserved == 2
    assert post(alice, {"prompt": "x", "count": 2}, live_key=False).status_code == 202  # test keys: free


@pytest.mark.django_db
def test_the_organization_spend_cap_is_429_spend_cap_exceeded(alice):
    price = alice.organization.plan.price_standard
    Organization.objects.filter(pk=alice.organization.pk).update(monthly_spend_cap=3 * price)
    assert post(alice, {"prompt": "x", "tier": "standard", "count": 3}).status_code == 202

    error = error_of(post(alice, {"prompt": "x", "tier": "standard"}), 429)

    assert error["code"] == "spend_cap_exceeded"
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_caps_on_the_openai_route_tell_the_sdk_not_to_retry(alice):
    ApiKey.objects.filter(pk=alice.live_key.pk).update(monthly_image_cap=1)
    response = alice.client(alice.raw_live_key).post(
        "/v1/images/generations", {"prompt": "x", "n": 2}, format="json"
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "key_cap_exceeded"
    assert response["x-should-retry"] == "false"


@pytest.mark.django_db
def test_max_cost_below_the_worst_case_is_refused_before_anything_is_reserved(alice):
    price = alice.organization.plan.price_fast  # 0.09 on Pro
    error = error_of(
        post(alice, {"prompt": "x", "count": 2, "max_cost": str(2 * price - Decimal("0.01"))}), 400
    )

    assert (error["code"], error["param"]) == ("max_cost_exceeded", "max_cost")
    assert Job.objects.count() == 0 and not QuotaPeriod.objects.exists()
    assert post(alice, {"prompt": "x", "count": 2, "max_cost": str(2 * price)}).status_code == 202
    assert error_of(post(alice, {"prompt": "x", "max_cost": "-1"}), 400)["param"] == "max_cost"
    assert error_of(post(alice, {"prompt": "x", "max_cost": "lots"}), 400)["param"] == "max_cost"


@pytest.mark.django_db
def test_max_cost_counts_the_dearest_fallback_tier_when_billed_as_served(alice):
    plan = alice.organization.plan
    assert plan.price_standard > plan.price_fast
    body = {"prompt": "x", "max_cost": str(plan.price_fast)}
    assert post(alice, body).status_code == 202  # "allow": a fallback is billed at the fast price
    error = error_of(post(alice, {**body, "fallback": "allow_billed_as_served"}), 400)
    assert error["code"] == "max_cost_exceeded"


@pytest.mark.django_db
def test_remaining_quota_and_spend_are_in_headers_and_in_the_organization(alice):
    org = alice.organization
    price = org.plan.price_fast
    Organization.objects.filter(pk=org.pk).update(
        monthly_spend_cap=Decimal("10.00"), monthly_images_override=100
    )
    ApiKey.objects.filter(pk=alice.live_key.pk).update(
        monthly_image_cap=50, monthly_spend_cap=Decimal("2.00")
    )

    response = post(alice, {"prompt": "x", "count": 4})

    assert response["X-Quota-Images-Remaining"] == "96"
    assert response["X-Spend-Remaining"] == f"{Decimal('10.00') - 4 * price:.2f}"
    assert response["X-Key-Images-Remaining"] == "46"
    assert response["X-Key-Spend-Remaining"] == f"{Decimal('2.00') - 4 * price:.2f}"
    document = alice.client(alice.raw_live_key).get("/v1/organization")
    body = document.json()
    assert body["spend"]["monthly_cap"] == "10.00"
    assert Decimal(body["spend"]["reserved"]) == 4 * price
    assert Decimal(body["spend"]["month_to_date"]) == 0  # nothing delivered yet
    assert body["spend"]["alert_thresholds"] == [80, 100]
    assert body["api_key_spend"]["monthly_image_cap"] == 50
    assert body["api_key_spend"]["images_this_month"] == 4
    assert document["X-Key-Images-Remaining"] == "46"


@pytest.mark.django_db
def test_live_keys_on_a_price_0_plan_are_refused_and_test_keys_work(alice):
    alice.organization.plan = Plan.objects.get(code="free")
    alice.organization.save()

    error = error_of(post(alice, {"prompt": "x"}), 402)

    assert error["code"] == "payment_required" and "test key" in error["message"]
    assert post(alice, {"prompt": "x"}, live_key=False).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_a_finished_job_settles_its_reservation_to_what_it_cost(alice, live):  # noqa: F811
    job = generate(alice, {"prompt": "[filter:1] a crowd", "count": 2}).json()

    assert job["status"] == "succeeded" and job["usage"]["images"] == 1
    reservation = SpendReservation.objects.get(job_public_id=job["id"])
    price = alice.organization.plan.price_fast
    assert (reservation.amount, reservation.settled_amount, reservation.settled_images) == (
        2 * price,
        price,
        1,
    )
    month = QuotaPeriod.objects.get(organization=alice.organization)
    assert (month.spend_reserved, month.spend_used) == (price, price)


@pytest.mark.django_db
def test_a_reached_threshold_is_also_a_signed_webhook_event_once(alice, settings):
    from django.db import transaction

    from generation.models import WebhookDelivery, WebhookEndpoint
    from tenants.limits import quota_reserve, spend_reserve, spend_settle

    org = alice.organization
    WebhookEndpoint.objects.create(organization=org, url="https://hooks.example.com/imagegate", enabled=True)
    Organization.objects.filter(pk=org.pk).update(
        monthly_spend_cap=Decimal("1.00"), spend_alert_thresholds=[50]
    )
    org.refresh_from_db()
    for number in range(3):
        with transaction.atomic():
            quota_reserve(organization=org, images=3)
            spend_reserve(
                organization=org,
                api_key=alice.live_key,
                job_public_id=f"gen_{number}",
                images=3,
                unit_price=Decimal("0.10"),
            )
        spend_settle(job_public_id=f"gen_{number}", images=3, amount=Decimal("0.30"))

    (delivery,) = WebhookDelivery.objects.filter(event="spend.threshold_reached")
    assert delivery.url == "https://hooks.example.com/imagegate"
    assert delivery.payload["threshold_percent"] == 50
    assert delivery.payload["spend"] == "0.6000" and delivery.payload["monthly_cap"] == "1.00"
