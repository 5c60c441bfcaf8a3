"""Tenant isolation for billing: usage, checkout and portal never cross organizations."""

from django.test import Client

from billing.models import BillingAccount
from billing.tests.helpers import usage_record_create


def test_charlie_cannot_see_alices_usage(alice, charlie):
    usage_record_create(organization=alice.organization, api_key=alice.live_key)
    body = charlie.client().get("/v1/usage").json()
    assert body["organization"] == charlie.organization.public_id
    assert body["totals"]["images"] == 0 and body["data"] == []


def test_charlie_cannot_open_checkout_or_portal_for_alices_organization(alice, charlie, stripe_catalog):
    client = Client()
    client.force_login(charlie.user)
    target = alice.organization.public_id

    assert client.post("/billing/checkout", {"plan": "pro", "organization": target}).status_code == 404
    assert client.post("/billing/portal", {"organization": target}).status_code == 404
    assert not BillingAccount.objects.filter(organization=alice.organization).exists()
    assert stripe_catalog.customers == {}
