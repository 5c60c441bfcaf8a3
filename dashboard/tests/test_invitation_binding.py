"""Invitations are bound to the invited address (issue 13)."""

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from tenants import services
from tenants.models import Membership

pytestmark = pytest.mark.django_db
PASSWORD = "a sturdy passphrase 42"


def invite(web, alice, email) -> str:
    assert web(alice).post(reverse("dashboard:members"), {"email": email, "role": "admin"}).status_code == 302
    return (
        "/" + re.search(r"https?://\S+/invitations/\S+/", str(mail.outbox[-1].body)).group(0).split("/", 3)[3]
    )


def test_a_forwarded_link_does_not_let_another_account_join(web, alice, charlie):
    path = invite(web, alice, "dora@example.com")
    response = web(charlie).post(path)  # charlie@example.com opens dora's link
    assert response.status_code == 302
    assert not Membership.objects.filter(user=charlie.user, organization=alice.organization).exists()
    assert web(charlie).get(path).status_code == 200  # still pending for dora


def test_the_invited_address_must_be_verified(web, alice, pro_plan):
    user, _ = services.user_signup(
        username="dora", email="dora@example.com", password=PASSWORD, organization_name="Dora's"
    )
    path = invite(web, alice, "dora@example.com")
    client = Client()
    client.force_login(user)
    client.post(path)
    assert not Membership.objects.filter(user=user, organization=alice.organization).exists()
    services.email_verify(token=services.email_verification_token(user=user))
    client.post(path)
    assert Membership.objects.get(user=user, organization=alice.organization).role == "admin"


def test_the_matching_address_joins_case_insensitively(web, alice, charlie):
    path = invite(web, alice, "Charlie@Example.com")
    assert web(charlie).post(path).status_code == 302
    assert Membership.objects.filter(user=charlie.user, organization=alice.organization).exists()
