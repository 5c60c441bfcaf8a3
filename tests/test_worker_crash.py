"""A real `qcluster` worker is SIGKILLed in the middle of a job: the job still finishes, once, and
is billed once, because the job row (not the broker) is the truth and the reaper re-rings it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from billing.models import UsageRecord
from generation.models import Job, ProviderAccount
from tenants.models import Organization, QuotaPeriod

ROOT = Path(__file__).resolve().parents[1]


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )


def _start_cluster(log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": _database_url(),
        "GENERATION_LEASE_SECONDS": "3",
        "GENERATION_REAPER_INTERVAL_SECONDS": "1",
        "GENERATION_REENQUEUE_AFTER_SECONDS": "1",
        "Q_WORKERS": "1",
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_job_survives_a_sigkilled_worker_and_is_billed_once(alice, settings, tmp_path):
    settings.GENERATION_INLINE_DOORBELL = False  # go through the real broker
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 4000, "failure_rate": 0})
    log = tmp_path / "qcluster.log"

    response = alice.client(alice.raw_live_key).post(
        "/v1/generations", {"prompt": "survive the crash", "count": 2}, format="json"
    )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]

    first = _start_cluster(log)
    try:
        _wait_for(lambda: Job.objects.get(public_id=job_id).status == "running", 60, "the job to start", log)
        time.sleep(0.5)  # the upstream call is in flight now
    finally:
        _kill(first)  # SIGKILL the whole cluster: master, pusher, monitor and the worker

    job = Job.objects.get(public_id=job_id)
    assert job.status == "running" and job.attempts == 1

    second = _start_cluster(log)
    try:
        _wait_for(
            lambda: Job.objects.get(public_id=job_id).status == "succeeded", 90, "the job to finish", log
        )
        # A later job through the same cluster: the doorbell path works end to end.
        ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 0, "failure_rate": 0})
        time.sleep(5.5)  # the worker's catalog cache refreshes every 5 s
        quick = alice.client().post("/v1/generations?wait=30", {"prompt": "after the crash"}, format="json")
        assert quick.status_code == 200, quick.content
        assert quick.json()["status"] == "succeeded"
    finally:
        _kill(second, signal.SIGTERM)

    job = Job.objects.get(public_id=job_id)
    assert job.attempts == 2
    assert job.images_delivered == 2
    assert job.images.count() == 2
    records = UsageRecord.objects.filter(job_public_id=job_id)
    assert records.count() == 2  # billed once, for the two images delivered
    assert len({r.image_public_id for r in records}) == 2
    organization = Organization.objects.get(pk=alice.organization.pk)
    assert organization.jobs_in_flight == 0
    assert QuotaPeriod.objects.get(organization=organization).images_reserved == 2
