"""Telling a waiting request, at once, that its job finished.

With Redis, the worker PUBLISHes the job id on one channel after the finishing transaction commits,
and each web process runs one listener thread that wakes the matching waiters (threads parked in
`job_wait`). Without Redis (development on SQLite) waiters poll the job row. Either way the
database row is the truth: waiters re-read it, and also re-check it every few seconds in case a
message was lost (pub/sub is fire-and-forget).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from config.redis_client import get_redis

logger = logging.getLogger(__name__)

SAFETY_POLL_SECONDS = 2.0
DATABASE_POLL_SECONDS = 0.1


def _channel() -> str:
    return f"{settings.REDIS_PREFIX}:jobs:finished"


def job_finished_publish(public_id: str) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.publish(_channel(), public_id)
    except Exception:  # noqa: BLE001 - waiters fall back to polling; never fail the job over this
        logger.warning("could not publish completion of %s", public_id, exc_info=True)


class _Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self._url = ""

    def register(self, public_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[public_id].add(event)
            if self._thread is None or not self._thread.is_alive() or self._url != settings.REDIS_URL:
                self._url = settings.REDIS_URL
                self._thread = threading.Thread(
                    target=self._listen, name="job-finished-listener", daemon=True
                )
                self._thread.start()
        return event

    def unregister(self, public_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._events.get(public_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[public_id]

    def _wake(self, public_id: str) -> None:
        with self._lock:
            for event in self._events.get(public_id, ()):
                event.set()

    def _listen(self) -> None:
        backoff = 0.1
        url = self._url
        while url == settings.REDIS_URL:
            client = get_redis()
            if client is None:
                return
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(_channel())
                backoff = 0.1
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:  # noqa: BLE001 - reconnect; waiters poll meanwhile
                logger.warning("job notification listener lost Redis; reconnecting", exc_info=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


_waiters = _Waiters()


def _release_db_connection() -> None:
    """A parked request should not hold a database connection. With the PostgreSQL pool, closing
    returns it to the pool; with persistent connections we keep it (reconnecting costs more)."""
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        connection.close()


def job_wait(*, public_id: str, timeout: float, is_done: Callable[[], bool]) -> bool:
    """Block up to `timeout` seconds until `is_done()` is true; return whether it is."""
    deadline = time.monotonic() + timeout
    if get_redis() is None:
        while True:
            if is_done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(DATABASE_POLL_SECONDS, remaining))
    event = _waiters.register(public_id)

    def check() -> bool:
        try:
            return is_done()
        finally:
            _release_db_connection()

    try:
        if check():
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return check()
            if event.wait(min(remaining, SAFETY_POLL_SECONDS)) or check():
                return True
    finally:
        _waiters.unregister(public_id, event)
