"""Spend controls: key image and spend caps, the organization's spend cap, worst-case reservation
and settlement, threshold e-mails (tenants.limits)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import close_old_connections, connection, transaction

from tenants.errors import KeyCapExceeded, SpendCapExceeded
from tenants.limits import quota_reserve, spend_reserve, spend_settle
from tenants.models import ApiKey, ApiKeyPeriod, Organization, QuotaPeriod, SpendAlert, SpendReservation
from tenants.services import api_key_create

NOV = date(2026, 11, 1)
PRICE = Decimal("0.0900")


@pytest.fixture
def clock():
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=UTC), tick=False) as traveller:
        yield traveller


def live_key(organization, name: str) -> ApiKey:
    key, _ = api_key_create(
        organization=organization, name=name, mode="live", scopes=["generate"], created_by=None
    )
    return key


def reserve(organization, api_key, job, images=1, unit_price=PRICE):
    """What job_submit does for a live key: quota, then spend, in one transaction."""
    with transaction.atomic():
        quota_reserve(organization=organization, images=images)
        return spend_reserve(
            organization=organization,
            api_key=api_key,
            job_public_id=job,
            images=images,
            unit_price=unit_price,
        )


def test_the_worst_case_is_reserved_and_settled_to_what_was_delivered(alice, clock):
    org, key = alice.organization, alice.live_key
    reserve(org, key, "gen_1", images=4, unit_price=Decimal("0.12"))

    month = QuotaPeriod.objects.get(organization=org, period_start=NOV)
    key_month = ApiKeyPeriod.objects.get(api_key=key, period_start=NOV)
    assert (month.spend_reserved, month.spend_used) == (Decimal("0.48"), 0)
    assert (key_month.images_reserved, key_month.spend_reserved) == (4, Decimal("0.48"))

    assert spend_settle(job_public_id="gen_1", images=3, amount=Decimal("0.27")) is True
    assert spend_settle(job_public_id="gen_1", images=3, amount=Decimal("0.27")) is False  # exactly once

    month.refresh_from_db()
    key_month.refresh_from_db()
    assert (month.spend_reserved, month.spend_used) == (Decimal("0.27"), Decimal("0.27"))
    assert (key_month.images_reserved, key_month.spend_reserved, key_month.spend_used) == (
        3,
        Decimal("0.27"),
        Decimal("0.27"),
    )
    reservation = SpendReservation.objects.get(job_public_id="gen_1")
    assert (reservation.settled_images, reservation.settled_amount) == (3, Decimal("0.27"))


def test_a_key_image_cap_refuses_the_request_and_takes_nothing(alice, clock):
    org, key = alice.organization, alice.live_key
    ApiKey.objects.filter(pk=key.pk).update(monthly_image_cap=3)
    key.refresh_from_db()
    reserve(org, key, "gen_1", images=2)

    with pytest.raises(KeyCapExceeded) as excinfo:
        reserve(org, key, "gen_2", images=2)

    assert excinfo.value.code == "key_cap_exceeded" and excinfo.value.status_code == 429
    assert "3 images" in excinfo.value.message
    assert QuotaPeriod.objects.get(organization=org).images_reserved == 2  # the quota take rolled back too
    assert QuotaPeriod.objects.get(organization=org).spend_reserved == 2 * PRICE
    assert not SpendReservation.objects.filter(job_public_id="gen_2").exists()
    reserve(org, key, "gen_3", images=1)  # exactly up to the cap


def test_a_key_spend_cap_counts_the_worst_case_and_frees_what_was_not_spent(alice, clock):
    org, key = alice.organization, alice.live_key
    ApiKey.objects.filter(pk=key.pk).update(monthly_spend_cap=Decimal("0.30"))
    key.refresh_from_db()
    reserve(org, key, "gen_1", images=3)  # 0.27 worst case
    with pytest.raises(KeyCapExceeded):
        reserve(org, key, "gen_2", images=1)

    spend_settle(job_public_id="gen_1", images=1, amount=PRICE)  # two images were filtered

    reserve(org, key, "gen_2", images=2)
    assert ApiKeyPeriod.objects.get(api_key=key).spend_reserved == 3 * PRICE


def test_the_organization_spend_cap_covers_every_key(alice, clock):
    org = alice.organization
    Organization.objects.filter(pk=org.pk).update(monthly_spend_cap=Decimal("0.20"))
    org.refresh_from_db()
    other = live_key(org, "dave")
    reserve(org, alice.live_key, "gen_1", images=1)
    reserve(org, other, "gen_2", images=1)

    with pytest.raises(SpendCapExceeded) as excinfo:
        reserve(org, other, "gen_3", images=1)

    assert excinfo.value.code == "spend_cap_exceeded" and "0.20" in excinfo.value.message
    assert QuotaPeriod.objects.get(organization=org).spend_reserved == 2 * PRICE


def test_threshold_emails_go_out_once_per_threshold_per_month(alice, clock):
    org = alice.organization
    Organization.objects.filter(pk=org.pk).update(
        monthly_spend_cap=Decimal("1.00"), spend_alert_thresholds=[50, 100]
    )
    org.refresh_from_db()

    def job(number, images):
        reserve(org, alice.live_key, f"gen_{number}", images=images, unit_price=Decimal("0.10"))
        spend_settle(job_public_id=f"gen_{number}", images=images, amount=Decimal("0.10") * images)

    with django_capture_on_commit():
        job(1, 4)
    assert mail.outbox == []
    with django_capture_on_commit():
        job(2, 1)  # 0.50: half the cap
    assert len(mail.outbox) == 1
    assert "50 % of its monthly spend cap of 1.00 USD" in mail.outbox[0].body
    assert mail.outbox[0].to == [alice.user.email]
    with django_capture_on_commit():
        job(3, 2)
        job(4, 1)
    assert len(mail.outbox) == 1  # still between the thresholds
    with django_capture_on_commit():
        job(5, 2)  # 1.00: the cap
    assert len(mail.outbox) == 2 and "reached its monthly spend cap" in mail.outbox[1].subject
    with pytest.raises(SpendCapExceeded):
        reserve(org, alice.live_key, "gen_6", images=1, unit_price=Decimal("0.10"))

    clock.move_to(datetime(2026, 12, 2, tzinfo=UTC))  # a new month: a new budget and new e-mails
    with django_capture_on_commit():
        job(7, 5)
    assert len(mail.outbox) == 3
    assert list(
        SpendAlert.objects.values_list("period_start", "threshold").order_by("period_start", "threshold")
    ) == [
        (NOV, 50),
        (NOV, 100),
        (date(2026, 12, 1), 50),
    ]


def django_capture_on_commit():
    """Run on_commit callbacks (the e-mails) when the block ends, as a commit would."""
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)


def race(organization, api_key, prefix: str) -> list[str]:
    """50 threads, each with its own database connection, reserve one image each at the same time."""
    barrier = threading.Barrier(50)

    def attempt(number):
        try:
            barrier.wait()
            reserve(
                Organization.objects.select_related("plan").get(pk=organization.pk),
                ApiKey.objects.get(pk=api_key.pk),
                f"{prefix}_{number}",
            )
            return "ok"
        except KeyCapExceeded:
            return "key"
        except SpendCapExceeded:
            return "org"
        finally:
            close_old_connections()
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(attempt, range(50)))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_50_concurrent_requests_never_exceed_a_key_cap_or_the_organization_spend_cap(pro_plan):
    """A key capped at 7 images, then an organization capped at 20 images' worth, each raced by 50
    concurrent requests: exactly what fits gets through, never a single image more (run it on
    PostgreSQL too: DATABASE_URL=postgres://… make test)."""
    from tenants.services import organization_create

    org = organization_create(name="Burst", plan=pro_plan)
    org.monthly_spend_cap = 20 * PRICE
    org.save()
    capped = live_key(org, "erin")
    ApiKey.objects.filter(pk=capped.pk).update(monthly_image_cap=7)
    uncapped = live_key(org, "frank")
    reserve(org, uncapped, "warmup")  # the month rows exist: the race is on the conditional UPDATEs
    reserve(org, capped, "warmup-capped")

    key_results = race(org, capped, "key")

    assert key_results.count("ok") == 6 and key_results.count("key") == 44
    assert ApiKeyPeriod.objects.get(api_key=capped).images_reserved == 7

    org_results = race(org, uncapped, "org")

    month = QuotaPeriod.objects.get(organization=org)
    assert org_results.count("ok") == 20 - 8 and org_results.count("org") == 50 - 12
    assert (month.spend_reserved, month.images_reserved) == (20 * PRICE, 20)
    assert SpendReservation.objects.filter(organization=org).count() == 20
