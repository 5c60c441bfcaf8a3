from decimal import Decimal

import pytest
from django.test import Client

from billing.models import BillingAccount
from tenants import services as tenant_services
from tenants.models import Plan

CHECKOUT, PORTAL, OVERVIEW = "/billing/checkout", "/billing/portal", "/billing/"


def logged_in(persona) -> Client:
    client = Client()
    client.force_login(persona.user)
    return client


@pytest.fixture
def team(stripe_catalog) -> Plan:
    """A plan with a monthly base price, synced to the fake Stripe."""
    from billing.catalog import stripe_catalog_sync

    Plan.objects.create(
        code="team",
        name="Team",
        included_images_per_month=50_000,
        base_price_monthly=Decimal("49.00"),
        price_fast=Decimal("0.08"),
        price_standard=Decimal("0.11"),
        price_ultra=Decimal("0.17"),
        requests_per_minute=1200,
        max_concurrent_jobs=64,
        allowed_tiers=["fast", "standard", "ultra"],
    )
    stripe_catalog_sync()
    return Plan.objects.get(code="team")


def test_checkout_redirects_to_the_session_stripe_issued_for_the_right_customer_and_prices(
    alice, stripe_catalog
):
    response = logged_in(alice).post(CHECKOUT, {"plan": "pro"})

    assert response.status_code == 303
    [session] = stripe_catalog.checkout_sessions.values()
    assert response["Location"] == session["url"]
    account = BillingAccount.objects.get(organization=alice.organization)
    customer = stripe_catalog.customers[account.stripe_customer_id]
    assert customer["metadata"] == {"organization_id": alice.organization.public_id}
    assert customer["email"] == "alice@example.com"
    assert session["customer"] == account.stripe_customer_id
    assert session["mode"] == "subscription"
    assert session["client_reference_id"] == alice.organization.public_id
    pro = Plan.objects.get(code="pro")
    # Metered line items carry no quantity.
    assert session["line_items_requested"] == [
        {"price": pro.stripe_price_fast_id},
        {"price": pro.stripe_price_standard_id},
        {"price": pro.stripe_price_ultra_id},
    ]
    assert session["success_url"].endswith("/billing/success?session_id={CHECKOUT_SESSION_ID}")
    assert session["cancel_url"].endswith("/billing/cancel")


def test_a_plan_with_a_base_price_adds_it_with_quantity_one(alice, team, stripe_catalog):
    assert logged_in(alice).post(CHECKOUT, {"plan": "team"}).status_code == 303
    [session] = stripe_catalog.checkout_sessions.values()
    assert session["line_items_requested"][0] == {"price": team.stripe_base_price_id, "quantity": "1"}
    assert len(session["line_items_requested"]) == 4


def test_the_customer_is_created_once(alice, stripe_catalog):
    client = logged_in(alice)
    client.post(CHECKOUT, {"plan": "pro"})
    client.post(CHECKOUT, {"plan": "pro"})
    client.post(PORTAL)

    assert len(stripe_catalog.customers) == 1
    assert len(stripe_catalog.checkout_sessions) == 2


def test_portal_redirects_to_the_session_stripe_issued_for_the_organizations_customer(alice, stripe_catalog):
    response = logged_in(alice).post(PORTAL)

    assert response.status_code == 303
    [session] = stripe_catalog.portal_sessions.values()
    assert response["Location"] == session["url"]
    assert (
        session["customer"] == BillingAccount.objects.get(organization=alice.organization).stripe_customer_id
    )
    assert session["return_url"].endswith("/billing/")


def test_an_admin_may_manage_billing(alice, stripe_catalog, django_user_model):
    admin = django_user_model.objects.create_user(username="ada", password="x" * 20)
    tenant_services.membership_add(organization=alice.organization, user=admin, role="admin")
    client = Client()
    client.force_login(admin)
    assert client.post(PORTAL).status_code == 303


@pytest.mark.parametrize("url,method", [(CHECKOUT, "post"), (PORTAL, "post"), (OVERVIEW, "get")])
def test_members_get_403(bob, stripe_catalog, url, method):
    response = getattr(logged_in(bob), method)(url, {"plan": "pro"} if method == "post" else {})
    assert response.status_code == 403
    assert stripe_catalog.customers == {}


@pytest.mark.parametrize(
    "url,method",
    [
        (CHECKOUT, "post"),
        (PORTAL, "post"),
        (OVERVIEW, "get"),
        ("/billing/success", "get"),
        ("/billing/cancel", "get"),
    ],
)
def test_anonymous_users_are_sent_to_log_in(db, url, method):
    response = getattr(Client(), method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_another_organizations_id_is_404(alice, charlie, stripe_catalog):
    client = logged_in(charlie)
    assert (
        client.post(CHECKOUT, {"plan": "pro", "organization": alice.organization.public_id}).status_code
        == 404
    )
    assert client.post(PORTAL, {"organization": alice.organization.public_id}).status_code == 404
    assert client.get(OVERVIEW, {"organization": alice.organization.public_id}).status_code == 404
    assert stripe_catalog.customers == {}


def test_an_organization_field_picks_among_the_users_organizations(alice, charlie, stripe_catalog):
    tenant_services.membership_add(organization=charlie.organization, user=alice.user, role="owner")
    response = logged_in(alice).post(PORTAL, {"organization": charlie.organization.public_id})
    assert response.status_code == 303
    [customer] = stripe_catalog.customers.values()
    assert customer["metadata"]["organization_id"] == charlie.organization.public_id


@pytest.mark.parametrize("data", [{}, {"plan": ""}, {"plan": "nope"}, {"plan": "free"}])
def test_bad_plans_are_400(alice, stripe_catalog, data):
    response = logged_in(alice).post(CHECKOUT, data)
    assert response.status_code == 400
    assert b"Cannot start checkout" in response.content
    assert stripe_catalog.checkout_sessions == {}


def test_a_plan_not_synced_to_stripe_is_400(alice, fake_stripe):
    response = logged_in(alice).post(CHECKOUT, {"plan": "pro"})
    assert response.status_code == 400
    assert b"not available for purchase" in response.content


def test_checkout_and_portal_only_accept_post(alice, stripe_catalog):
    client = logged_in(alice)
    assert client.get(CHECKOUT).status_code == 405
    assert client.get(PORTAL).status_code == 405


def test_stripe_down_shows_an_error_page(alice, stripe_catalog):
    stripe_catalog.stop()
    response = logged_in(alice).post(PORTAL)
    assert response.status_code == 502
    assert b"Payment provider unavailable" in response.content


@pytest.mark.parametrize(
    "url,method",
    [(CHECKOUT, "post"), (PORTAL, "post"), ("/billing/success", "get"), ("/billing/cancel", "get")],
)
def test_without_stripe_the_payment_pages_say_billing_is_not_configured(alice, settings, url, method):
    settings.STRIPE_SECRET_KEY = ""
    response = getattr(logged_in(alice), method)(url, {"plan": "pro"} if method == "post" else {})
    assert response.status_code == 200
    assert b"Billing is not configured" in response.content
    assert not BillingAccount.objects.exclude(stripe_customer_id="").exists()


def test_success_and_cancel_pages(alice, stripe_catalog):
    client = logged_in(alice)
    assert b"Thank you" in client.get("/billing/success", {"session_id": "cs_test_x"}).content
    assert b"Checkout canceled" in client.get("/billing/cancel").content
