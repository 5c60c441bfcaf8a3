"""The daily cap on free test-mode images per organization (TEST_MODE_DAILY_IMAGES)."""

from datetime import UTC, datetime

import pytest
import time_machine

from generation.models import Job

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_test_keys_stop_at_the_daily_cap_and_resume_the_next_utc_day(
    alice, charlie, settings, backend, request
):
    request.getfixturevalue("use_database_limits" if backend == "database" else "use_redis")
    settings.TEST_MODE_DAILY_IMAGES = 5
    client = alice.client()
    with time_machine.travel(datetime(2026, 12, 1, 23, 0, tzinfo=UTC), tick=False):
        assert client.post("/v1/generations", {"prompt": "a", "count": 4}, format="json").status_code == 202
        response = client.post("/v1/generations", {"prompt": "b", "count": 2}, format="json")
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "test_mode_limit_exceeded"
        assert int(response["Retry-After"]) == 3600
        # The refused request gave its count back: one more image still fits today.
        assert client.post("/v1/generations", {"prompt": "c", "count": 1}, format="json").status_code == 202
        # Another organization has its own allowance; live keys are not capped by it.
        assert charlie.client().post("/v1/generations", {"prompt": "d"}, format="json").status_code == 202
    with time_machine.travel(datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC), tick=False):
        assert client.post("/v1/generations", {"prompt": "e", "count": 4}, format="json").status_code == 202
    assert Job.objects.filter(organization=alice.organization).count() == 3


def test_a_cap_of_zero_refuses_every_test_image(alice, settings):
    settings.TEST_MODE_DAILY_IMAGES = 0
    from tenants.errors import TestModeLimitExceeded
    from tenants.limits import test_images_reserve

    with pytest.raises(TestModeLimitExceeded):
        test_images_reserve(organization=alice.organization, images=1)
