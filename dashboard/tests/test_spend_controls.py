"""Spend controls are editable in the dashboard: key caps on the keys page, the organization's spend
cap and alert thresholds on the billing page (owners and admins; another tenant's key is a 404)."""

from decimal import Decimal

import pytest
from django.urls import reverse

from tenants.models import ApiKey, Organization

pytestmark = pytest.mark.django_db


def test_an_owner_sets_and_clears_a_live_keys_caps(web, alice):
    client = web(alice)
    url = reverse("dashboard:key-caps", args=[alice.live_key.public_id])

    response = client.post(url, {"monthly_image_cap": "500", "monthly_spend_cap": "25.50"})

    assert response.status_code == 302
    key = ApiKey.objects.get(pk=alice.live_key.pk)
    assert (key.monthly_image_cap, key.monthly_spend_cap) == (500, Decimal("25.50"))
    page = client.get(reverse("dashboard:keys")).content.decode()
    assert 'value="500"' in page and 'value="25.50"' in page

    client.post(url, {"monthly_image_cap": "", "monthly_spend_cap": ""})
    key.refresh_from_db()
    assert (key.monthly_image_cap, key.monthly_spend_cap) == (None, None)


def test_bad_caps_change_nothing(web, alice):
    url = reverse("dashboard:key-caps", args=[alice.live_key.public_id])
    response = web(alice).post(url, {"monthly_image_cap": "-3", "monthly_spend_cap": "lots"}, follow=True)
    assert "Monthly image cap" in response.content.decode()
    key = ApiKey.objects.get(pk=alice.live_key.pk)
    assert (key.monthly_image_cap, key.monthly_spend_cap) == (None, None)


def test_another_tenants_key_is_404_and_members_cannot_set_caps(web, alice, bob, charlie):
    url = reverse("dashboard:key-caps", args=[alice.live_key.public_id])
    assert web(charlie).post(url, {"monthly_image_cap": "1"}).status_code == 404
    assert web(bob).post(url, {"monthly_image_cap": "1"}).status_code == 403
    assert web(None).post(url, {"monthly_image_cap": "1"}).status_code == 302  # to the login page
    assert ApiKey.objects.get(pk=alice.live_key.pk).monthly_image_cap is None


def test_the_billing_page_sets_the_spend_cap_and_thresholds(web, alice):
    client = web(alice)

    response = client.post(
        reverse("billing:spend-controls"),
        {"monthly_spend_cap": "100", "spend_alert_thresholds": "90, 50,100"},
    )

    assert response.status_code == 303
    org = Organization.objects.get(pk=alice.organization.pk)
    assert (org.monthly_spend_cap, org.spend_alert_thresholds) == (Decimal("100"), [50, 90, 100])
    page = client.get(reverse("billing:overview")).content.decode()
    assert "Spend controls" in page and "100.00 left" in page


@pytest.mark.parametrize("thresholds", ["80, 120", "eighty", "1,2,3,4,5,6"])
def test_bad_thresholds_are_a_400_and_change_nothing(web, alice, thresholds):
    response = web(alice).post(
        reverse("billing:spend-controls"), {"monthly_spend_cap": "100", "spend_alert_thresholds": thresholds}
    )
    assert response.status_code == 400
    assert (
        "between 1 and 100" in response.content.decode() or "whole percentages" in response.content.decode()
    )
    org = Organization.objects.get(pk=alice.organization.pk)
    assert (org.monthly_spend_cap, org.spend_alert_thresholds) == (None, [80, 100])


def test_members_cannot_set_the_spend_cap(web, bob, charlie, alice):
    assert web(bob).post(reverse("billing:spend-controls"), {"monthly_spend_cap": "1"}).status_code == 403
    response = web(charlie).post(
        reverse("billing:spend-controls"),
        {"organization": alice.organization.public_id, "monthly_spend_cap": "1"},
    )
    assert response.status_code == 404
    assert Organization.objects.get(pk=alice.organization.pk).monthly_spend_cap is None
