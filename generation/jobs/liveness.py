"""Is the worker tree on this machine making progress? Read by `manage.py worker_health`, the
liveness probe of the k8s and systemd worker units, and by /metrics.

Each runner writes a heartbeat file every two seconds (`heartbeat_write`, from the runner): files,
not rows or keys, because liveness is a per-machine question that must be answerable while Redis
or the database is down. The tree is alive when some
runner here beat recently, and, if a claimable job has waited longer than the threshold, some runner
here claimed work recently or is full. A database outage does not fail liveness (restarting the
workers would not bring the database back); a wedged or dead runner does.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.db.models import Min, Q
from django.utils import timezone

from generation.models import Job


@dataclass(frozen=True)
class WorkerHealth:
    ok: bool
    reason: str
    runners: int
    inflight: int
    oldest_due_seconds: float | None


def _heartbeat_path(owner: str):
    return settings.GENERATION_HEARTBEAT_DIR / (owner.replace(":", "_").replace("/", "_") + ".json")


def heartbeat_write(owner: str, data: dict) -> None:
    settings.GENERATION_HEARTBEAT_DIR.mkdir(parents=True, exist_ok=True)
    path = _heartbeat_path(owner)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"owner": owner, "beat_at": time.time(), **data}))
    os.replace(tmp, path)


def heartbeat_remove(owner: str) -> None:
    with contextlib.suppress(OSError):
        _heartbeat_path(owner).unlink()


def heartbeats() -> list[dict]:
    beats: list[dict] = []
    directory = settings.GENERATION_HEARTBEAT_DIR
    if not directory.is_dir():
        return beats
    for path in directory.glob("*.json"):
        try:
            beats.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            continue
    return beats


def oldest_due_job_age(*, now=None) -> float | None:
    """Seconds the oldest claimable job (queued, or running on an expired lease) has waited."""
    now = now or timezone.now()
    due = Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, lease_expires_at__lt=now)
    oldest = Job.objects.filter(due).aggregate(at=Min("enqueued_at"))["at"]
    return None if oldest is None else max(0.0, (now - oldest).total_seconds())


def worker_health(*, now: float | None = None) -> WorkerHealth:
    now = time.time() if now is None else now
    stale = settings.WORKER_HEALTH_STALE_SECONDS
    beats = [b for b in heartbeats() if now - b.get("beat_at", 0) <= stale]
    inflight = sum(b.get("inflight", 0) for b in beats)
    if not beats:
        return WorkerHealth(False, f"no runner heartbeat in the last {stale} s", 0, 0, None)
    try:
        age = oldest_due_job_age(now=timezone.now())
    except Exception:  # noqa: BLE001 - database down: not the workers' fault, stay alive
        return WorkerHealth(True, "database unreachable; runners beating", len(beats), inflight, None)
    if age is not None and age > stale:
        recent = max((b.get("last_claim_at", 0) for b in beats), default=0)
        full = any(
            b.get("inflight", 0) >= settings.GENERATION_RUNNER_MAX_JOBS or b.get("claims_paused")
            for b in beats
        )
        if now - recent > stale and not full:
            return WorkerHealth(
                False,
                f"a job has waited {age:.0f} s and no runner claimed anything for {stale} s",
                len(beats),
                inflight,
                age,
            )
    return WorkerHealth(True, "ok", len(beats), inflight, age)
