"""Retention: what is kept how long (settings RETENTION_*; a daily django-q2 schedule runs
`retention_purge`, and it is safe to run anywhere, any number of times).

- Finished jobs (and their image rows and files) older than RETENTION_JOB_DAYS are deleted. Usage
  records are billing records, not job data: they stay (they carry the job and image ids as text).
- Per-minute route statistics older than RETENTION_ROUTE_STATS_DAYS are deleted.
- Orphaned image files, stored by a worker that died (or lost its lease) before recording them, are
  deleted once older than RETENTION_ORPHAN_FILE_HOURS and referenced by no image row.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from generation.engine.storage import image_delete
from generation.models import Image, Job, RouteStatsMinute

logger = logging.getLogger(__name__)

BATCH = 500


def _purge_jobs(now) -> int:
    cutoff = now - timedelta(days=settings.RETENTION_JOB_DAYS)
    deleted = 0
    while True:
        pks = list(
            Job.objects.filter(status__in=Job.TERMINAL, finished_at__lt=cutoff).values_list("pk", flat=True)[
                :BATCH
            ]
        )
        if not pks:
            return deleted
        paths = list(
            Image.objects.filter(job_id__in=pks)
            .exclude(storage_path="")
            .values_list("storage_path", flat=True)
        )
        Job.objects.filter(pk__in=pks).delete()  # image rows cascade
        for path in paths:  # after the rows: a crash here leaves orphans, which the next run removes
            image_delete(path)
        deleted += len(pks)


def _walk(directory: str, depth: int = 0):
    if depth > 4:
        return
    try:
        directories, files = default_storage.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return
    for name in files:
        yield f"{directory}/{name}"
    for name in directories:
        yield from _walk(f"{directory}/{name}", depth + 1)


def _purge_orphans(now, limit: int) -> int:
    cutoff = now - timedelta(hours=settings.RETENTION_ORPHAN_FILE_HOURS)
    removed = 0
    candidates: list[str] = []
    for path in _walk("images"):
        try:
            if default_storage.get_modified_time(path) >= cutoff:
                continue
        except (FileNotFoundError, OSError, NotImplementedError):
            continue
        candidates.append(path)
        if len(candidates) >= limit:
            break
    recorded = set(Image.objects.filter(storage_path__in=candidates).values_list("storage_path", flat=True))
    for path in candidates:
        if path not in recorded:
            image_delete(path)
            removed += 1
    return removed


def retention_purge(*, now=None, orphan_limit: int = 5000) -> dict[str, int]:
    now = now or timezone.now()
    counts = {
        "jobs": _purge_jobs(now),
        "route_stats": RouteStatsMinute.objects.filter(
            minute__lt=now - timedelta(days=settings.RETENTION_ROUTE_STATS_DAYS)
        ).delete()[0],
        "orphaned_files": _purge_orphans(now, orphan_limit),
    }
    logger.info("retention: %s", counts)
    return counts
