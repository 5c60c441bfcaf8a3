import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.db import close_old_connections, connection

from tenants.errors import QuotaExceeded, RateLimited
from tenants.limits import (
    concurrency_acquire,
    concurrency_release,
    quota_release,
    quota_reserve,
    rate_limit_hit,
)
from tenants.models import Organization, QuotaPeriod

ROOT = Path(__file__).resolve().parents[2]


def test_quota_reserve_and_release(org_a):
    org_a.monthly_images_override = 5
    org_a.save()
    with time_machine.travel(datetime(2026, 11, 24, 12, tzinfo=UTC)):
        period = quota_reserve(organization=org_a, images=4)
        assert period == date(2026, 11, 1)
        with pytest.raises(QuotaExceeded) as excinfo:
            quota_reserve(organization=org_a, images=2)
        assert "2026-12-01" in excinfo.value.message
        quota_reserve(organization=org_a, images=1)
        quota_release(organization_id=org_a.pk, images=3, period_start=period)
        quota_reserve(organization=org_a, images=3)
        assert QuotaPeriod.objects.get(organization=org_a, period_start=period).images_reserved == 5


def test_quota_resets_with_the_calendar_month(org_a):
    org_a.monthly_images_override = 2
    org_a.save()
    with time_machine.travel(datetime(2026, 11, 30, 23, 59, tzinfo=UTC)):
        quota_reserve(organization=org_a, images=2)
        with pytest.raises(QuotaExceeded):
            quota_reserve(organization=org_a, images=1)
    with time_machine.travel(datetime(2026, 12, 1, 0, 1, tzinfo=UTC)):
        assert quota_reserve(organization=org_a, images=2) == date(2026, 12, 1)


def test_quota_release_never_goes_negative(org_a):
    period = quota_reserve(organization=org_a, images=1)
    quota_release(organization_id=org_a.pk, images=5, period_start=period)
    assert QuotaPeriod.objects.get(organization=org_a).images_reserved == 0


@pytest.mark.django_db(transaction=True)
def test_parallel_reservations_never_exceed_the_quota(pro_plan):
    """50 threads, each with its own database connection, race for the last 10 images."""
    from tenants.services import organization_create

    org = organization_create(name="Burst", plan=pro_plan)
    org.monthly_images_override = 100
    org.save()
    period = quota_reserve(organization=org, images=90)  # 10 remain
    barrier = threading.Barrier(50)

    def attempt(_):
        try:
            barrier.wait()
            quota_reserve(organization=Organization.objects.get(pk=org.pk), images=1)
            return True
        except QuotaExceeded:
            return False
        finally:
            close_old_connections()
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, range(50)))
    assert results.count(True) == 10
    assert QuotaPeriod.objects.get(organization=org, period_start=period).images_reserved == 100


def test_concurrency_limit(org_a):
    org_a.max_concurrent_jobs_override = 2
    org_a.save()
    concurrency_acquire(organization=org_a)
    concurrency_acquire(organization=org_a)
    with pytest.raises(RateLimited) as excinfo:
        concurrency_acquire(organization=org_a)
    assert excinfo.value.retry_after == 1
    concurrency_release(organization_id=org_a.pk)
    concurrency_acquire(organization=org_a)
    org_a.refresh_from_db()
    assert org_a.jobs_in_flight == 2


def test_concurrency_release_never_goes_negative(org_a):
    concurrency_release(organization_id=org_a.pk)
    org_a.refresh_from_db()
    assert org_a.jobs_in_flight == 0


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_rate_limit_fixed_window(db, backend, request):
    request.getfixturevalue("use_redis" if backend == "redis" else "use_database_limits")
    key = f"test:{backend}:{os.getpid()}"
    results = [rate_limit_hit(key=key, limit=3, window_seconds=60, now=1_900_000_030.5) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert results[-1].retry_after == 50
    assert results[-1].reset_at == 1_900_000_080
    assert rate_limit_hit(key=key, limit=3, window_seconds=60, now=1_900_000_080).allowed


_WORKER = """
import django, os, sys
django.setup()
from tenants.limits import rate_limit_hit
key, limit, attempts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
allowed = sum(rate_limit_hit(key=key, limit=limit, window_seconds=3600).allowed for _ in range(attempts))
print(allowed)
"""


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["database", "redis"])
def test_rate_limit_holds_across_two_processes(backend, request):
    """Two OS processes share one limit of 25: together they get exactly 25 requests through."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "1", "PYTHONPATH": str(ROOT)}
    if backend == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    else:
        env.pop("REDIS_URL", None)
        env["DATABASE_URL"] = _database_url()
    key = f"two-procs:{backend}:{os.getpid()}:{request.node.name}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, key, "25", "20"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(int(o.strip()) for o in outputs) == 25
    assert settings.RATE_LIMIT_WINDOW_SECONDS == 60
