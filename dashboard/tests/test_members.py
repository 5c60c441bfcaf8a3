import pytest
from django.urls import reverse

from tenants.models import Invitation, Membership
from tenants.services import membership_add

pytestmark = pytest.mark.django_db


def _role(persona_or_user, organization):
    user = getattr(persona_or_user, "user", persona_or_user)
    return (
        Membership.objects.filter(user=user, organization=organization).values_list("role", flat=True).first()
    )


def test_owner_changes_roles_and_removes_members(web, alice, bob):
    client = web(alice)
    assert client.post(reverse("dashboard:member-role", args=["bob"]), {"role": "admin"}).status_code == 302
    assert _role(bob, alice.organization) == "admin"
    assert client.post(reverse("dashboard:member-remove", args=["bob"])).status_code == 302
    assert _role(bob, alice.organization) is None
    assert web(bob).get("/").status_code == 403  # no organization left


def test_the_last_owner_stays(web, alice):
    client = web(alice)
    response = client.post(reverse("dashboard:member-role", args=["alice"]), {"role": "member"}, follow=True)
    assert b"at least one owner" in response.content
    client.post(reverse("dashboard:member-remove", args=["alice"]))
    assert _role(alice, alice.organization) == "owner"


def test_admins_cannot_make_or_unmake_owners(web, alice, bob):
    membership_add(organization=alice.organization, user=bob.user, role="admin")
    client = web(bob)
    response = client.post(reverse("dashboard:member-role", args=["bob"]), {"role": "owner"}, follow=True)
    assert b"Only an owner" in response.content and _role(bob, alice.organization) == "admin"
    client.post(reverse("dashboard:member-remove", args=["alice"]))
    assert _role(alice, alice.organization) == "owner"
    response = client.post(reverse("dashboard:members"), {"email": "x@example.com", "role": "owner"})
    assert response.status_code == 400 and b"Only an owner" in response.content
    assert not Invitation.objects.exists()


def test_members_cannot_manage_members_and_other_organizations_are_404(web, alice, bob, charlie):
    assert (
        web(bob).post(reverse("dashboard:member-role", args=["alice"]), {"role": "member"}).status_code == 403
    )
    assert (
        web(charlie).post(reverse("dashboard:member-role", args=["bob"]), {"role": "owner"}).status_code
        == 404
    )
    assert web(charlie).post(reverse("dashboard:member-remove", args=["bob"])).status_code == 404
    assert _role(bob, alice.organization) == "member"


def test_bad_role_is_refused(web, alice, bob):
    response = web(alice).post(reverse("dashboard:member-role", args=["bob"]), {"role": "king"}, follow=True)
    assert b"role must be owner, admin or member" in response.content
    assert _role(bob, alice.organization) == "member"
