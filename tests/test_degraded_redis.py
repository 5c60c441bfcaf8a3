"""Redis is an accelerator: with Redis configured but unreachable, requests still succeed (rate
limits are counted in the database), readiness stays green and says Redis is degraded, and the
process goes back to Redis by itself once it answers again."""

import shutil
import socket
import subprocess
import time

import pytest

from config import redis_client
from tenants.limits import rate_limit_hit
from tenants.models import RateLimitCounter


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dead_redis(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.REDIS_RETRY_SECONDS = 60
    redis_client.get_redis.cache_clear()
    redis_client.degraded.recovered()
    yield
    redis_client.get_redis.cache_clear()
    redis_client.degraded.recovered()


@pytest.mark.django_db
def test_rate_limits_fall_back_to_the_database_and_still_hold(dead_redis):
    results = [rate_limit_hit(key="org:x", limit=2, now=1000.0) for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert RateLimitCounter.objects.get(key="org:x").count == 3
    assert redis_client.redis_degraded()


@pytest.mark.django_db
def test_api_requests_succeed_and_readiness_stays_up_while_redis_is_down(dead_redis, alice):
    response = alice.client().get("/v1/generations")
    assert response.status_code == 200, response.content
    health = alice.client().get("/healthz")
    assert health.status_code == 200
    assert health.json()["checks"]["redis"].startswith("degraded")
    assert alice.client().get("/livez").status_code == 200


@pytest.mark.django_db
def test_degraded_mode_ends_by_itself_when_redis_answers(dead_redis, settings):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    rate_limit_hit(key="org:y", limit=5, now=1000.0)
    assert redis_client.redis_degraded()
    assert redis_client.redis_call("probe", lambda client: client.ping(), lambda: "fallback") == "fallback"
    port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        redis_client.degraded.until = 0.0  # the retry interval has passed
        assert redis_client.redis_call("probe", lambda client: client.ping(), lambda: "fallback") is True
        assert not redis_client.redis_degraded()
    finally:
        server.kill()
        server.wait(5)
