"""The native generation API's contract: validation, tenancy, limits, idempotency, pagination.
(Execution end to end is in test_pipeline.py; here jobs stay queued because the `db` fixture
never commits, so the doorbell never rings.)"""

import pytest

from generation.models import Job

URL = "/v1/generations"


def post(persona, body, *, live=True, key=None, query=""):
    client = persona.client(persona.raw_live_key if live and persona.raw_live_key else None)
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(URL + query, body, format="json", **headers)


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_create_returns_202_with_the_job(alice):
    response = post(alice, {"prompt": "a lighthouse at dusk", "count": 2, "aspect_ratio": "16:9"})
    assert response.status_code == 202
    body = response.json()
    assert body["id"].startswith("gen_") and body["object"] == "generation"
    assert body["status"] == "queued"
    assert body["tier"] == "fast" and body["count"] == 2 and body["aspect_ratio"] == "16:9"
    assert body["resolution"] == "1K" and body["output_format"] == "png"
    assert body["images"] == [] and body["error"] is None and body["livemode"] is True
    assert body["usage"] == {"images": 0, "amount": "0.0000", "currency": "usd"}
    assert response["Location"] == f"/v1/generations/{body['id']}"
    assert response["X-RateLimit-Limit"] == "600"


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "count": 5}, "count"),
        ({"prompt": "x", "count": 0}, "count"),
        ({"prompt": "x", "aspect_ratio": "wide"}, "aspect_ratio"),
        ({"prompt": "x", "aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"prompt": "x", "resolution": "8K"}, "resolution"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
        ({"prompt": "x", "negative_prompt": "blur"}, "negative_prompt"),
        ({"prompt": "x", "tier": "turbo"}, "tier"),
        ({"prompt": "x", "model": "dall-e-3"}, "model"),
        ({"prompt": "x", "fallback": "sometimes"}, "fallback"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "quality": "hd"}, "quality"),
        ({"prompt": "x", "compression_quality": 80}, "compression_quality"),
        ({"prompt": "x", "metadata": {"k": {"nested": 1}}}, "metadata.k"),
    ],
)
def test_bad_input_is_400_naming_the_parameter_and_changes_nothing(alice, body, param):
    error = assert_error(post(alice, body), 400, "invalid_request", param)
    assert error["type"] == "invalid_request_error" and error["message"]
    assert not Job.objects.exists()
    assert alice.client().get("/v1/organization").json()["usage"]["images_reserved"] == 0


def test_malformed_json_is_400(alice):
    response = alice.client().post(URL, "{not json", content_type="application/json")
    assert_error(response, 400, "invalid_request")


def test_wait_must_be_bounded(alice):
    assert_error(post(alice, {"prompt": "x"}, query="?wait=61"), 400, "invalid_request", "wait")
    assert_error(post(alice, {"prompt": "x"}, query="?wait=soon"), 400, "invalid_request", "wait")


def test_no_key_is_401(anon, alice):
    assert_error(anon.post(URL, {"prompt": "x"}, format="json"), 401, "invalid_api_key")
    assert_error(anon.get(URL), 401, "invalid_api_key")


def test_revoked_key_is_401(alice):
    from tenants.services import api_key_revoke

    api_key_revoke(api_key=alice.live_key)
    assert_error(post(alice, {"prompt": "x"}), 401, "invalid_api_key")


def test_read_only_key_cannot_generate_but_can_list(bob):
    assert_error(post(bob, {"prompt": "x"}, live=False), 403, "permission_denied")
    assert bob.client().get(URL).status_code == 200


def test_suspended_tenant_is_403(alice):
    from tenants.services import organization_suspend

    organization_suspend(organization=alice.organization)
    assert_error(post(alice, {"prompt": "x"}), 403, "tenant_suspended")


def test_tier_outside_the_plan_is_403(alice):
    alice.organization.allowed_tiers_override = ["fast", "standard"]
    alice.organization.save()
    assert_error(post(alice, {"prompt": "x", "tier": "ultra"}), 403, "permission_denied", "tier")


def test_quota_exhausted_is_429_quota_exceeded(alice):
    alice.organization.monthly_images_override = 3
    alice.organization.save()
    assert post(alice, {"prompt": "x", "count": 3}).status_code == 202
    response = post(alice, {"prompt": "x"})
    assert_error(response, 429, "quota_exceeded")
    assert post(alice, {"prompt": "x"}, live=False).status_code == 202  # test keys are not metered


