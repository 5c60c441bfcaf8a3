"""Parked waits are capped per process and per organization: past the cap `?wait=` answers at once
(202 + Location, the job runs on) and the compat APIs refuse with 429 + Retry-After before any job
is submitted (nothing to pay for, nothing lost)."""

import threading

import pytest

from generation.api.waiting import parked_waits
from generation.models import Job


@pytest.fixture
def wait_cap(settings):
    settings.WAIT_MAX_PARKED_PER_ORGANIZATION = 1
    settings.WAIT_MAX_PARKED_PER_PROCESS = 10


def _hold_a_wait(organization_id):
    """Another request of the organization parked in this process (the slot it takes)."""
    entered, release = threading.Event(), threading.Event()

    def park():
        with parked_waits.slot(organization_id) as taken:
            assert taken
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=park)
    thread.start()
    entered.wait(5)
    return release, thread


def test_over_the_cap_wait_degrades_to_202_with_location(alice, wait_cap):
    release, thread = _hold_a_wait(alice.organization.pk)
    try:
        response = alice.client().post("/v1/generations?wait=30", {"prompt": "a fox"}, format="json")
        assert response.status_code in (200, 202), response.content  # answered without parking
        assert response["Location"] == f"/v1/generations/{response.json()['id']}"
        assert Job.objects.count() == 1
    finally:
        release.set()
        thread.join()


def test_over_the_cap_compat_is_429_with_retry_after_and_submits_nothing(alice, wait_cap):
    release, thread = _hold_a_wait(alice.organization.pk)
    try:
        response = alice.client(alice.raw_live_key).post(
            "/v1/images/generations", {"prompt": "a fox", "model": "gpt-image-1"}, format="json"
        )
        assert response.status_code == 429, response.content
        assert response["Retry-After"]
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert not Job.objects.exists()
    finally:
        release.set()
        thread.join()


def test_another_organization_still_parks(alice, charlie, wait_cap):
    release, thread = _hold_a_wait(alice.organization.pk)
    try:
        with parked_waits.slot(charlie.organization.pk) as taken:
            assert taken
    finally:
        release.set()
        thread.join()
