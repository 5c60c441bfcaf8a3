import pytest
from django.contrib.auth import get_user_model

from tenants.models import ApiKey, Organization, Plan


@pytest.fixture
def staff_client(client, db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(admin)
    return client


def test_admin_is_staff_only(client, alice):
    client.force_login(alice.user)
    response = client.get("/admin/tenants/organization/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_organization_changelist_shows_month_to_date_images(staff_client, alice):
    from tenants.limits import quota_reserve

    quota_reserve(organization=alice.organization, images=7)
    response = staff_client.get("/admin/tenants/organization/")
    assert response.status_code == 200
    assert b"Images this month" in response.content
    assert b">7<" in response.content


def test_key_hashes_are_never_shown(staff_client, alice):
    pages = [
        f"/admin/tenants/organization/{alice.organization.pk}/change/",
        "/admin/tenants/apikey/",
        f"/admin/tenants/apikey/{alice.key.pk}/change/",
    ]
    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200, page
        assert alice.key.key_hash.encode() not in response.content
        assert alice.raw_key.encode() not in response.content
        assert b"key_hash" not in response.content


def test_suspend_action_makes_keys_answer_403_at_once(staff_client, alice):
    assert alice.client().get("/v1/organization").status_code == 200
    response = staff_client.post(
        "/admin/tenants/organization/",
        {"action": "suspend", "_selected_action": [alice.organization.pk]},
    )
    assert response.status_code == 302
    answer = alice.client().get("/v1/organization")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "tenant_suspended"

    staff_client.post(
        "/admin/tenants/organization/", {"action": "reactivate", "_selected_action": [alice.organization.pk]}
    )
    assert alice.client().get("/v1/organization").status_code == 200


def test_change_plan_action(staff_client, alice):
    free = Plan.objects.get(code="free")
    staff_client.post(
        "/admin/tenants/organization/",
        {"action": "change_plan", "plan": free.pk, "_selected_action": [alice.organization.pk]},
    )
    assert Organization.objects.get(pk=alice.organization.pk).plan == free
    assert alice.client().get("/v1/organization").json()["plan"]["id"] == "free"


def test_override_limits_in_change_form(staff_client, alice):
    org = alice.organization
    url = f"/admin/tenants/organization/{org.pk}/change/"
    form = {
        "name": org.name,
        "slug": org.slug,
        "plan": org.plan.pk,
        "monthly_images_override": "42",
        "requests_per_minute_override": "",
        "max_concurrent_jobs_override": "3",
        "allowed_tiers_override": "null",
        "fallback_policy": "deny",
        "image_url_ttl_seconds": "600",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
    }
    response = staff_client.post(url, form)
    assert response.status_code == 302, response.content[:2000]
    limits = alice.client().get("/v1/organization").json()["limits"]
    assert limits["monthly_images"] == 42
    assert limits["max_concurrent_jobs"] == 3


def test_revoke_keys_actions(staff_client, alice, charlie):
    staff_client.post("/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [alice.key.pk]})
    assert alice.client().get("/v1/organization").status_code == 401
    assert alice.client(alice.raw_live_key).get("/v1/organization").status_code == 200
    staff_client.post(
        "/admin/tenants/organization/",
        {"action": "revoke_all_keys", "_selected_action": [alice.organization.pk]},
    )
    assert alice.client(alice.raw_live_key).get("/v1/organization").status_code == 401
    assert not ApiKey.objects.filter(organization=alice.organization, revoked_at__isnull=True).exists()
    assert charlie.client().get("/v1/organization").status_code == 200


def test_operators_edit_key_caps_and_the_organization_spend_cap(staff_client, alice):
    from decimal import Decimal

    key = alice.live_key
    page = staff_client.get(f"/admin/tenants/apikey/{key.pk}/change/")
    assert b"monthly_image_cap" in page.content and b"monthly_spend_cap" in page.content
    data = {
        "name": key.name,
        "scopes": '["generate", "read"]',
        "monthly_image_cap": "10",
        "monthly_spend_cap": "5.00",
    }
    assert staff_client.post(f"/admin/tenants/apikey/{key.pk}/change/", data).status_code == 302
    key.refresh_from_db()
    assert (key.monthly_image_cap, key.monthly_spend_cap) == (10, Decimal("5.00"))

    org_page = staff_client.get(f"/admin/tenants/organization/{alice.organization.pk}/change/").content
    assert b"Spend controls" in org_page and b"spend_alert_thresholds" in org_page
    assert staff_client.get("/admin/tenants/spendalert/").status_code == 200
