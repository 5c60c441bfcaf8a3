"""Retention: old finished jobs go with their images and files (usage records stay), old route
statistics go, orphaned files go once old enough; nothing recent or still referenced is touched."""

import os
import time
from datetime import timedelta
from decimal import Decimal

import time_machine
from django.core.files.storage import default_storage
from django.utils import timezone

from billing.models import UsageRecord
from generation.engine.storage import image_store
from generation.jobs.retention import retention_purge
from generation.jobs.services import job_claim, job_succeed
from generation.models import Image, Job, Route, RouteStatsMinute
from generation.tests.test_jobs import image, submit
from generation.tests.test_reliability import _png


def _finished_job(alice, prompt):
    job, _ = submit(alice, prompt=prompt)
    assert job_claim(public_id=job.public_id, owner="w1")
    job.refresh_from_db()
    delivered = image(0)
    delivered.public_id = f"img_{prompt}"
    delivered.storage_path = image_store(
        path_prefix=f"images/ret/{job.public_id}",
        image_public_id=delivered.public_id,
        data=_png(),
        mime_type="image/png",
    )
    job_succeed(
        job=job, owner="w1", images=[delivered], fallback_reason="", attempts_log=[], upstream_cost=Decimal(0)
    )
    return job, delivered.storage_path


def test_retention_purges_old_jobs_stats_and_orphans_only(alice, settings):
    settings.RETENTION_JOB_DAYS = 30
    settings.RETENTION_ROUTE_STATS_DAYS = 7
    settings.RETENTION_ORPHAN_FILE_HOURS = 1
    with time_machine.travel(timezone.now() - timedelta(days=40)):
        old_job, old_path = _finished_job(alice, "old")
    new_job, new_path = _finished_job(alice, "new")
    orphan = image_store(
        path_prefix="images/ret/orphan", image_public_id="img_orphan", data=_png(), mime_type="image/png"
    )
    fresh_orphan = image_store(
        path_prefix="images/ret/orphan", image_public_id="img_fresh", data=_png(), mime_type="image/png"
    )
    two_hours_ago = time.time() - 7200
    os.utime(default_storage.path(orphan), (two_hours_ago, two_hours_ago))
    route = Route.objects.first()
    RouteStatsMinute.objects.create(route=route, minute=timezone.now() - timedelta(days=8), calls=1)
    RouteStatsMinute.objects.create(route=route, minute=timezone.now(), calls=1)

    counts = retention_purge()

    assert counts["jobs"] == 1 and counts["route_stats"] == 1
    assert counts["orphaned_files"] >= 1  # older runs may have left orphans in this test media too
    assert not Job.objects.filter(pk=old_job.pk).exists() and not default_storage.exists(old_path)
    assert Job.objects.filter(pk=new_job.pk).exists() and default_storage.exists(new_path)
    assert Image.objects.filter(job=new_job).count() == 1
    assert not default_storage.exists(orphan) and default_storage.exists(fresh_orphan)
    assert UsageRecord.objects.filter(job_public_id=old_job.public_id).count() == 1  # billing stays
    assert RouteStatsMinute.objects.count() == 1
