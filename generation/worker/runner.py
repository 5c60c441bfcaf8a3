"""The per-process job runner: hundreds of upstream calls in flight from one worker process.

It finds work on its own: every GENERATION_RUNNER_POLL_SECONDS, and at once when the Redis
doorbell rings (async pub/sub on this loop), it claims due jobs from the database (`job_claim_due`,
SKIP LOCKED) up to its free capacity. So no broker message, and no django-q2 worker pool (which a
SIGKILLed idle worker can wedge, django-q2 #23), is needed for a job to run; a django-q2 task is
just one more doorbell. Leases are renewed, cancels noticed and the heartbeat written on a thread
and database connection of their own (never queued behind transcoding or storage); each attempt
has a hard wall-clock limit, past which its lease is no longer renewed.

A django-q2 worker process runs one task at a time, and an image call waits 1.5-15 s upstream, so
a task that made the call itself would cap us at one image call per process. Instead the task only
claims the job (a conditional UPDATE) and hands it to this runner: one asyncio event loop on its own
thread, with one pooled httpx.AsyncClient, executing every claimed job concurrently. The ORM is
synchronous, so database work runs on a small thread pool. The runner also renews the leases of
the jobs it holds (a job it stops renewing is re-run elsewhere), flushes route statistics, and runs
the reaper. When its worker process is asked to stop, it stops taking jobs and finishes the ones
it holds (bounded); anything cut short is re-run by another worker once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.utils import timezone

from config.redis_client import REDIS_ERRORS
from generation.batches.services import batch_feed_all
from generation.engine.catalog_sync import route_model_gone
from generation.engine.health import HealthBook
from generation.engine.router import ClientPool, Outcome, Router
from generation.engine.upstream_limits import UpstreamLimiter
from generation.jobs.liveness import heartbeat_remove, heartbeat_write
from generation.jobs.services import (
    job_cancel_settle,
    job_complete,
    job_fail,
    job_load,
    job_prepare,
    job_reap,
    job_renew_leases,
    jobs_claim_due,
    jobs_no_longer_held,
)
from generation.models import Job, RouteStatsMinute
from tenants.errors import ImagegateError
from tenants.selectors import organization_limits

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
STATS_FLUSH_SECONDS = 10.0
CANCEL_CHECK_SECONDS = 1.0
HEARTBEAT_SECONDS = 2.0
SHARE_HEALTH_SECONDS = 1.0
CLAIM_BATCH = 32


def doorbell_channel() -> str:
    return f"{settings.REDIS_PREFIX}:jobs:doorbell"


def cancel_channel() -> str:
    return f"{settings.REDIS_PREFIX}:jobs:cancel"


def _with_db(fn, *args, **kwargs):
    """Run ORM code on a pool thread; reconnect once if the persistent connection went away."""
    try:
        return fn(*args, **kwargs)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return fn(*args, **kwargs)


def _flush_route_stats(pending: dict[int, list[int]]) -> None:
    minute = timezone.now().replace(second=0, microsecond=0)
    table = RouteStatsMinute._meta.db_table
    sql = (
        f"INSERT INTO {table} (route_id, minute, calls, errors, images, latency_ms_sum) "  # noqa: S608 - our table
        "VALUES (%s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (route_id, minute) DO UPDATE SET calls = {table}.calls + excluded.calls, "
        f"errors = {table}.errors + excluded.errors, images = {table}.images + excluded.images, "
        f"latency_ms_sum = {table}.latency_ms_sum + excluded.latency_ms_sum"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        for route_id, (calls, errors, images, latency) in pending.items():
            cursor.execute(sql, [route_id, minute, calls, errors, images, latency])


class JobRunner:
    def __init__(self, *, poll: bool = False) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pid = os.getpid()
        self.poll = poll  # claim due jobs on its own (worker processes; not the test process)
        self.health = HealthBook()
        self.inflight: dict[str, asyncio.Task] = {}
        self._started: dict[str, float] = {}  # public id -> monotonic start (wall-clock limit)
        self._finishing: set[str] = set()  # recording its outcome: a cancel no longer interrupts it
        self.accepting = True
        self.claimed_total = 0
        self.finished_total = 0
        self.last_claim_at = 0.0  # unix time
        # Decoded upstream image bytes held between the answer and the finished transaction
        # (GENERATION_INFLIGHT_IMAGE_BYTES_MAX); changed on the loop thread only.
        self.image_bytes = 0
        self.image_bytes_peak = 0
        self.claims_paused_total = 0  # claim passes skipped because the image budget was spent
        self._capacity = threading.Condition()
        self._db_pool = ThreadPoolExecutor(
            max_workers=settings.GENERATION_RUNNER_DB_THREADS, thread_name_prefix="runner-db"
        )
        # Leases, cancels and the heartbeat: one thread, its own DB connection, never behind a job.
        self._lease_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-lease")
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        # Not a daemon: when the worker process exits, Python waits for the drain to finish.
        self._thread = threading.Thread(target=self._main, name="job-runner", daemon=False)
        self._thread.start()
        self._ready.wait()

    # --- thread entry points ----------------------------------------------------------------
    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._setup())
        self._ready.set()
        try:
            self._loop.run_until_complete(self._supervise())
        finally:
            self._loop.run_until_complete(self._teardown())
            self._loop.close()
            self._close_db_connections()
            self._db_pool.shutdown(wait=True)
            self._lease_pool.submit(connections.close_all).result()
            self._lease_pool.shutdown(wait=True)
            heartbeat_remove(self.owner)
            self._stopped.set()

    def _close_db_connections(self) -> None:
        """Close the connection each pool thread holds (a barrier puts one task on every thread)."""
        size = self._db_pool._max_workers
        barrier = threading.Barrier(size, timeout=5)

        def close() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
            connections.close_all()

        for future in [self._db_pool.submit(close) for _ in range(size)]:
            future.result()

    def submit(self, public_id: str) -> None:
        """Called from the worker's task thread after a successful claim."""
        self._loop.call_soon_threadsafe(self._start_job, public_id)

    def cancel(self, public_id: str) -> None:
        """From any thread: abort the job's upstream call if this runner holds it."""
        self._loop.call_soon_threadsafe(self._cancel_local, public_id)

    def ring(self) -> None:
        """A doorbell from this process (a django-q2 task): claim due work now."""
        self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        if hasattr(self, "_wake"):
            self._wake.set()

    def has_capacity(self) -> bool:
        return (
            self.accepting
            and len(self.inflight) < settings.GENERATION_RUNNER_MAX_JOBS
            and not self.images_over_budget()
        )

    def images_over_budget(self) -> bool:
        limit = settings.GENERATION_INFLIGHT_IMAGE_BYTES_MAX
        return bool(limit) and self.image_bytes >= limit

    def wait_for_capacity(self, timeout: float) -> bool:
        """Block the calling (task) thread until a job slot is free, woken when a job ends or
        image bytes are released. False if there is still no room after `timeout`."""
        with self._capacity:
            return self._capacity.wait_for(self.has_capacity, timeout)

    def hold_image_bytes(self, size: int) -> int:
        """On the loop thread: `size` decoded image bytes are now held (until released)."""
        self.image_bytes += size
        self.image_bytes_peak = max(self.image_bytes_peak, self.image_bytes)
        return size

    def release_image_bytes(self, size: int) -> None:
        """On the loop thread: bytes handed on (stored, or dropped with a finished outcome); a
        runner that stopped claiming over its budget claims again at once."""
        if not size:
            return
        was_over = self.images_over_budget()
        self.image_bytes -= size
        if was_over and not self.images_over_budget():
            with self._capacity:
                self._capacity.notify_all()
            self._wake.set()

    def reset_health(self) -> None:
        """Forget route health (tests; operators after fixing a route: circuits close at once)."""
        self.health = self.router.health = HealthBook()

    def stop(self, timeout: float = DRAIN_SECONDS) -> None:
        self.accepting = False
        self._loop.call_soon_threadsafe(lambda: None)
        self._stopped.wait(timeout + 5)

    # --- event loop side --------------------------------------------------------------------
    async def _setup(self) -> None:
        self._wake = asyncio.Event()
        self.clients = ClientPool()
        self.limiter = UpstreamLimiter()
        self.router = Router(
            clients=self.clients, health=self.health, limiter=self.limiter, on_model_gone=self._model_gone
        )
        self._background: list[asyncio.Task] = []
        self._aredis = None
        if settings.REDIS_URL:
            import redis.asyncio as aioredis

            self._aredis = aioredis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
            )
        if self.poll:
            self._background.append(self._loop.create_task(self._claim_loop(), name="claim-loop"))
            if settings.REDIS_URL:
                self._background.append(self._loop.create_task(self._listen(), name="doorbell"))

    async def _teardown(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.clients.aclose()
        await self.limiter.close()
        if self._aredis is not None:
            await self._aredis.aclose()

    async def db(self, fn, /, *args, **kwargs):
        return await self._loop.run_in_executor(self._db_pool, partial(_with_db, fn, *args, **kwargs))

    async def lease_db(self, fn, /, *args, **kwargs):
        return await self._loop.run_in_executor(self._lease_pool, partial(_with_db, fn, *args, **kwargs))

    def _start_job(self, public_id: str, job: Job | None = None) -> None:
        if public_id in self.inflight:
            return
        task = self._loop.create_task(self._run(public_id, job), name=public_id)
        self.inflight[public_id] = task
        self._started[public_id] = time.monotonic()
        task.add_done_callback(lambda _: self._job_done(public_id))

    def _job_done(self, public_id: str) -> None:
        self.inflight.pop(public_id, None)
        self._finishing.discard(public_id)
        self._started.pop(public_id, None)
        self.finished_total += 1
        with self._capacity:
            self._capacity.notify_all()
        self._wake.set()  # a slot is free: claim more if jobs are waiting

    # --- finding work -----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        """Claim due jobs up to the free capacity, on every doorbell and at least every poll."""
        while self.accepting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=settings.GENERATION_RUNNER_POLL_SECONDS)
            self._wake.clear()
            while self.accepting:
                free = settings.GENERATION_RUNNER_MAX_JOBS - len(self.inflight)
                if free <= 0:
                    break
                if self.images_over_budget():  # claimed again when bytes are released
                    self.claims_paused_total += 1
                    break
                limit = min(free, CLAIM_BATCH)
                try:
                    claimed = await self.lease_db(jobs_claim_due, owner=self.owner, limit=limit)
                except Exception:  # the database is down: try again next poll
                    logger.warning("runner: claiming due jobs failed", exc_info=True)
                    break
                if claimed:
                    self.claimed_total += len(claimed)
                    self.last_claim_at = time.time()
                for job in claimed:  # loaded by the claim: no job_load per job
                    self._start_job(job.public_id, job)
                if len(claimed) < limit:
                    break

    async def _listen(self) -> None:
        """The Redis doorbell and cancel channels, with async Redis on this loop (a Redis outage
        never blocks a job: the poll goes on, and this reconnects with backoff)."""
        import redis.asyncio as aioredis

        backoff = 0.2
        while self.accepting:
            client = aioredis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=None,
                socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
            )
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(doorbell_channel(), cancel_channel())
                backoff = 0.2
                self._wake.set()  # anything rung while we were away
                while self.accepting:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["channel"].decode() == cancel_channel():
                        self._cancel_local(message["data"].decode())
                    else:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                logger.warning("runner doorbell: Redis unavailable (%s); polling the database", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):  # the connection is already gone
                    await client.aclose()

    def _cancel_local(self, public_id: str) -> None:
        task = self.inflight.get(public_id)
        if task is not None and public_id not in self._finishing:
            logger.info("job %s canceled by the customer: aborting its upstream call", public_id)
            task.cancel()

    async def _supervise(self) -> None:
        """Renew leases, flush stats and reap until the worker's main thread ends, then drain."""
        lease_every = max(1.0, settings.GENERATION_LEASE_SECONDS / 3)
        next_lease = next_stats = next_cancel = next_beat = next_share = time.monotonic()
        next_reap = time.monotonic() + random.uniform(0, settings.GENERATION_REAPER_INTERVAL_SECONDS)
        next_feed = time.monotonic()
        main = threading.main_thread()
        while main.is_alive() and self.accepting:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    _heartbeat_write(self)
                if now >= next_share and self._aredis is not None:
                    next_share = now + SHARE_HEALTH_SECONDS
                    try:
                        await self.health.share(self._aredis)
                    except REDIS_ERRORS:  # each process keeps its own book until Redis is back
                        next_share = now + settings.REDIS_RETRY_SECONDS
                if now >= next_lease:
                    next_lease = next_cancel = now + lease_every
                    await self._renew_leases()
                elif now >= next_cancel:
                    next_cancel = now + CANCEL_CHECK_SECONDS
                    await self._check_cancels()
                if now >= next_stats:
                    next_stats = now + STATS_FLUSH_SECONDS
                    pending = self.health.drain_pending()
                    if pending:
                        await self.db(_flush_route_stats, pending)
                if now >= next_reap:
                    next_reap = now + settings.GENERATION_REAPER_INTERVAL_SECONDS
                    await self.db(job_reap)
                if now >= next_feed:  # batches: top up, and re-drive any whose feeder died
                    next_feed = now + settings.BATCH_FEED_INTERVAL_SECONDS
                    await self.db(batch_feed_all)
            except Exception:  # housekeeping must never stop the runner
                logger.exception("runner housekeeping failed")
        self.accepting = False
        if self.inflight:
            logger.info("runner draining %d job(s)", len(self.inflight))
            deadline = time.monotonic() + DRAIN_SECONDS
            while self.inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                if time.monotonic() >= next_lease:
                    next_lease = time.monotonic() + lease_every
                    await self._renew_leases()

    async def _model_gone(self, route, error) -> None:
        """The router met a 404 "model not found": disable the route in the database and alert."""
        await self.db(
            route_model_gone, account_id=route.account_id, model_id=route.model_id, message=str(error)
        )

    async def _renew_leases(self) -> None:
        """Renew on the lease thread. An attempt past its wall-clock limit (hung on a call that
        never returns) is not renewed and is cancelled: its lease expires and the job is re-run."""
        now = time.monotonic()
        ids = []
        for public_id, started in list(self._started.items()):
            if now - started > settings.GENERATION_JOB_WALL_SECONDS:
                task = self.inflight.get(public_id)
                if task is not None and public_id not in self._finishing:
                    logger.error("job %s exceeded its wall-clock limit; giving it up", public_id)
                    task.cancel()
            else:
                ids.append(public_id)
        if not ids:
            return
        alive = await self.lease_db(job_renew_leases, public_ids=ids, owner=self.owner)
        for public_id in ids:
            if public_id not in alive:
                self._cancel_local(public_id)  # canceled by the customer, or taken over

    async def _check_cancels(self) -> None:
        """Between renewals, once a second: a cancel whose Redis message was lost still lands."""
        ids = list(self.inflight)
        if not ids:
            return
        for public_id in await self.lease_db(jobs_no_longer_held, public_ids=ids, owner=self.owner):
            self._cancel_local(public_id)

    async def _run(self, public_id: str, claimed: Job | None = None) -> None:
        job = None
        outcome = Outcome()
        held = 0  # image bytes this job holds against the process's budget
        try:
            job = claimed or await self.db(job_load, public_id=public_id)
            try:
                plan, request = await self.db(job_prepare, job=job)
            except ImagegateError as exc:
                if not await self.db(job_fail, job=job, owner=self.owner, code=exc.code, message=exc.message):
                    await self.db(job_cancel_settle, job=job, owner=self.owner)  # canceled meanwhile
                return
            expires = job.created_at + timedelta(seconds=settings.GENERATION_JOB_DEADLINE_SECONDS)
            deadline = time.monotonic() + max(1.0, (expires - timezone.now()).total_seconds())
            weight = await self.db(_fair_weight, job)
            await self.router.execute(plan, request, deadline=deadline, outcome=outcome, weight=weight)
            held = self.hold_image_bytes(_image_bytes(outcome))
            await self._finish(job, outcome)
        except asyncio.CancelledError:
            logger.info("job %s stopped: no longer ours", public_id)
            if job is not None:
                held = held or self.hold_image_bytes(_image_bytes(outcome))
                await self._stopped_early(job, outcome)
        except Exception:
            logger.exception("job %s crashed", public_id)
            if job is not None:
                await self.db(
                    job_fail,
                    job=job,
                    owner=self.owner,
                    code="internal_error",
                    message="An internal error occurred.",
                )
        finally:
            self.release_image_bytes(held)

    async def _finish(self, job: Job, outcome: Outcome) -> None:
        """Record the outcome; a cancel arriving now no longer interrupts (job_succeed decides)."""
        self._finishing.add(job.public_id)
        try:
            if not await self.db(job_complete, job=job, owner=self.owner, outcome=outcome):
                # Not recorded: canceled meanwhile (give back the slot we kept), or taken over.
                await self.db(job_cancel_settle, job=job, owner=self.owner)
        finally:
            self._finishing.discard(job.public_id)

    async def _stopped_early(self, job: Job, outcome: Outcome) -> None:
        """Canceled (by the customer, the wall clock, or a takeover): the upstream calls still in
        flight were aborted. Images already delivered are recorded (and billed) if the job is still
        ours; then the slot and reservation a canceled job kept are given back."""
        try:
            if outcome.images:
                await self.db(job_complete, job=job, owner=self.owner, outcome=outcome)
            await self.db(job_cancel_settle, job=job, owner=self.owner)
        except Exception:  # the reaper settles it once the lease expires
            logger.exception("job %s: settling after cancel failed", job.public_id)


