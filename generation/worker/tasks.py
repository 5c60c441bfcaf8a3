"""django-q2 entry points. Tasks load by id and call a service; the job row is the truth.

`run_job` only claims the job and hands it to this process's runner (see runner.py), so a worker
process keeps hundreds of upstream calls in flight instead of one. A duplicated or late task finds
the job already claimed or finished, and does nothing. Webhooks are sent by a small thread pool in
the process where the event happened, and re-driven by a one-minute schedule (see webhooks.py).
"""

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections
from django_q.brokers import get_broker
from django_q.tasks import async_task

from config.redis_client import redis_call
from generation.jobs.retention import retention_purge
from generation.jobs.services import job_claim, job_reap
from generation.webhooks.services import webhook_deliveries_due, webhook_delivery_send
from generation.worker.runner import cancel_channel, current_runner, doorbell_channel, get_runner

CAPACITY_WAIT_SECONDS = 20.0
WEBHOOK_SCHEDULE_NAME = "generation: re-drive due webhook deliveries"
REAP_SCHEDULE_NAME = "generation: reap lost jobs"
RETENTION_SCHEDULE_NAME = "generation: retention purge"
_brokers: dict[int, object] = {}
_sender: tuple[int, ThreadPoolExecutor] | None = None
_sender_lock = threading.Lock()
logger = logging.getLogger(__name__)


def _broker():
    """One broker per process: async_task would otherwise build one (and a Redis client) per call."""
    pid = os.getpid()
    if pid not in _brokers:
        _brokers.clear()
        _brokers[pid] = get_broker()
    return _brokers[pid]


def enqueue_run_job(*, public_id: str) -> None:
    """`events.job_queued` subscriber: ring a doorbell for the job. With Redis, a PUBLISH every
    runner hears on its own event loop; without, a django-q2 task (the ORM broker). Either is only
    a hint: runners also claim due jobs from the database on their own poll, so a lost doorbell,
    a Redis outage or a wedged django-q2 pool delays a job by at most one poll, and a doorbell that
    fails never fails the request that committed the job."""
    if settings.GENERATION_INLINE_DOORBELL:
        run_job(public_id)
        return
    if settings.REDIS_URL:
        redis_call("doorbell", lambda client: client.publish(doorbell_channel(), public_id), lambda: 0)
        return
    try:
        # save=False: a success row per image would cost a write (and a prune) on the hot path.
        async_task(
            "generation.worker.tasks.run_job",
            public_id,
            task_name=f"run-{public_id}",
            save=False,
            broker=_broker(),
        )
    except Exception:  # the runners' poll claims the job anyway
        logger.warning("doorbell for %s not rung; the runners' poll will claim it", public_id, exc_info=True)


def run_job(public_id: str) -> None:
    runner = get_runner()
    # Back-pressure: a full runner (jobs, or image bytes in flight) leaves the doorbell to other
    # worker processes for a while; still full, a polling runner leaves the job to its own poll
    # (the job stays due and is claimed once there is room), a non-polling one takes it anyway.
    if not runner.wait_for_capacity(CAPACITY_WAIT_SECONDS) and runner.poll:
        return
    if job_claim(public_id=public_id, owner=runner.owner):
        runner.submit(public_id)


def ring_cancel(*, public_id: str) -> None:
    """`events.job_cancel_requested` subscriber: tell the runner holding the job to abort its
    upstream call now (this process's runner directly, every other one through Redis). Without
    Redis the runner's one-second check finds the cancel."""
    runner = current_runner()
    if runner is not None:
        runner.cancel(public_id)
    redis_call("cancel", lambda client: client.publish(cancel_channel(), public_id), lambda: 0)


def purge_retention() -> dict:
    """Daily (django-q2 schedule): see generation/jobs/retention.py."""
    return retention_purge()


def reap_jobs() -> dict:
    """Every minute (django-q2 schedule) besides every runner's own timer: safe concurrently."""
    return job_reap()


def _webhook_sender() -> ThreadPoolExecutor:
    """This process's webhook sender threads. A send waits on the tenant's server (up to
    WEBHOOK_TIMEOUT_SECONDS), so it runs here rather than as a django-q2 task: a slow receiver
    must hold neither the worker's task loop (job doorbells) nor the job runner's event loop."""
    global _sender
    if _sender is None or _sender[0] != os.getpid():
        with _sender_lock:
            if _sender is None or _sender[0] != os.getpid():
                pool = ThreadPoolExecutor(
                    max_workers=settings.WEBHOOK_SENDER_THREADS, thread_name_prefix="webhook-sender"
                )
                _sender = (os.getpid(), pool)
    return _sender[1]


_queued = 0
_queued_lock = threading.Lock()


def _submit_send(public_id: str) -> bool:
    """Queue a send on this process's sender threads, unless WEBHOOK_QUEUE_MAX are already queued
    (then the delivery stays pending and due: the one-minute re-drive sends it)."""
    global _queued
    with _queued_lock:
        if _queued >= settings.WEBHOOK_QUEUE_MAX:
            return False
        _queued += 1
    _webhook_sender().submit(_send_in_thread, public_id)
    return True


def _send_in_thread(public_id: str) -> None:
    global _queued
    close_old_connections()
    try:
        webhook_delivery_send(public_id=public_id)
    except Exception:  # the row stays pending; the scheduled re-drive retries it
        logger.exception("webhook %s: send failed", public_id)
    finally:
        with _queued_lock:
            _queued -= 1
        close_old_connections()


def enqueue_webhook_delivery(*, public_id: str) -> None:
    """Called after commit where the event happened (usually the worker's runner). If this process
    dies first, the delivery is still pending and due: the scheduled re-drive sends it."""
    if settings.GENERATION_INLINE_DOORBELL:
        webhook_delivery_send(public_id=public_id)
        return
    _submit_send(public_id)


def redrive_webhooks() -> int:
    """Every minute (django-q2 schedule): hand due deliveries to this worker's sender threads and
    return at once. A delivery already being sent elsewhere is skipped at claim time."""
    due = webhook_deliveries_due()
    return sum(1 for public_id in due if _submit_send(public_id))
