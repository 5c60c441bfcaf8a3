"""Every dashboard page: anonymous → login, member vs owner, another organization's object → 404,
and a bounded number of queries per page."""

import pytest
from django.urls import reverse

from tenants.models import ApiKey, Invitation
from tenants.services import invitation_create

pytestmark = pytest.mark.django_db

MEMBER_PAGES = ["dashboard:home", "dashboard:playground", "dashboard:jobs", "dashboard:usage"]
MANAGER_PAGES = ["dashboard:keys", "dashboard:members", "dashboard:settings"]


@pytest.mark.parametrize("name", MEMBER_PAGES + MANAGER_PAGES + ["dashboard:operator"])
def test_anonymous_is_sent_to_login(web, name):
    response = web().get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("name", ["dashboard:job-detail", "dashboard:job-status"])
def test_anonymous_job_pages_are_sent_to_login(web, alice_job, name):
    response = web().get(reverse(name, args=[alice_job.public_id]))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("name", MEMBER_PAGES + MANAGER_PAGES)
def test_owner_sees_every_page_within_a_few_queries(web, alice, bob, name, django_assert_max_num_queries):
    client = web(alice)
    with django_assert_max_num_queries(10):
        response = client.get(reverse(name))
    assert response.status_code == 200
    assert b"Acme" in response.content


@pytest.mark.parametrize("name", MEMBER_PAGES)
def test_member_uses_playground_and_reads_usage(web, bob, name):
    assert web(bob).get(reverse(name)).status_code == 200


@pytest.mark.parametrize("name", MANAGER_PAGES)
def test_member_cannot_manage(web, bob, name):
    response = web(bob).get(reverse(name))
    assert response.status_code == 403
    assert b"Only owners and admins" in response.content


def test_member_cannot_see_billing_and_nav_hides_it(web, bob):
    client = web(bob)
    assert client.get("/billing/").status_code == 403
    home = client.get("/").content.decode()
    assert "/billing/" not in home and "/keys/" not in home


def test_member_cannot_create_or_revoke_keys(web, alice, bob):
    client = web(bob)
    response = client.post(reverse("dashboard:keys"), {"name": "sneaky", "mode": "test", "scopes": ["read"]})
    assert response.status_code == 403
    response = client.post(reverse("dashboard:key-revoke", args=[alice.key.public_id]))
    assert response.status_code == 403
    assert ApiKey.objects.filter(name="sneaky").count() == 0
    alice.key.refresh_from_db()
    assert alice.key.revoked_at is None


def test_job_pages_of_another_organization_are_404(web, alice_job, charlie):
    client = web(charlie)
    assert client.get(reverse("dashboard:job-detail", args=[alice_job.public_id])).status_code == 404
    assert client.get(reverse("dashboard:job-status", args=[alice_job.public_id])).status_code == 404


def test_job_pages_of_own_organization(web, alice_job, bob, django_assert_max_num_queries):
    client = web(bob)
    with django_assert_max_num_queries(8):
        detail = client.get(reverse("dashboard:job-detail", args=[alice_job.public_id]))
    assert detail.status_code == 200
    assert b"No route could serve it." in detail.content
    status = client.get(reverse("dashboard:job-status", args=[alice_job.public_id]))
    assert status.json()["id"] == alice_job.public_id
    assert status.json()["status"] == "failed"


def test_revoking_another_organizations_key_is_404_and_changes_nothing(web, alice, charlie):
    response = web(charlie).post(reverse("dashboard:key-revoke", args=[alice.key.public_id]))
    assert response.status_code == 404
    alice.key.refresh_from_db()
    assert alice.key.revoked_at is None


def test_revoking_another_organizations_invitation_is_404(web, alice, charlie):
    invitation, _ = invitation_create(
        organization=alice.organization, email="new@example.com", role="member", invited_by=alice.user
    )
    response = web(charlie).post(reverse("dashboard:invitation-revoke", args=[invitation.public_id]))
    assert response.status_code == 404
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is None


def test_switching_to_an_organization_one_is_not_in_is_404(web, alice, charlie):
    client = web(alice)
    response = client.post(reverse("dashboard:switch"), {"organization": charlie.organization.public_id})
    assert response.status_code == 404
    assert b"Acme" in client.get("/").content


def test_switcher_scopes_every_page_to_the_chosen_organization(web, alice, charlie, alice_job):
    from tenants.services import membership_add

    membership_add(organization=charlie.organization, user=alice.user, role="member")
    client = web(alice)
    assert alice_job.public_id.encode() in client.get(reverse("dashboard:jobs")).content
    response = client.post(reverse("dashboard:switch"), {"organization": charlie.organization.public_id})
    assert response.status_code == 302
    jobs = client.get(reverse("dashboard:jobs"))
    assert b"Contoso" in jobs.content and alice_job.public_id.encode() not in jobs.content
    # In Contoso alice is a member: the job of Acme is now a 404, and keys are not hers to manage.
    assert client.get(reverse("dashboard:job-detail", args=[alice_job.public_id])).status_code == 404
    assert client.get(reverse("dashboard:keys")).status_code == 403


def test_operator_is_staff_only(web, alice, django_assert_max_num_queries):
    # Issue 13: a logged-in non-staff user gets a 404 (the redirect to /login/ looped back here).
    response = web(alice).get(reverse("dashboard:operator"))
    assert response.status_code == 404
    response = web().get(reverse("dashboard:operator"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    alice.user.is_staff = True
    alice.user.save()
    client = web(alice)
    # 10 for the platform figures, 3 for billing (ledger and meter report aggregates, open alerts).
    with django_assert_max_num_queries(13):
        response = client.get(reverse("dashboard:operator"))
    assert response.status_code == 200
    assert b"sandbox/" in response.content  # the seeded sandbox routes are listed
    assert b"revenue-chart-data" in response.content


def test_user_without_organization_gets_a_clear_page(web, django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_user(username="loner", password="x")
    client = Client()
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 403
    assert b"No organization yet" in response.content


def test_forms_need_csrf(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)
    response = client.post(reverse("dashboard:keys"), {"name": "x", "mode": "test", "scopes": ["read"]})
    assert response.status_code == 403
    assert not ApiKey.objects.filter(name="x").exists()


def test_billing_and_error_pages_keep_the_navigation(web, alice, bob):
    billing = web(alice).get("/billing/").content.decode()
    assert 'aria-label="Dashboard"' in billing and "/keys/" in billing
    forbidden = web(bob).get("/billing/")
    assert forbidden.status_code == 403
    page = forbidden.content.decode()
    assert "Not allowed" in page and 'aria-label="Dashboard"' in page and "/billing/" not in page