def _image_bytes(outcome: Outcome) -> int:
    return sum(len(routed.image.data or b"") for routed in outcome.images)


def _fair_weight(job: Job) -> int:
    """The tenant's share of a contended provider account: its plan's concurrency limit (the
    organization and plan are already loaded by job_plan: no query)."""
    return max(1, organization_limits(organization=job.organization).max_concurrent_jobs)


_runner: JobRunner | None = None
_runner_lock = threading.Lock()


def current_runner() -> JobRunner | None:
    """This process's runner if it has one (never starts one)."""
    runner = _runner
    if runner is None or runner.pid != os.getpid() or runner._stopped.is_set():
        return None
    return runner


def get_runner(*, poll: bool = False) -> JobRunner:
    """The runner of this process, started on first use (and again after a fork). Worker processes
    start it with `poll=True` at spawn: it then claims due jobs by itself."""
    global _runner
    if _runner is None or _runner.pid != os.getpid() or _runner._stopped.is_set():
        with _runner_lock:
            if _runner is None or _runner.pid != os.getpid() or _runner._stopped.is_set():
                _runner = JobRunner(poll=poll)
    return _runner


def _heartbeat_write(runner: JobRunner) -> None:
    if runner.poll:
        heartbeat_write(
            runner.owner,
            {
                "pid": runner.pid,
                "inflight": len(runner.inflight),
                "claimed_total": runner.claimed_total,
                "finished_total": runner.finished_total,
                "last_claim_at": runner.last_claim_at,
                "image_bytes": runner.image_bytes,
                "claims_paused": runner.images_over_budget(),
            },
        )
