"""django-q2 entry points. Tasks load by id and call a service; the job row is the truth.

`run_job` only claims the job and hands it to this process's runner (see runner.py), so a worker
process keeps hundreds of upstream calls in flight instead of one. A duplicated or late task finds
the job already claimed or finished, and does nothing.
"""

import os

from django.conf import settings
from django_q.brokers import get_broker
from django_q.tasks import async_task

from generation.jobs import job_claim, job_reap
from generation.runner import get_runner
from generation.webhooks import webhook_deliveries_redrive, webhook_delivery_send

CAPACITY_WAIT_SECONDS = 20.0
WEBHOOK_SCHEDULE_NAME = "generation: re-drive due webhook deliveries"
_brokers: dict[int, object] = {}


def _broker():
    """One broker per process: async_task would otherwise build one (and a Redis client) per call."""
    pid = os.getpid()
    if pid not in _brokers:
        _brokers.clear()
        _brokers[pid] = get_broker()
    return _brokers[pid]


def enqueue_run_job(public_id: str) -> None:
    if settings.GENERATION_INLINE_DOORBELL:
        run_job(public_id)
        return
    # save=False: a success row per image would cost a write (and a prune) on the hot path.
    async_task(
        "generation.tasks.run_job", public_id, task_name=f"run-{public_id}", save=False, broker=_broker()
    )


def run_job(public_id: str) -> None:
    runner = get_runner()
    # Back-pressure: a full runner leaves the doorbell to other worker processes for a while.
    runner.wait_for_capacity(CAPACITY_WAIT_SECONDS)
    if job_claim(public_id=public_id, owner=runner.owner):
        runner.submit(public_id)


def reap_jobs() -> dict:
    return job_reap()


def enqueue_webhook_delivery(public_id: str) -> None:
    """Send from a worker (never the job runner's loop); the scheduled re-drive covers a lost task."""
    if settings.GENERATION_INLINE_DOORBELL:
        deliver_webhook(public_id)
        return
    async_task(
        "generation.tasks.deliver_webhook",
        public_id,
        task_name=f"webhook-{public_id}",
        save=False,
        broker=_broker(),
    )


def deliver_webhook(public_id: str) -> bool | None:
    return webhook_delivery_send(public_id=public_id)


def redrive_webhooks() -> dict:
    """Every minute: send deliveries that are due (retries, and first attempts whose task was lost)."""
    return webhook_deliveries_redrive()
