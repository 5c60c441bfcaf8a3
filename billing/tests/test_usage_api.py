from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from billing.tests.helpers import usage_record_create
from tenants import services as tenant_services

URL = "/v1/usage"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def usage(alice, charlie, clock):
    org = alice.organization
    usage_record_create(
        organization=org, api_key=alice.live_key, tier="fast", created_at=datetime(2026, 11, 2, 8, tzinfo=UTC)
    )
    usage_record_create(
        organization=org,
        api_key=alice.live_key,
        tier="fast",
        created_at=datetime(2026, 11, 2, 23, 59, tzinfo=UTC),
    )
    usage_record_create(
        organization=org, api_key=alice.live_key, tier="ultra", created_at=datetime(2026, 11, 3, tzinfo=UTC)
    )
    usage_record_create(
        organization=org,
        api_key=alice.key,
        tier="fast",
        livemode=False,
        unit_price=Decimal(0),
        created_at=datetime(2026, 11, 3, 1, tzinfo=UTC),
    )
    usage_record_create(
        organization=org, api_key=alice.live_key, created_at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
    )
    usage_record_create(
        organization=charlie.organization, api_key=charlie.key, tier="standard", created_at=NOW
    )


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] == param


def test_usage_by_day_tier_and_key_defaults_to_this_month(alice, usage):
    response = alice.client().get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["object"], body["organization"]) == ("usage", alice.organization.public_id)
    assert (body["start"], body["end"], body["currency"]) == ("2026-11-01", "2026-11-30", "usd")
    assert body["totals"] == {"images": 4, "amount": "0.3700", "billable_amount": "0.3700"}
    assert body["by_day"] == [
        {"date": "2026-11-02", "images": 2, "amount": "0.1800"},
        {"date": "2026-11-03", "images": 2, "amount": "0.1900"},
    ]
    assert body["by_tier"] == [
        {"tier": "fast", "images": 3, "amount": "0.1800"},
        {"tier": "ultra", "images": 1, "amount": "0.1900"},
    ]
    assert body["by_key"] == [
        {"api_key": alice.live_key.public_id, "name": "alice live", "images": 3, "amount": "0.3700"},
        {"api_key": alice.key.public_id, "name": "alice test", "images": 1, "amount": "0.0000"},
    ]
    assert body["data"][0] == {
        "date": "2026-11-02",
        "tier": "fast",
        "api_key": alice.live_key.public_id,
        "api_key_name": "alice live",
        "livemode": True,
        "images": 2,
        "amount": "0.1800",
    }
    assert len(body["data"]) == 3


def test_an_explicit_range_is_inclusive(alice, usage):
    body = alice.client().get(URL, {"start": "2026-10-31", "end": "2026-11-02"}).json()
    assert [d["date"] for d in body["by_day"]] == ["2026-10-31", "2026-11-02"]
    assert body["totals"]["images"] == 3


def test_a_single_bound_covers_that_month(alice, usage):
    body = alice.client().get(URL, {"start": "2026-10-15"}).json()
    assert (body["start"], body["end"]) == ("2026-10-15", "2026-10-31")
    body = alice.client().get(URL, {"end": "2026-11-10"}).json()
    assert (body["start"], body["end"]) == ("2026-11-01", "2026-11-10")


def test_charlie_only_ever_sees_his_organization(alice, charlie, usage):
    body = charlie.client().get(URL).json()
    assert body["organization"] == charlie.organization.public_id
    assert body["totals"]["images"] == 1
    keys = {row["api_key"] for row in body["data"]}
    assert keys == {charlie.key.public_id}
    # Nothing addresses another tenant: query parameters for it are ignored.
    body = charlie.client().get(URL, {"organization": alice.organization.public_id}).json()
    assert body["organization"] == charlie.organization.public_id


def test_a_read_only_key_may_read_usage(bob, usage):
    assert bob.client().get(URL).status_code == 200


@pytest.mark.parametrize(
    "params,param",
    [
        ({"start": "2026-13-01"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-11-31"}, "end"),
        ({"start": "20261101"}, "start"),
        ({"start": "2026-11-10", "end": "2026-11-09"}, "end"),
        ({"start": "2025-11-01", "end": "2026-11-02"}, "end"),  # 367 days
    ],
)
def test_bad_dates_are_400_naming_the_param(alice, clock, params, param):
    assert_error(alice.client().get(URL, params), 400, "invalid_request", param)


def test_366_days_is_the_maximum(alice, clock):
    assert alice.client().get(URL, {"start": "2025-11-01", "end": "2026-11-01"}).status_code == 200


def test_no_key_is_401(anon, db):
    assert_error(anon.get(URL), 401, "invalid_api_key")


def test_revoked_key_is_401(alice):
    tenant_services.api_key_revoke(api_key=alice.key)
    assert_error(alice.client().get(URL), 401, "invalid_api_key")


def test_key_without_read_scope_is_403(alice):
    _, raw = tenant_services.api_key_create(
        organization=alice.organization, name="gen only", mode="test", scopes=["generate"]
    )
    assert_error(alice.client(raw).get(URL), 403, "permission_denied")


def test_rate_limit_is_429(alice, use_database_limits):
    org = alice.organization
    org.requests_per_minute_override = 1
    org.save()
    # Both requests in one fixed one-minute window (at 59.9 s they would straddle two windows).
    with time_machine.travel(datetime.now(UTC).replace(second=5, microsecond=0), tick=True):
        assert alice.client().get(URL).status_code == 200
        assert_error(alice.client().get(URL), 429, "rate_limited")


@pytest.mark.parametrize(
    "query", ["start=9999-12-01", "start=9999-12-31&end=9999-12-31", "end=9999-12-31", "start=%C2%B2"]
)
def test_dates_that_would_overflow_are_a_400(alice, query):
    response = alice.client().get(f"/v1/usage?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] in ("start", "end")
