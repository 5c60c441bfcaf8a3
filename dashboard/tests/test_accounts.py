"""Sign-up, invitations, login throttling and password reset."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from tenants.models import Invitation, Membership, Organization

pytestmark = pytest.mark.django_db
PASSWORD = "a sturdy passphrase 42"


def test_signup_creates_user_and_organization_with_owner_role(client, pro_plan):
    response = client.post(
        reverse("signup"),
        {
            "organization_name": "Globex",
            "username": "hank",
            "email": "Hank@Globex.example",
            "password": PASSWORD,
        },
    )
    # Issue 13: every sign-up answers "check your inbox"; the e-mailed link verifies and logs in.
    assert response.status_code == 302 and response["Location"] == reverse("signup-sent")
    user = get_user_model().objects.get(username="hank")
    assert user.email == "hank@globex.example"
    membership = Membership.objects.get(user=user)
    assert membership.role == "owner" and membership.organization.name == "Globex"
    (message,) = mail.outbox
    link = re.search(r"https?://\S+/verify-email/\?token=\S+", str(message.body)).group(0)
    response = client.get("/" + link.split("/", 3)[3])
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:keys")
    assert client.get(reverse("dashboard:keys")).status_code == 200  # logged in, owner


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("password", "123", "This password is too short"),
        ("email", "not-an-email", "Enter a valid email address."),
        ("username", "a b", "3-150 letters"),
        ("organization_name", "", "This field is required."),
    ],
)
def test_invalid_signup_is_a_400_and_creates_nothing(client, pro_plan, field, value, message):
    data = {
        "organization_name": "Globex",
        "username": "hank",
        "email": "hank@globex.example",
        "password": PASSWORD,
    }
    data[field] = value
    response = client.post(reverse("signup"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not get_user_model().objects.filter(username="hank").exists()
    assert not Organization.objects.filter(name="Globex").exists()


def test_signup_with_a_taken_email_creates_nothing_and_tells_only_the_mailbox(client, alice):
    # Issue 13 replaced the on-page "An account with this e-mail exists": the page must not tell.
    response = client.post(
        reverse("signup"),
        {"organization_name": "X", "username": "other", "email": "ALICE@example.com", "password": PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == reverse("signup-sent")
    assert not get_user_model().objects.filter(username="other").exists()
    (message,) = mail.outbox
    assert message.to == ["alice@example.com"] and "already has an account" in message.body


def _invite(web, alice, email="dora@example.com", role="member") -> str:
    response = web(alice).post(reverse("dashboard:members"), {"email": email, "role": role})
    assert response.status_code == 302
    (message,) = mail.outbox
    assert message.to == [email]
    return re.search(r"https?://\S+/invitations/\S+/", str(message.body)).group(0)


def test_invitation_creates_an_account_with_the_role_and_works_once(web, alice, client):
    link = _invite(web, alice)
    path = "/" + link.split("/", 3)[3]
    page = client.get(path)
    assert page.status_code == 200 and b"Join Acme" in page.content
    response = client.post(path, {"username": "dora", "password": PASSWORD})
    assert response.status_code == 302
    dora = get_user_model().objects.get(username="dora")
    assert dora.email == "dora@example.com"
    assert Membership.objects.get(user=dora, organization=alice.organization).role == "member"
    assert client.get("/billing/").status_code == 403  # a member
    client.logout()
    assert client.get(path).status_code == 404  # used


def test_invitation_for_a_logged_in_user_joins_without_downgrade(web, alice, charlie):
    link = _invite(web, alice, email="charlie@example.com", role="admin")
    path = "/" + link.split("/", 3)[3]
    client = web(charlie)
    assert client.post(path).status_code == 302
    assert Membership.objects.get(user=charlie.user, organization=alice.organization).role == "admin"


def test_revoked_or_unknown_invitation_is_404(web, alice, client):
    link = _invite(web, alice)
    path = "/" + link.split("/", 3)[3]
    invitation = Invitation.objects.get()
    assert (
        web(alice).post(reverse("dashboard:invitation-revoke", args=[invitation.public_id])).status_code
        == 302
    )
    assert client.get(path).status_code == 404
    assert client.get("/invitations/not-a-token/").status_code == 404


def test_inviting_an_existing_member_or_a_bad_email_is_a_400(web, alice, bob):
    client = web(alice)
    response = client.post(reverse("dashboard:members"), {"email": "bob@example.com", "role": "member"})
    assert response.status_code == 400 and b"already a member" in response.content
    response = client.post(reverse("dashboard:members"), {"email": "nope", "role": "king"})
    assert response.status_code == 400
    assert not Invitation.objects.exists() and not mail.outbox


def test_login_is_throttled_per_username(client, alice, use_database_limits):
    for _ in range(10):
        response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
        assert response.status_code == 200 and b"Please enter a correct" in response.content
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct horse battery staple"}
    )
    assert b"Too many log-in attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_login_works(client, alice):
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_password_reset_sends_a_working_link(client, alice):
    response = client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert response.status_code == 302
    (message,) = mail.outbox
    link = re.search(r"http://\S+/password-reset/\S+/\S+/", str(message.body)).group(0)
    path = "/" + link.split("/", 3)[3]
    form_page = client.get(path, follow=True)
    assert form_page.status_code == 200 and b"Choose a new password" in form_page.content
    done = client.post(
        form_page.redirect_chain[-1][0], {"new_password1": PASSWORD, "new_password2": PASSWORD}
    )
    assert done.status_code == 302
    assert client.login(username="alice", password=PASSWORD)


def test_operators_see_invitations_in_admin_without_the_token(web, alice, admin_client):
    link = _invite(web, alice)
    token = link.rstrip("/").rsplit("/", 1)[1]
    invitation = Invitation.objects.get()
    listing = admin_client.get("/admin/tenants/invitation/")
    assert listing.status_code == 200 and b"dora@example.com" in listing.content
    detail = admin_client.get(f"/admin/tenants/invitation/{invitation.pk}/change/")
    assert detail.status_code == 200
    assert token.encode() not in detail.content and invitation.token_hash.encode() not in detail.content


def test_login_with_the_e_mail_address(client, alice):
    response = client.post(
        reverse("login"), {"username": "Alice@Example.com", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.user.pk)


def test_password_reset_mails_are_capped_per_address(client, alice, use_database_limits):
    for _ in range(5):
        assert client.post(reverse("password_reset"), {"email": "alice@example.com"}).status_code == 302
    response = client.post(reverse("password_reset"), {"email": "ALICE@example.com"})
    assert response.status_code == 200 and b"Too many reset requests" in response.content
    assert len(mail.outbox) == 5


def test_sign_ups_are_capped_per_address(client, pro_plan, use_database_limits):
    for n in range(10):
        data = {
            "organization_name": f"Org {n}",
            "username": f"user{n}",
            "email": f"u{n}@x.example",
            "password": PASSWORD,
        }
        assert client.post(reverse("signup"), data).status_code == 302
        client.logout()
    data = {"organization_name": "Org X", "username": "userx", "email": "ux@x.example", "password": PASSWORD}
    response = client.post(reverse("signup"), data)
    assert response.status_code == 429 and b"Too many sign-ups" in response.content
    assert not get_user_model().objects.filter(username="userx").exists()


def test_an_invitation_used_meanwhile_creates_no_account(web, alice, client):
    link = _invite(web, alice)
    path = "/" + link.split("/", 3)[3]
    assert client.get(path).status_code == 200
    Invitation.objects.update(accepted_at=timezone.now())  # used in another tab
    response = client.post(path, {"username": "dora", "password": PASSWORD})
    assert response.status_code == 404
    assert not get_user_model().objects.filter(username="dora").exists()


def test_invitation_signup_is_all_or_nothing(web, alice):
    from tenants.errors import InvalidRequest
    from tenants.services import invitation_signup

    _invite(web, alice)
    stale = Invitation.objects.get()  # loaded while still pending
    Invitation.objects.update(accepted_at=timezone.now())  # accepted meanwhile
    with pytest.raises(InvalidRequest):
        invitation_signup(invitation=stale, username="dora", password=PASSWORD)
    assert not get_user_model().objects.filter(username="dora").exists()
