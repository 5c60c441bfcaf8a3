"""Sign-up e-mail verification (issue 13): an unverified address may use test keys only; live keys
and paid plans wait for the link; the sign-up page never tells which names or addresses exist."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tenants import services
from tenants.errors import EmailNotVerified
from tenants.models import ApiKey

pytestmark = pytest.mark.django_db
PASSWORD = "a sturdy passphrase 42"


def sign_up(client, username="hank", email="hank@globex.example"):
    data = {"organization_name": "Globex", "username": username, "email": email, "password": PASSWORD}
    return client.post(reverse("signup"), data)


def link_in(message) -> str:
    return "/" + re.search(r"https?://\S+/verify-email/\?token=\S+", message.body).group(0).split("/", 3)[3]


def test_unverified_sign_ups_get_test_keys_but_no_live_keys_until_they_verify(pro_plan):
    client = Client()
    assert sign_up(client).status_code == 302
    hank = get_user_model().objects.get(username="hank")
    assert client.login(username="hank", password=PASSWORD)  # may log in before verifying
    keys_page = client.get(reverse("dashboard:keys"))
    assert b"Verify your e-mail address" in keys_page.content
    live = {"name": "prod", "mode": "live", "scopes": ["generate", "read"]}
    response = client.post(reverse("dashboard:keys"), live)
    assert response.status_code == 400 and b"Verify your e-mail address first" in response.content
    assert not ApiKey.objects.filter(mode="live").exists()
    assert client.post(reverse("dashboard:keys"), {**live, "mode": "test"}).status_code == 200
    assert ApiKey.objects.filter(mode="test", created_by=hank).exists()

    (message,) = mail.outbox
    assert message.to == ["hank@globex.example"]
    assert client.get(link_in(message)).status_code == 302
    assert services.user_email_verified(user=hank)
    assert client.post(reverse("dashboard:keys"), live).status_code == 200
    assert ApiKey.objects.filter(mode="live", created_by=hank).exists()


def test_a_verification_link_works_once_and_expires(pro_plan, settings):
    client = Client()
    sign_up(client)
    link = link_in(mail.outbox[0])
    with time_machine.travel(
        timezone.now() + timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS + 5)
    ):
        assert client.get(link).status_code == 400
    assert client.get(link).status_code == 302
    client.logout()
    assert client.get(link).status_code == 400  # used: no second log-in through it
    assert client.get(reverse("email-verify") + "?token=forged").status_code == 400
    assert "_auth_user_id" not in client.session


def test_the_link_can_be_sent_again(pro_plan):
    client = Client()
    sign_up(client)
    client.login(username="hank", password=PASSWORD)
    assert client.post(reverse("dashboard:verify-email-resend")).status_code == 302
    assert len(mail.outbox) == 2 and client.get(link_in(mail.outbox[1])).status_code == 302


def test_the_sign_up_page_answers_the_same_for_taken_names_and_addresses(alice, pro_plan):
    fresh = sign_up(Client(), username="newbie", email="newbie@example.com")
    taken_name = sign_up(Client(), username="ALICE", email="someone@example.com")
    taken_email = sign_up(Client(), username="another", email="alice@example.com")
    assert fresh.status_code == taken_name.status_code == taken_email.status_code == 302
    assert fresh["Location"] == taken_name["Location"] == taken_email["Location"] == reverse("signup-sent")
    assert get_user_model().objects.filter(username__in=["another"]).count() == 0
    assert get_user_model().objects.filter(email="someone@example.com").count() == 0
    by_address = {message.to[0]: message.body for message in mail.outbox}
    assert 'user name "ALICE" is taken' in by_address["someone@example.com"]
    assert "already has an account" in by_address["alice@example.com"]
    assert "verify-email" in by_address["newbie@example.com"]


def test_an_unverified_account_cannot_buy_a_plan(pro_plan, stripe_catalog):
    client = Client()
    sign_up(client)
    client.login(username="hank", password=PASSWORD)
    response = client.post("/billing/checkout", {"plan": "pro"})
    assert response.status_code == 403 and b"Verify your e-mail address" in response.content
    assert not stripe_catalog.checkout_sessions


def test_the_service_refuses_live_keys_for_unverified_creators(pro_plan):
    user, organization = services.user_signup(
        username="ivy", email="ivy@example.com", password=PASSWORD, organization_name="Ivy"
    )
    with pytest.raises(EmailNotVerified):
        services.api_key_create(
            organization=organization, name="k", mode="live", scopes=["read"], created_by=user
        )
