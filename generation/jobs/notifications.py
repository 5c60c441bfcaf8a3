"""Telling a waiting request, at once, that its job finished, and what it finished with.

With Redis, the worker PUBLISHes `<job id> <job document as JSON>` on one channel after the
finishing transaction commits; each web process runs one listener thread that hands the document
to the request parked on that job (`JobWaiter`), which answers without reading the database again.
A waiter registers *before* its job is enqueued, so the completion cannot slip past it. Without
Redis (development on SQLite) waiters poll the job row. Either way the database stays the truth:
pub/sub is fire-and-forget, so a waiter re-checks the row at once when the listener lost its
subscription while it waited (a message may have gone by), every LISTENER_DOWN_POLL_SECONDS
while the listener has no subscription (Redis down: a finished job is neither published nor
heard; this used to wait for the safety re-check, 10 s), and otherwise every SAFETY_POLL_SECONDS
in case a publish failed. (It used to re-check every 2 s: with 128 parked
requests that was ~64 queries a second plus as many pool checkouts, a quarter of all database
round trips under load, for messages that are lost only when Redis is.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import orjson
from django.conf import settings
from django.db import connection, transaction

from config.redis_client import get_redis

logger = logging.getLogger(__name__)

SAFETY_POLL_SECONDS = 10.0
# How often a waiter looks at whether the listener re-subscribed (cheap: no I/O).
LISTENER_CHECK_SECONDS = 1.0
DATABASE_POLL_SECONDS = 0.1
# While the listener is not subscribed (Redis down, or not yet subscribed at start-up) a waiter
# reads its job row this often instead: a finished job is not published then, or not heard.
LISTENER_DOWN_POLL_SECONDS = 0.25


def _channel() -> str:
    return f"{settings.REDIS_PREFIX}:jobs:finished"


def job_finished_notify(*, job, document: dict) -> None:
    """`events.job_finished` subscriber: once the terminal transaction commits, publish the
    finished job's document to whichever web process has a request waiting on it."""
    transaction.on_commit(partial(job_finished_publish, job.public_id, document))


def job_finished_publish(public_id: str, document: dict | None = None) -> None:
    client = get_redis()
    if client is None:
        return
    payload = public_id.encode() + b" " + (orjson.dumps(document) if document is not None else b"null")
    try:
        client.publish(_channel(), payload)
    except Exception:  # waiters fall back to polling; never fail the job over this
        logger.warning("could not publish completion of %s", public_id, exc_info=True)


class JobWaiter:
    """One parked request. `document` is set by the listener thread before `event` is."""

    def __init__(self, public_id: str, subscription: int = 0) -> None:
        self.public_id = public_id
        self.event = threading.Event()
        self.document: dict | None = None
        self.subscription = subscription  # the listener's subscription count when we registered

    def wait(self, *, timeout: float, is_done: Callable[[], bool]) -> dict | bool:
        """Up to `timeout` seconds: the finished job's document when it was pushed to us, else
        whether the database says the job is finished."""
        deadline = time.monotonic() + timeout
        if get_redis() is None:
            while True:
                if is_done():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(DATABASE_POLL_SECONDS, remaining))
        _release_db_connection()
        next_check = time.monotonic() + SAFETY_POLL_SECONDS
        while True:
            now = time.monotonic()
            remaining = deadline - now
            step = min(remaining, LISTENER_CHECK_SECONDS, next_check - now)
            if not _waiters.listening:
                step = min(step, LISTENER_DOWN_POLL_SECONDS)
            if self.event.wait(max(0.0, step)):
                return self.document if self.document is not None else True
            now = time.monotonic()
            if now >= deadline:
                return _checked(is_done)
            missed = _waiters.subscription != self.subscription
            if missed or now >= next_check or not _waiters.listening:
                # Re-subscribed meanwhile: our message may have been published while nobody listened.
                self.subscription = _waiters.subscription
                next_check = now + SAFETY_POLL_SECONDS
                if _checked(is_done):
                    return True


def _checked(is_done: Callable[[], bool]) -> bool:
    try:
        return is_done()
    finally:
        _release_db_connection()


class _Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[JobWaiter]] = {}
        self._thread: threading.Thread | None = None
        self._url = ""
        # Bumped on every (re)subscription; a waiter that sees it change re-checks the database.
        self.subscription = 0
        self.listening = False  # subscribed now: a finished job's message would reach us

    def register(self, public_id: str) -> JobWaiter:
        with self._lock:
            waiter = JobWaiter(public_id, self.subscription)
            self._waiters.setdefault(public_id, []).append(waiter)
            if self._thread is None or not self._thread.is_alive() or self._url != settings.REDIS_URL:
                self._url = settings.REDIS_URL
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._listen, args=(ready,), name="job-finished-listener", daemon=True
                )
                self._thread.start()
                ready.wait(2.0)  # subscribed before the first job can finish
        return waiter

    def unregister(self, waiter: JobWaiter) -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.public_id)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[waiter.public_id]

    def _deliver(self, data: bytes) -> None:
        public_id, _, body = data.partition(b" ")
        with self._lock:
            waiters = self._waiters.get(public_id.decode())
            if not waiters:
                return  # another process's job: not even decoded
            document = orjson.loads(body) if body else None
            for waiter in waiters:
                waiter.document = document
                waiter.event.set()

    def _listen(self, ready: threading.Event) -> None:
        backoff = 0.1
        url = self._url
        try:
            while url == settings.REDIS_URL:
                client = get_redis()
                if client is None:
                    return
                try:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(_channel())
                    pubsub.get_message(timeout=1.0)  # the subscribe confirmation
                    self.subscription += 1
                    self.listening = True
                    ready.set()
                    backoff = 0.1
                    for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._deliver(message["data"])
                except Exception:  # reconnect; waiters poll meanwhile
                    self.listening = False
                    logger.warning("job notification listener lost Redis; reconnecting", exc_info=True)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.listening = False


_waiters = _Waiters()


@contextmanager
def job_waiter(public_id: str) -> Iterator[JobWaiter]:
    """Register interest in a job's completion; enter before the job can possibly finish."""
    waiter = _waiters.register(public_id) if get_redis() is not None else JobWaiter(public_id)
    try:
        yield waiter
    finally:
        if get_redis() is not None:
            _waiters.unregister(waiter)


def job_wait(*, public_id: str, timeout: float, is_done: Callable[[], bool]) -> dict | bool:
    """Wait for a job that may already be running (registers now, then checks the row once)."""
    with job_waiter(public_id) as waiter:
        if _checked(is_done):
            return True
        return waiter.wait(timeout=timeout, is_done=is_done)


def _release_db_connection() -> None:
    """A parked request should not hold a database connection. With the PostgreSQL pool, closing
    returns it to the pool; with persistent connections we keep it (reconnecting costs more)."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        connection.close()