def test_concurrency_limit_is_429_with_retry_after(alice):
    alice.organization.max_concurrent_jobs_override = 1
    alice.organization.save()
    assert post(alice, {"prompt": "x"}).status_code == 202
    response = post(alice, {"prompt": "y"})
    assert_error(response, 429, "rate_limited")
    assert response["Retry-After"] == "1"


def test_rate_limit_is_429(alice, use_database_limits):
    alice.organization.requests_per_minute_override = 2
    alice.organization.save()
    post(alice, {"prompt": "x"})
    post(alice, {"prompt": "x"})
    response = post(alice, {"prompt": "x"})
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert Job.objects.count() == 2


def test_idempotency(alice):
    first = post(alice, {"prompt": "x", "count": 2}, key="order-42")
    again = post(alice, {"prompt": "x", "count": 2}, key="order-42")
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1
    assert alice.client().get("/v1/organization").json()["usage"]["images_reserved"] == 2
    conflict = post(alice, {"prompt": "x", "count": 3}, key="order-42")
    assert_error(conflict, 409, "idempotency_conflict")
    assert_error(
        post(alice, {"prompt": "x"}, key="bad key with spaces"), 400, "invalid_request", "Idempotency-Key"
    )


def test_detail_and_cancel_are_tenant_isolated(alice, charlie):
    job_id = post(alice, {"prompt": "x"}).json()["id"]
    assert alice.client().get(f"{URL}/{job_id}").json()["id"] == job_id
    assert_error(charlie.client().get(f"{URL}/{job_id}"), 404, "not_found")
    assert_error(charlie.client().post(f"{URL}/{job_id}/cancel"), 404, "not_found")
    assert Job.objects.get(public_id=job_id).status == "queued"
    assert_error(alice.client().get(f"{URL}/gen_doesnotexist"), 404, "not_found")


def test_cancel(alice, bob):
    job_id = post(alice, {"prompt": "x", "count": 2}).json()["id"]
    assert_error(bob.client().post(f"{URL}/{job_id}/cancel"), 403, "permission_denied")
    response = alice.client().post(f"{URL}/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert_error(alice.client().post(f"{URL}/{job_id}/cancel"), 409, "job_not_cancelable")
    usage = alice.client().get("/v1/organization").json()["usage"]
    assert usage["images_reserved"] == 0 and usage["jobs_in_flight"] == 0


def test_list_is_scoped_paginated_and_filterable(alice, charlie):
    ids = [post(alice, {"prompt": f"p{i}"}).json()["id"] for i in range(5)]
    post(charlie, {"prompt": "not yours"}, live=False)
    client = alice.client()
    page = client.get(URL, {"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2]
    assert page["has_more"] and page["next_cursor"] == ids[3]
    rest = client.get(URL, {"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [j["id"] for j in rest["data"]] == ids[::-1][2:]
    assert not rest["has_more"] and rest["next_cursor"] is None
    client.post(f"{URL}/{ids[0]}/cancel")
    canceled = client.get(URL, {"status": "canceled"}).json()["data"]
    assert [j["id"] for j in canceled] == [ids[0]]
    assert_error(client.get(URL, {"status": "done"}), 400, "invalid_request", "status")
    assert_error(client.get(URL, {"limit": 0}), 400, "invalid_request", "limit")
    assert_error(client.get(URL, {"cursor": "nope"}), 400, "invalid_request", "cursor")
    assert len(charlie.client().get(URL).json()["data"]) == 1


def test_models_lists_tiers_prices_and_lifecycle(alice, charlie, catalog_before_2026_10):
    body = alice.client().get("/v1/models").json()
    tiers = {t["id"]: t for t in body["tiers"]}
    assert tiers["fast"]["price_per_image"] == "0.0900" and tiers["fast"]["allowed"]
    assert "imagen-4-fast" in tiers["fast"]["aliases"]
    models = {m["id"]: m for m in body["data"]}
    assert models["imagen-4.0-fast-generate-001"]["lifecycle"] == "retired"
    assert models["imagen-4.0-fast-generate-001"]["successor"] == "gemini-3.1-flash-image"
    assert models["gemini-3.1-flash-image"]["lifecycle"] == "active"
    assert set(models["gemini-3.1-flash-image"]["tiers"]) == {"fast", "standard"}
    assert "16:9" in models["gemini-3.1-flash-image"]["capabilities"]["aspect_ratios"]
    assert_error(alice.client().post("/v1/models"), 405, "method_not_allowed")


def test_openapi_schema_and_docs_are_public(client, db):
    schema = client.get("/v1/openapi.json")
    assert schema.status_code == 200
    assert "/v1/generations" in schema.json()["paths"]
    docs = client.get("/docs/api")
    assert docs.status_code == 200
    assert b"cdn." not in docs.content
