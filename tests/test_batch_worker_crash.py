"""A real `qcluster` worker is SIGKILLed in the middle of a batch: a second worker picks the batch
up (its feeder is re-driven from the database), and every item ends with exactly one job, billed
once; nothing is submitted twice and no slot or quota is leaked."""

import signal

import pytest

from billing.models import UsageRecord
from generation.models import Batch, Job, ProviderAccount
from generation.worker import runner
from tenants.models import Organization, QuotaPeriod
from tests.test_worker_crash import _kill, _start_cluster, _wait_for


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_batch_survives_a_sigkilled_worker(alice, settings, tmp_path):
    settings.GENERATION_INLINE_DOORBELL = False  # through the real broker
    if runner._runner is not None:
        runner._runner.stop()  # only the clusters below may feed the batch
        runner._runner = None  # the next test that needs one starts a fresh runner
    ProviderAccount.objects.filter(name="sandbox").update(options={"latency_ms": 1500, "failure_rate": 0})
    Organization.objects.filter(pk=alice.organization.pk).update(max_concurrent_jobs_override=4)  # share 2
    log = tmp_path / "qcluster.log"
    client = alice.client(alice.raw_live_key)
    requests = [{"custom_id": f"c{i}", "body": {"prompt": f"crash {i}"}} for i in range(8)]
    response = client.post("/v1/batches", {"requests": requests}, format="json")
    assert response.status_code == 201, response.content
    batch = Batch.objects.get(public_id=response.json()["id"])

    first = _start_cluster(log)
    try:
        _wait_for(
            lambda: Job.objects.filter(batch=batch, status="succeeded").count() >= 2, 60, "progress", log
        )
        _wait_for(
            lambda: Job.objects.filter(batch=batch, status="running").exists(), 30, "a running item", log
        )
    finally:
        _kill(first)  # SIGKILL the whole cluster, items in flight
    assert Batch.objects.get(pk=batch.pk).status == "in_progress"

    second = _start_cluster(log)
    try:
        _wait_for(
            lambda: Batch.objects.get(pk=batch.pk).status == "completed", 120, "the batch to finish", log
        )
    finally:
        _kill(second, signal.SIGTERM)

    jobs = Job.objects.filter(batch=batch)
    assert sorted(jobs.values_list("custom_id", flat=True)) == [f"c{i}" for i in range(8)]
    assert set(jobs.values_list("status", flat=True)) == {"succeeded"}
    assert jobs.filter(attempts=2).exists()  # at least one item was cut short and re-run
    records = UsageRecord.objects.filter(job_public_id__in=jobs.values_list("public_id", flat=True))
    assert records.count() == 8 and len(set(records.values_list("image_public_id", flat=True))) == 8
    organization = Organization.objects.get(pk=alice.organization.pk)
    assert organization.jobs_in_flight == 0
    assert QuotaPeriod.objects.get(organization=organization).images_reserved == 8
