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


def test_a_waiter_parked_when_redis_goes_down_reads_its_job_row_instead_of_waiting(settings, monkeypatch):
    """A request parked while Redis was up: Redis dies (nothing can be published, nothing heard)
    and the job finishes meanwhile. The waiter notices the listener lost its subscription and reads
    the row, instead of waiting for the safety re-check (here a minute) or its timeout."""
    import shutil
    import socket
    import subprocess

    from config.redis_client import get_redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    get_redis.cache_clear()
    monkeypatch.setattr(notifications, "SAFETY_POLL_SECONDS", 60.0)
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        finished = threading.Event()
        checks_after_finish: list[float] = []

        def is_done() -> bool:
            if finished.is_set():
                checks_after_finish.append(time.monotonic())
            return finished.is_set()

        with job_waiter("gen_warm"):  # starts this Redis's listener and waits for its subscription
            pass
        with job_waiter("gen_outage") as waiter:
            assert notifications._waiters.listening
            assert waiter.subscription == notifications._waiters.subscription

            def outage_then_finish() -> None:
                server.kill()
                server.wait(5)
                while notifications._waiters.listening:  # the listener sees the connection drop
                    time.sleep(0.01)
                finished.set()  # the worker could not publish: Redis is down

            threading.Thread(target=outage_then_finish).start()
            started = time.monotonic()
            result = waiter.wait(timeout=40, is_done=is_done)
        assert result is True
        # Answered from the row soon after the job finished, long before the 40 s timeout.
        assert checks_after_finish and checks_after_finish[0] - started < 20
    finally:
        server.kill()
        server.wait(5)
        get_redis.cache_clear()
