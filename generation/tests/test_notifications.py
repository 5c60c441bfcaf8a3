"""The waiting request's notification path over a real Redis: a published document wakes the
waiter at once without a database read; a message that never comes is caught by the check."""

import threading
import time

import pytest

from generation.jobs import notifications
from generation.jobs.notifications import job_finished_publish, job_waiter

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_published_document_wakes_the_waiter_without_reading_the_database(use_redis):
    checks: list[int] = []

    def is_done() -> bool:
        checks.append(1)
        return False

    document = {"id": "gen_notified", "status": "succeeded"}
    with job_waiter("gen_notified") as waiter:
        threading.Timer(0.2, job_finished_publish, args=("gen_notified", document)).start()
        started = time.monotonic()
        result = waiter.wait(timeout=5, is_done=is_done)
    assert result == document
    assert time.monotonic() - started < 2
    assert checks == []


def test_a_lost_message_is_caught_by_the_database_check(use_redis, monkeypatch):
    monkeypatch.setattr(notifications, "SAFETY_POLL_SECONDS", 0.5)
    finished = threading.Event()
    with job_waiter("gen_lost") as waiter:
        threading.Timer(0.2, finished.set).start()  # finished, but nothing is published
        started = time.monotonic()
        result = waiter.wait(timeout=5, is_done=finished.is_set)
    assert result is True
    assert time.monotonic() - started < 3


def test_a_waiter_gives_up_after_its_timeout(use_redis):
    with job_waiter("gen_never") as waiter:
        started = time.monotonic()
        result = waiter.wait(timeout=1.2, is_done=lambda: False)
    assert result is False
    assert 1.1 < time.monotonic() - started < 3
