import pytest
from django.contrib.auth import get_user_model

from generation.jobs.services import GenerationRequest, job_submit
from generation.models import ProviderAccount, Route


@pytest.fixture
def staff_client(client, db):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests"))
    return client


def test_catalog_and_jobs_pages_render(staff_client, alice):
    job, _ = job_submit(
        organization=alice.organization, api_key=alice.key, request=GenerationRequest(prompt="admin view")
    )
    for url in [
        "/admin/generation/provideraccount/",
        "/admin/generation/upstreammodel/",
        "/admin/generation/route/",
        "/admin/generation/job/",
        f"/admin/generation/job/{job.pk}/change/",
        "/admin/generation/routestatsminute/",
    ]:
        assert staff_client.get(url).status_code == 200, url


def test_provider_secrets_are_never_shown(staff_client, pro_plan, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-very-secret-value")
    account = ProviderAccount.objects.get(name="gemini-api")
    page = staff_client.get(f"/admin/generation/provideraccount/{account.pk}/change/").content
    assert b"AIza-very-secret-value" not in page
    assert b"env:GEMINI_API_KEY" in page
    listing = staff_client.get("/admin/generation/provideraccount/").content
    assert b"AIza-very-secret-value" not in listing


def test_routes_are_editable_in_admin(staff_client, pro_plan):
    route = Route.objects.filter(tier="fast", account__name="sandbox").order_by("position").first()
    response = staff_client.post(
        f"/admin/generation/route/{route.pk}/change/",
        {
            "tier": "fast",
            "position": "5",
            "account": route.account_id,
            "model": route.model_id,
            "options": '{"thinking_level": "MINIMAL"}',
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    route.refresh_from_db()
    assert route.position == 5


def test_jobs_are_read_only(staff_client, alice):
    job, _ = job_submit(
        organization=alice.organization, api_key=alice.key, request=GenerationRequest(prompt="x")
    )
    response = staff_client.post(f"/admin/generation/job/{job.pk}/change/", {"status": "succeeded"})
    assert response.status_code == 403
    assert staff_client.get("/admin/generation/job/add/").status_code == 403
