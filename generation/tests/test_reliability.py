"""Reliability rules of the job lifecycle: runners claim due work themselves, a canceled running job
keeps its slot until its worker stops, an ambiguous commit never deletes billed files, and the
liveness check fails when no runner makes progress while work waits."""

import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from generation.engine.providers.base import ProviderImage
from generation.engine.router import Outcome, RoutedImage
from generation.jobs.liveness import worker_health
from generation.jobs.services import (
    _discard_unrecorded,
    job_cancel,
    job_cancel_settle,
    job_claim,
    job_claim_due,
    job_complete,
    job_plan,
    job_reap,
    jobs_no_longer_held,
)
from generation.models import Image, Job
from generation.tests.test_jobs import image, in_flight, reserved, submit


def test_claim_due_takes_queued_and_expired_jobs_oldest_first_never_live_leases(alice):
    first, _ = submit(alice, prompt="one")
    second, _ = submit(alice, prompt="two")
    third, _ = submit(alice, prompt="three")
    assert job_claim(public_id=third.public_id, owner="w0")  # a live lease elsewhere
    assert job_claim_due(owner="w1", limit=1) == [first.public_id]
    assert job_claim_due(owner="w1", limit=10) == [second.public_id]
    assert job_claim_due(owner="w2", limit=10) == []
    Job.objects.filter(pk=third.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert job_claim_due(owner="w2", limit=10) == [third.public_id]
    third.refresh_from_db()
    assert third.lease_owner == "w2" and third.attempts == 2


def test_claim_due_respects_max_attempts(alice, settings):
    settings.GENERATION_MAX_ATTEMPTS = 1
    job, _ = submit(alice)
    assert job_claim_due(owner="w1", limit=5) == [job.public_id]
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert job_claim_due(owner="w2", limit=5) == []


def test_cancel_of_a_running_job_keeps_its_slot_until_the_worker_stops(alice):
    job, _ = submit(alice, count=2)
    assert job_claim(public_id=job.public_id, owner="w1")
    canceled = job_cancel(organization=alice.organization, public_id=job.public_id)
    assert canceled.status == "canceled"
    # The upstream call may still be running: the slot and the reservation stay taken.
    assert in_flight(alice.organization) == 1 and reserved(alice.organization) == 2
    assert jobs_no_longer_held(public_ids=[job.public_id], owner="w1") == [job.public_id]
    assert not job_cancel_settle(job=job, owner="someone-else")
    assert job_cancel_settle(job=job, owner="w1")
    assert in_flight(alice.organization) == 0 and reserved(alice.organization) == 0
    assert not job_cancel_settle(job=job, owner="w1")  # given back exactly once
    assert in_flight(alice.organization) == 0


def test_reaper_settles_a_canceled_job_whose_worker_died(alice):
    job, _ = submit(alice)
    assert job_claim(public_id=job.public_id, owner="w1")
    job_cancel(organization=alice.organization, public_id=job.public_id)
    assert job_reap()["failed"] == 0 and in_flight(alice.organization) == 1  # the lease is live
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert job_reap().get("settled") == 1
    assert in_flight(alice.organization) == 0 and reserved(alice.organization) == 0


def _outcome(job: Job, count: int) -> Outcome:
    route = job_plan(job=job).primary[0]
    return Outcome(images=[RoutedImage(ProviderImage(data=_png(), mime_type="image/png"), route)] * count)


def _png() -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_delivered_before_a_cancel_are_delivered_and_billed(alice):
    job, _ = submit(alice, count=1)
    assert job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    job_cancel(organization=alice.organization, public_id=job.public_id)
    assert job_complete(job=job, owner="w1", outcome=_outcome(job, 1))
    job.refresh_from_db()
    assert job.status == "canceled" and job.images_delivered == 1 and job.lease_owner == ""
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 1
    assert Image.objects.filter(job=job).count() == 1
    assert in_flight(alice.organization) == 0 and reserved(alice.organization) == 1


def test_lease_lost_after_an_ambiguous_commit_keeps_the_recorded_files(alice):
    """The first COMMIT went through but its answer was lost; the retry finds the job succeeded
    with these very images and must delete only the files no image row refers to."""
    from django.core.files.storage import default_storage

    from generation.engine.storage import image_store
    from generation.jobs.services import job_succeed

    job, _ = submit(alice)
    assert job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    recorded, stray = image(0), image(1)
    for delivered in (recorded, stray):
        delivered.storage_path = image_store(
            path_prefix=f"images/test/{job.public_id}",
            image_public_id=delivered.public_id,
            data=_png(),
            mime_type="image/png",
        )
    job_succeed(
        job=job, owner="w1", images=[recorded], fallback_reason="", attempts_log=[], upstream_cost=Decimal(0)
    )
    _discard_unrecorded(job, [recorded, stray])
    assert default_storage.exists(recorded.storage_path)
    assert not default_storage.exists(stray.storage_path)
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 1
    assert Decimal(Job.objects.get(pk=job.pk).amount) > 0


def _beat(settings, **fields):
    settings.GENERATION_HEARTBEAT_DIR.mkdir(parents=True, exist_ok=True)
    data = {"owner": "h:1:a", "pid": 1, "beat_at": time.time(), "inflight": 0, "last_claim_at": 0, **fields}
    (settings.GENERATION_HEARTBEAT_DIR / "h_1_a.json").write_text(json.dumps(data))


def test_worker_health_fails_without_a_heartbeat_or_when_queued_work_is_not_claimed(
    alice, settings, tmp_path
):
    settings.GENERATION_HEARTBEAT_DIR = tmp_path / "beats"
    settings.WORKER_HEALTH_STALE_SECONDS = 20
    assert not worker_health().ok  # no runner at all
    _beat(settings, beat_at=time.time() - 60)
    assert not worker_health().ok  # a runner that stopped beating
    _beat(settings)
    assert worker_health().ok  # beating, nothing queued
    job, _ = submit(alice)
    Job.objects.filter(pk=job.pk).update(enqueued_at=timezone.now() - timedelta(seconds=60))
    health = worker_health()
    assert not health.ok and "waited" in health.reason  # work waits and nobody claims it
    _beat(settings, last_claim_at=time.time())
    assert worker_health().ok  # a runner is claiming: busy, not wedged


@pytest.mark.django_db(transaction=True)
def test_a_cancel_reaches_the_runner_at_once_and_gives_the_slot_back_when_it_stopped(alice):
    """Cancel of a running job: canceled at once for the customer, the runner aborts the (slow)
    upstream call within about a second, and only then are the slot and reservation released."""
    from generation.models import ProviderAccount
    from generation.worker.runner import get_runner

    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 20000, "failure_rate": 0})
    get_runner().reset_health()
    response = alice.client().post("/v1/generations", {"prompt": "slow", "count": 2}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    deadline = time.monotonic() + 10
    while Job.objects.get(public_id=job_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight(alice.organization) == 1
    canceled = alice.client().post(f"/v1/generations/{job_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    started = time.monotonic()
    while in_flight(alice.organization) and time.monotonic() - started < 5:
        time.sleep(0.05)
    # Within 5 s: neither at the end of the 20 s call nor at the next lease renewal (every 20 s).
    assert in_flight(alice.organization) == 0, "the runner did not stop within 5 s"
    job = Job.objects.get(public_id=job_id)
    assert job.status == "canceled" and job.lease_owner == "" and job.images_delivered == 0
    assert not UsageRecord.objects.filter(job_public_id=job_id).exists()
    assert reserved(alice.organization) == 0
    # The slot is given back from inside the job's task; the task leaves `inflight` when it ends.
    started = time.monotonic()
    while get_runner().inflight.get(job_id) is not None and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert get_runner().inflight.get(job_id) is None


@pytest.mark.django_db(transaction=True)
def test_past_the_image_byte_budget_the_runner_claims_nothing_until_bytes_are_released(
    alice, settings, tmp_path
):
    """GENERATION_INFLIGHT_IMAGE_BYTES_MAX: while a worker process holds that many decoded upstream
    image bytes it claims no new job (and says so on /metrics); the job waits queued, nothing fails,
    and once the bytes are released it is claimed and delivered whole, its own bytes counted."""
    from django.test import Client

    from generation.models import ProviderAccount
    from generation.worker.runner import JobRunner

    settings.GENERATION_INFLIGHT_IMAGE_BYTES_MAX = 1000
    settings.GENERATION_INLINE_DOORBELL = False  # only our polling runner claims
    settings.GENERATION_RUNNER_POLL_SECONDS = 0.05
    settings.GENERATION_HEARTBEAT_DIR = tmp_path / "beats"
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 10, "failure_rate": 0})
    runner = JobRunner(poll=True)
    try:

        def on_loop(fn, *args):
            done = threading.Event()

            def call() -> None:
                fn(*args)
                done.set()

            runner._loop.call_soon_threadsafe(call)
            assert done.wait(5)

        on_loop(runner.hold_image_bytes, 5000)  # another job's images, between answer and commit
        response = alice.client().post("/v1/generations", {"prompt": "later", "count": 2}, format="json")
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        paused = runner.claims_paused_total
        # Claim passes begun after the job was committed, each of which found the budget spent.
        _until(lambda: runner.claims_paused_total >= paused + 3)
        assert Job.objects.get(public_id=job_id).status == "queued"
        assert not runner.has_capacity()
        _until(lambda: b"imagegate_runner_claims_paused 1.0" in _metrics(Client))
        assert b"imagegate_runner_inflight_image_bytes 5000.0" in _metrics(Client)

        on_loop(runner.release_image_bytes, 5000)
        _until(lambda: Job.objects.get(public_id=job_id).status == "succeeded")
        job = Job.objects.get(public_id=job_id)
        assert job.images_delivered == 2 and Image.objects.filter(job=job).count() == 2
        assert runner.image_bytes == 0
        assert runner.image_bytes_peak > 5000  # the job's own images were counted while held
    finally:
        runner.stop(timeout=5)


def _metrics(client_class) -> bytes:
    return client_class(REMOTE_ADDR="127.0.0.1").get("/metrics").content


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)
