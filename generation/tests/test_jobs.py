"""Job lifecycle services: reservations, claims and leases, exactly-once finishing and billing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from generation.errors import IdempotencyConflict, JobNotCancelable
from generation.jobs.services import (
    DeliveredImage,
    GenerationRequest,
    LeaseLost,
    job_cancel,
    job_claim,
    job_fail,
    job_renew_leases,
    job_submit,
    job_succeed,
)
from generation.models import Image, Job
from tenants.errors import NotFound, QuotaExceeded, RateLimited
from tenants.models import Organization, QuotaPeriod


def submit(persona, live=True, key=None, **fields):
    api_key = persona.live_key if live else persona.key
    request = GenerationRequest(prompt=fields.pop("prompt", "a red fox"), **fields)
    return job_submit(
        organization=persona.organization, api_key=api_key, request=request, idempotency_key=key
    )


def reserved(org) -> int:
    row = QuotaPeriod.objects.filter(organization=org).first()
    return row.images_reserved if row else 0


def in_flight(org) -> int:
    return Organization.objects.get(pk=org.pk).jobs_in_flight


def image(index, *, tier="fast", filtered=False, sandbox=False):
    return DeliveredImage(
        index=index,
        public_id=f"img_test{index}{tier}",
        storage_path="" if filtered else f"images/x/{index}.png",
        width=None if filtered else 1024,
        height=None if filtered else 1024,
        mime_type="" if filtered else "image/png",
        size_bytes=0 if filtered else 10,
        filtered=filtered,
        filter_reason="unsafe" if filtered else "",
        served_tier=tier,
        model="gemini-3.1-flash-image",
        route="gemini-api/gemini-3.1-flash-image",
        is_sandbox=sandbox,
    )


def test_submit_reserves_quota_and_concurrency_for_live_keys(alice):
    job, created = submit(alice, count=3)
    assert created and job.status == "queued" and job.public_id.startswith("gen_")
    assert job.livemode and job.tier == "fast" and job.count == 3
    assert reserved(alice.organization) == 3
    assert in_flight(alice.organization) == 1


def test_test_keys_do_not_use_the_monthly_quota(alice):
    job, _ = submit(alice, live=False, count=2)
    assert not job.livemode
    assert reserved(alice.organization) == 0
    assert in_flight(alice.organization) == 1


def test_quota_exhausted_creates_nothing(alice):
    alice.organization.monthly_images_override = 2
    alice.organization.save()
    with pytest.raises(QuotaExceeded):
        submit(alice, count=3)
    assert not Job.objects.exists()
    assert in_flight(alice.organization) == 0


def test_concurrency_limit_rolls_back_the_quota_reservation(alice):
    alice.organization.max_concurrent_jobs_override = 1
    alice.organization.save()
    submit(alice)
    with pytest.raises(RateLimited):
        submit(alice, count=2)
    assert reserved(alice.organization) == 1
    assert Job.objects.count() == 1


def test_idempotent_replay_returns_the_same_job_and_reserves_once(alice):
    first, created = submit(alice, key="abc-1", count=2)
    again, created_again = submit(alice, key="abc-1", count=2)
    assert created and not created_again
    assert again.pk == first.pk
    assert reserved(alice.organization) == 2
    with pytest.raises(IdempotencyConflict):
        submit(alice, key="abc-1", count=3)


def test_idempotency_keys_are_per_organization(alice, charlie):
    a, _ = submit(alice, key="same")
    c, created = submit(charlie, live=False, key="same")
    assert created and a.pk != c.pk


def test_claim_is_exclusive_until_the_lease_expires(alice, settings):
    job, _ = submit(alice)
    assert job_claim(public_id=job.public_id, owner="w1")
    assert not job_claim(public_id=job.public_id, owner="w2")  # a duplicate doorbell
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert job_claim(public_id=job.public_id, owner="w2")  # the first worker died
    job.refresh_from_db()
    assert job.attempts == 2 and job.lease_owner == "w2" and job.status == "running"
    assert job_renew_leases(public_ids=[job.public_id], owner="w1") == set()
    assert job_renew_leases(public_ids=[job.public_id], owner="w2") == {job.public_id}


def test_claim_gives_up_after_max_attempts(alice, settings):
    settings.GENERATION_MAX_ATTEMPTS = 1
    job, _ = submit(alice)
    assert job_claim(public_id=job.public_id, owner="w1")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert not job_claim(public_id=job.public_id, owner="w2")


def test_succeed_records_images_and_bills_each_delivered_image_once(alice):
    job, _ = submit(alice, count=4)
    job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    images = [image(0), image(1), image(2, filtered=True)]  # the 4th is missing
    job_succeed(
        job=job,
        owner="w1",
        images=images,
        fallback_reason="",
        attempts_log=[],
        upstream_cost=Decimal("0.134"),
    )
    job.refresh_from_db()
    assert job.status == "succeeded" and job.images_delivered == 2
    assert job.amount == Decimal("0.18")  # 2 x Pro fast price 0.09
    assert Image.objects.filter(job=job).count() == 3
    records = UsageRecord.objects.filter(job_public_id=job.public_id)
    assert records.count() == 2
    assert {r.unit_price for r in records} == {Decimal("0.09")}
    assert sum(r.upstream_cost for r in records) == Decimal("0.134")
    assert reserved(alice.organization) == 2  # filtered and missing images were given back
    assert in_flight(alice.organization) == 0
    with pytest.raises(LeaseLost):  # a second finish (say, a stale worker) changes nothing
        job_succeed(
            job=job, owner="w1", images=images, fallback_reason="", attempts_log=[], upstream_cost=Decimal(0)
        )
    assert UsageRecord.objects.filter(job_public_id=job.public_id).count() == 2


def test_a_worker_that_lost_its_lease_cannot_finish(alice):
    job, _ = submit(alice)
    job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    with pytest.raises(LeaseLost):
        job_succeed(
            job=job,
            owner="w2",
            images=[image(0)],
            fallback_reason="",
            attempts_log=[],
            upstream_cost=Decimal("0"),
        )
    assert not UsageRecord.objects.exists() and not Image.objects.exists()
    assert Job.objects.get(pk=job.pk).status == "running"


@pytest.mark.parametrize("policy, billed", [("allow", "0.09"), ("allow_billed_as_served", "0.12")])
def test_fallback_billing_follows_the_policy(alice, policy, billed):
    job, _ = submit(alice, fallback=policy)
    job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    job_succeed(
        job=job,
        owner="w1",
        images=[image(0, tier="standard")],
        fallback_reason="fast tier unavailable",
        attempts_log=[],
        upstream_cost=Decimal("0.07"),
    )
    record = UsageRecord.objects.get(job_public_id=job.public_id)
    assert record.served_tier == "standard" and record.requested_tier == "fast"
    assert record.amount == Decimal(billed)


def test_sandbox_and_test_mode_images_are_recorded_but_free(alice):
    job, _ = submit(alice, live=False)
    job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    job_succeed(
        job=job,
        owner="w1",
        images=[image(0, sandbox=True)],
        fallback_reason="",
        attempts_log=[],
        upstream_cost=Decimal(0),
    )
    record = UsageRecord.objects.get(job_public_id=job.public_id)
    assert record.amount == 0 and not record.livemode


def test_fail_releases_everything_and_bills_nothing(alice):
    job, _ = submit(alice, count=2)
    job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    assert job_fail(job=job, owner="w1", code="upstream_unavailable", message="all down")
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "upstream_unavailable"
    assert reserved(alice.organization) == 0 and in_flight(alice.organization) == 0
    assert not job_fail(job=job, owner="w1", code="x", message="again")  # exactly once
    assert in_flight(alice.organization) == 0


def test_cancel(alice, charlie):
    job, _ = submit(alice, count=2)
    with pytest.raises(NotFound):
        job_cancel(organization=charlie.organization, public_id=job.public_id)
    canceled = job_cancel(organization=alice.organization, public_id=job.public_id)
    assert canceled.status == "canceled"
    assert reserved(alice.organization) == 0 and in_flight(alice.organization) == 0
    with pytest.raises(JobNotCancelable):
        job_cancel(organization=alice.organization, public_id=job.public_id)
    assert not job_claim(public_id=job.public_id, owner="w1")  # a late doorbell does nothing
