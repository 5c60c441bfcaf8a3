"""The per-process job runner: hundreds of upstream calls in flight from one worker process.

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

from generation.batches.services import batch_feed_all
from generation.engine.catalog_sync import route_model_gone
from generation.engine.health import HealthBook
from generation.engine.router import ClientPool, Outcome, Router
from generation.engine.upstream_limits import UpstreamLimiter
from generation.jobs.services import (
    job_complete,
    job_fail,
    job_load,
    job_plan,
    job_provider_request,
    job_reap,
    job_renew_leases,
)
from generation.models import Job, RouteStatsMinute
from tenants.errors import ImagegateError

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
STATS_FLUSH_SECONDS = 10.0


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
        f"INSERT INTO {table} (route_id, minute, calls, errors, images, latency_ms_sum) "
        "VALUES (%s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (route_id, minute) DO UPDATE SET calls = {table}.calls + excluded.calls, "
        f"errors = {table}.errors + excluded.errors, images = {table}.images + excluded.images, "
        f"latency_ms_sum = {table}.latency_ms_sum + excluded.latency_ms_sum"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        for route_id, (calls, errors, images, latency) in pending.items():
            cursor.execute(sql, [route_id, minute, calls, errors, images, latency])


class JobRunner:
    def __init__(self) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pid = os.getpid()
        self.health = HealthBook()
        self.inflight: dict[str, asyncio.Task] = {}
        self.accepting = True
        self._db_pool = ThreadPoolExecutor(
            max_workers=settings.GENERATION_RUNNER_DB_THREADS, thread_name_prefix="runner-db"
        )
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
            self._stopped.set()

    def _close_db_connections(self) -> None:
        """Close the connection each pool thread holds (a barrier puts one task on every thread)."""
        size = self._db_pool._max_workers
        barrier = threading.Barrier(size, timeout=5)

        def close() -> None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            connections.close_all()

        for future in [self._db_pool.submit(close) for _ in range(size)]:
            future.result()

    def submit(self, public_id: str) -> None:
        """Called from the worker's task thread after a successful claim."""
        self._loop.call_soon_threadsafe(self._start_job, public_id)

    def has_capacity(self) -> bool:
        return self.accepting and len(self.inflight) < settings.GENERATION_RUNNER_MAX_JOBS

    def wait_for_capacity(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.has_capacity() and time.monotonic() < deadline:
            time.sleep(0.05)

    def reset_health(self) -> None:
        """Forget route health (tests; operators after fixing a route: circuits close at once)."""
        self.health = self.router.health = HealthBook()

    def stop(self, timeout: float = DRAIN_SECONDS) -> None:
        self.accepting = False
        self._loop.call_soon_threadsafe(lambda: None)
        self._stopped.wait(timeout + 5)

    # --- event loop side --------------------------------------------------------------------
    async def _setup(self) -> None:
        self.clients = ClientPool()
        self.limiter = UpstreamLimiter()
        self.router = Router(
            clients=self.clients, health=self.health, limiter=self.limiter, on_model_gone=self._model_gone
        )

    async def _teardown(self) -> None:
        await self.clients.aclose()
        await self.limiter.close()

    async def db(self, fn, /, *args, **kwargs):
        return await self._loop.run_in_executor(self._db_pool, partial(_with_db, fn, *args, **kwargs))

    def _start_job(self, public_id: str) -> None:
        if public_id in self.inflight:
            return
        task = self._loop.create_task(self._run(public_id), name=public_id)
        self.inflight[public_id] = task
        task.add_done_callback(lambda _: self.inflight.pop(public_id, None))

    async def _supervise(self) -> None:
        """Renew leases, flush stats and reap until the worker's main thread ends, then drain."""
        lease_every = max(1.0, settings.GENERATION_LEASE_SECONDS / 3)
        next_lease = next_stats = time.monotonic()
        next_reap = time.monotonic() + random.uniform(0, settings.GENERATION_REAPER_INTERVAL_SECONDS)
        next_feed = time.monotonic()
        main = threading.main_thread()
        while main.is_alive() and self.accepting:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            try:
                if now >= next_lease:
                    next_lease = now + lease_every
                    await self._renew_leases()
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
            except Exception:  # noqa: BLE001 - housekeeping must never stop the runner
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
        ids = list(self.inflight)
        if not ids:
            return
        alive = await self.db(job_renew_leases, public_ids=ids, owner=self.owner)
        for public_id in ids:
            if public_id not in alive and public_id in self.inflight:
                self.inflight[public_id].cancel()  # canceled by the customer, or taken over

    async def _run(self, public_id: str) -> None:
        job = None
        try:
            job = await self.db(job_load, public_id=public_id)
            try:
                plan = await self.db(job_plan, job=job)
                request = await self.db(job_provider_request, job=job)
            except ImagegateError as exc:
                await self.db(job_fail, job=job, owner=self.owner, code=exc.code, message=exc.message)
                return
            expires = job.created_at + timedelta(seconds=settings.GENERATION_JOB_DEADLINE_SECONDS)
            deadline = time.monotonic() + max(1.0, (expires - timezone.now()).total_seconds())
            outcome = await self.router.execute(plan, request, deadline=deadline)
            await self._finish(job, outcome)
        except asyncio.CancelledError:
            logger.info("job %s stopped: no longer ours", public_id)
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

    async def _finish(self, job: Job, outcome: Outcome) -> None:
        await self.db(job_complete, job=job, owner=self.owner, outcome=outcome)


_runner: JobRunner | None = None
_runner_lock = threading.Lock()


def get_runner() -> JobRunner:
    """The runner of this process, started on first use (and again after a fork)."""
    global _runner
    if _runner is None or _runner.pid != os.getpid() or _runner._stopped.is_set():
        with _runner_lock:
            if _runner is None or _runner.pid != os.getpid() or _runner._stopped.is_set():
                _runner = JobRunner()
    return _runner
