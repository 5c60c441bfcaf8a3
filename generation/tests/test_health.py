import time
from types import SimpleNamespace

from generation.engine.health import HealthBook


def route(route_id, position=0):
    return SimpleNamespace(id=route_id, position=position)


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_circuit_opens_after_consecutive_failures_then_probes_and_closes(db):
    clock = Clock()
    book = HealthBook(cooldown_start=0.2, clock=clock)
    for _ in range(3):
        assert book.available(1)
        book.started(1)
        book.finished(1, ok=False, latency_ms=10)
    assert not book.available(1)
    assert book.snapshot()[1]["circuit"] == "open"
    clock.advance(0.19)
    assert not book.available(1)  # still cooling down
    clock.advance(0.02)
    assert book.available(1)  # half-open: one probe may go
    book.started(1)
    assert not book.available(1)  # only one probe at a time
    book.finished(1, ok=True, latency_ms=50)
    assert book.available(1) and book.available(1)
    assert book.snapshot()[1]["circuit"] == "closed"


def test_failed_probe_reopens_with_a_longer_cooldown(db):
    clock = Clock()
    book = HealthBook(cooldown_start=0.1, clock=clock)
    for _ in range(3):
        book.finished(2, ok=False, latency_ms=5)
    clock.advance(0.15)
    assert book.available(2)
    book.started(2)
    book.finished(2, ok=False, latency_ms=5)
    assert book.state(2).cooldown == 0.2
    clock.advance(0.12)
    assert not book.available(2)  # the longer cooldown is not over
    clock.advance(0.09)
    assert book.available(2)


def test_order_prefers_healthy_then_fastest_then_position(db):
    book = HealthBook()
    slow, fast, broken, unmeasured, similar = (
        route(1, 0),
        route(2, 10),
        route(3, 20),
        route(4, 30),
        route(5, 5),
    )
    book.finished(1, ok=True, latency_ms=900)
    book.finished(2, ok=True, latency_ms=300)
    book.finished(5, ok=True, latency_ms=310)  # within 25% of route 2: position decides
    for _ in range(3):
        book.finished(3, ok=False, latency_ms=1)
    order = [r.id for r in book.order([slow, broken, fast, unmeasured, similar])]
    assert order == [5, 2, 4, 1, 3]


def test_an_abandoned_probe_frees_the_probe_slot(db):
    clock = Clock()
    book = HealthBook(cooldown_start=0.05, clock=clock)
    for _ in range(3):
        book.finished(4, ok=False, latency_ms=5)
    clock.advance(0.06)
    book.started(4)
    assert not book.available(4)
    book.abandoned(4)  # the job was canceled mid-call
    assert book.available(4)


def test_counters_drain_for_the_stats_table(db):
    book = HealthBook()
    book.finished(1, ok=True, latency_ms=100, images=2)
    book.finished(1, ok=False, latency_ms=50)
    assert book.drain_pending() == {1: [2, 1, 2, 150]}
    assert book.drain_pending() == {}


def test_an_open_circuit_is_shared_through_redis(db, use_redis):
    """Sharing runs on the runner's loop with async Redis: the opener publishes, another process
    learns it on its next share(), and a closed circuit is withdrawn the same way."""
    import asyncio

    import redis.asyncio as aioredis
    from django.conf import settings

    one, two = HealthBook(cooldown_start=5), HealthBook()
    two.state(7)  # a route process two routes to

    async def share_both(client):
        await one.share(client)
        await two.share(client)

    async def scenario():
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            assert two.available(7)
            for _ in range(3):
                one.finished(7, ok=False, latency_ms=1)
            await share_both(client)
            assert not two.available(7)  # another process learns it from Redis
            one.state(7).open_until = time.monotonic() - 1  # cool-down over: the probe succeeds
            one.started(7)
            one.finished(7, ok=True, latency_ms=1)
            await share_both(client)
            assert two.available(7)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_one_tenants_failures_close_the_route_to_that_tenant_only(db):
    """Four failing calls from one tenant, while another tenant's calls succeed, must not open the
    circuit for everyone: the route closes to the failing tenant alone (it fails over)."""
    book = HealthBook(cooldown_start=5)
    book.finished(9, ok=True, latency_ms=10, tenant="bystander")
    for _ in range(4):
        book.finished(9, ok=False, latency_ms=10, error="upstream_server_error", tenant="hostile")
    assert book.available(9) and book.available(9, tenant="bystander")
    assert not book.available(9, tenant="hostile")
    assert book.snapshot()[9]["circuit"] == "closed"


def test_failures_of_several_tenants_still_open_the_circuit(db):
    book = HealthBook(cooldown_start=5)
    book.finished(9, ok=True, latency_ms=10, tenant="a")
    for tenant in ("a", "b", "c"):
        book.finished(9, ok=False, latency_ms=10, tenant=tenant)
    assert not book.available(9) and not book.available(9, tenant="a")


def test_a_route_closed_to_one_tenant_is_closed_to_it_in_every_process(db, use_redis):
    """The tenant whose own failures closed the route in one process fails over in the others too
    (shared through Redis like an open circuit); every other tenant keeps the route everywhere."""
    import asyncio

    import redis.asyncio as aioredis
    from django.conf import settings

    one, two = HealthBook(cooldown_start=30), HealthBook()
    two.state(8)

    async def scenario():
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            one.finished(8, ok=True, latency_ms=10, tenant="bystander")
            for _ in range(4):
                one.finished(8, ok=False, latency_ms=10, error="upstream_server_error", tenant="hostile")
            assert not one.available(8, tenant="hostile")
            assert two.available(8, tenant="hostile")  # not shared yet
            await one.share(client)
            await two.share(client)
            assert not two.available(8, tenant="hostile")
            assert two.available(8, tenant="bystander") and two.available(8)
        finally:
            await client.aclose()

    asyncio.run(scenario())
