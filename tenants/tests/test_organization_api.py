from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tenants import services
from tenants.models import ApiKey

URL = "/v1/organization"


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "code", "message", "param"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert response["X-Request-Id"]


def test_alice_reads_her_organization(alice):
    response = alice.client().get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == alice.organization.public_id and body["id"].startswith("org_")
    assert body["object"] == "organization"
    assert body["name"] == "Acme"
    assert body["status"] == "active"
    assert body["plan"]["id"] == "pro"
    assert body["plan"]["prices"] == {"fast": "0.0900", "standard": "0.1200", "ultra": "0.1900"}
    assert body["limits"] == {
        "monthly_images": 10_000,
        "requests_per_minute": 600,
        "max_concurrent_jobs": 32,
        "allowed_tiers": ["fast", "standard", "ultra"],
    }
    assert body["usage"]["images_reserved"] == 0
    assert body["usage"]["images_remaining"] == 10_000
    assert body["api_key"]["id"] == alice.key.public_id
    assert response["X-Request-Id"].startswith("req_")
    assert response["X-RateLimit-Limit"] == "600"
    assert response["X-RateLimit-Remaining"] == "599"


def test_live_key_and_google_header_work(alice):
    from rest_framework.test import APIClient

    assert alice.client(alice.raw_live_key).get(URL).status_code == 200
    client = APIClient()
    client.credentials(HTTP_X_GOOG_API_KEY=alice.raw_key)
    assert client.get(URL).status_code == 200


def test_overrides_change_effective_limits(alice):
    org = alice.organization
    org.monthly_images_override = 7
    org.allowed_tiers_override = ["fast"]
    org.save()
    body = alice.client().get(URL).json()
    assert body["limits"]["monthly_images"] == 7
    assert body["limits"]["allowed_tiers"] == ["fast"]


def test_bob_read_only_key_can_read(bob):
    assert bob.client().get(URL).status_code == 200


def test_key_without_read_scope_is_denied(alice):
    _, raw = services.api_key_create(
        organization=alice.organization, name="gen only", mode="test", scopes=["generate"]
    )
    assert_error(alice.client(raw).get(URL), 403, "permission_denied")


def test_charlie_sees_only_his_organization(alice, charlie):
    body = charlie.client().get(URL).json()
    assert body["id"] == charlie.organization.public_id
    assert body["id"] != alice.organization.public_id


def test_no_key_is_401(anon, alice):
    response = anon.get(URL)
    assert_error(response, 401, "invalid_api_key")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nope",
        "Bearer ig_live_short",
        "Bearer ig_prod_" + "a" * 40,
        "Basic dXNlcjpwYXNz",
        "Bearer ig_test_" + "A" * 40,  # well-formed but unknown
    ],
)
def test_malformed_or_unknown_key_is_401(anon, alice, header):
    anon.credentials(HTTP_AUTHORIZATION=header)
    assert_error(anon.get(URL), 401, "invalid_api_key")


def test_key_in_query_string_is_refused(anon, alice):
    # Issue 13: a key in the URL is refused with its own code (it was silently ignored: 401).
    assert_error(anon.get(f"{URL}?key={alice.raw_key}"), 400, "api_key_in_query")
    assert_error(alice.client().get(f"{URL}?api_key=x"), 400, "api_key_in_query")


def test_revoked_key_is_401(alice):
    services.api_key_revoke(api_key=alice.key)
    assert_error(alice.client().get(URL), 401, "invalid_api_key")


def test_expired_key_is_401(alice):
    _key, raw = services.api_key_create(
        organization=alice.organization,
        name="short-lived",
        mode="test",
        scopes=["read"],
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert alice.client(raw).get(URL).status_code == 200
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert_error(alice.client(raw).get(URL), 401, "invalid_api_key")


def test_suspended_organization_is_403(alice):
    services.organization_suspend(organization=alice.organization)
    assert_error(alice.client().get(URL), 403, "tenant_suspended")
    services.organization_reactivate(organization=alice.organization)
    assert alice.client().get(URL).status_code == 200


def test_rate_limit_returns_429_with_headers(alice, use_database_limits):
    alice.organization.requests_per_minute_override = 3
    alice.organization.save()
    client = alice.client()
    with time_machine.travel(1_900_000_030, tick=False):
        for remaining in (2, 1, 0):
            response = client.get(URL)
            assert response.status_code == 200
            assert response["X-RateLimit-Remaining"] == str(remaining)
        response = client.get(URL)
        assert_error(response, 429, "rate_limited")
        assert response["Retry-After"] == "50"  # the window is [1_900_000_020, 1_900_000_080)
        assert response["X-RateLimit-Limit"] == "3"
        assert response["X-RateLimit-Remaining"] == "0"
        assert response["X-RateLimit-Reset"] == "1900000080"
    with time_machine.travel(1_900_000_081, tick=False):
        assert client.get(URL).status_code == 200


def test_last_used_at_is_written_at_most_once_a_minute(alice, django_assert_num_queries):
    client = alice.client()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        client.get(URL)
    first = ApiKey.objects.get(pk=alice.key.pk).last_used_at
    assert first == start
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        client.get(URL)
    assert ApiKey.objects.get(pk=alice.key.pk).last_used_at == first
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        client.get(URL)
    assert ApiKey.objects.get(pk=alice.key.pk).last_used_at == start + timedelta(seconds=61)


def test_request_id_is_echoed_when_sane(alice):
    response = alice.client().get(URL, HTTP_X_REQUEST_ID="client-trace-12345")
    assert response["X-Request-Id"] == "client-trace-12345"
    response = alice.client().get(URL, HTTP_X_REQUEST_ID="bad id with spaces")
    assert response["X-Request-Id"].startswith("req_")


def test_method_not_allowed_uses_error_shape(alice):
    assert_error(alice.client().post(URL, {}, format="json"), 405, "method_not_allowed")


def test_unknown_api_url_is_json_404(alice):
    assert_error(alice.client().get("/v1/nope"), 404, "not_found")
