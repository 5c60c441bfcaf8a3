import asyncio
import time
from types import SimpleNamespace

import pytest

from generation.engine.upstream_limits import LimitWaitExceeded, UpstreamLimiter, Waiter


def route(account_id=1, conc=2, rpm=None, ipm=None, timeout=1):
    return SimpleNamespace(
        account_id=account_id,
        account_name=f"acct{account_id}",
        max_concurrency=conc,
        requests_per_minute=rpm,
        images_per_minute=ipm,
        target=SimpleNamespace(timeout_seconds=timeout),
    )


@pytest.fixture(params=["local", "redis"])
def backend(request, db):
    if request.param == "redis":
        request.getfixturevalue("use_redis")
    else:
        request.getfixturevalue("use_database_limits")
    return request.param


def test_concurrency_slots(backend):
    async def scenario():
        limiter = UpstreamLimiter()
        r = route(conc=2)
        a, _ = await limiter.try_acquire(r, 1)
        b, _ = await limiter.try_acquire(r, 1)
        c, wait = await limiter.try_acquire(r, 1)
        assert a and b and c is None and wait == -1
        await limiter.release(a)
        d, _ = await limiter.try_acquire(r, 1)
        assert d is not None
        await limiter.close()

    asyncio.run(scenario())


def test_requests_and_images_per_minute(backend):
    async def scenario():
        limiter = UpstreamLimiter()
        by_requests = route(account_id=2, conc=0, rpm=2)
        assert (await limiter.try_acquire(by_requests, 1))[0]
        assert (await limiter.try_acquire(by_requests, 1))[0]
        slot, wait = await limiter.try_acquire(by_requests, 1)
        assert slot is None and 0 < wait <= 60
        by_images = route(account_id=3, conc=0, ipm=5)
        assert (await limiter.try_acquire(by_images, 4))[0]
        assert (await limiter.try_acquire(by_images, 2))[0] is None
        assert (await limiter.try_acquire(by_images, 1))[0]
        await limiter.close()

    asyncio.run(scenario())


def test_acquire_waits_its_turn_then_gives_up_at_the_deadline(backend):
    async def scenario():
        limiter = UpstreamLimiter()
        r = route(account_id=4, conc=1)
        held = await limiter.acquire(r, 1, deadline=time.monotonic() + 1)

        async def release_soon():
            await asyncio.sleep(0.1)
            await limiter.release(held)

        started = time.monotonic()
        releaser = asyncio.ensure_future(release_soon())
        await limiter.acquire(r, 1, deadline=time.monotonic() + 2)
        assert 0.05 < time.monotonic() - started < 1.5
        await releaser
        with pytest.raises(LimitWaitExceeded):
            await limiter.acquire(r, 1, deadline=time.monotonic() + 0.2)
        await limiter.close()

    asyncio.run(scenario())


def test_limits_are_shared_between_limiters_and_dead_holders_expire(db, use_redis):
    """Two limiters stand for two worker processes; a crashed holder's slot expires by itself."""

    async def scenario():
        one, two = UpstreamLimiter(), UpstreamLimiter()
        r = route(account_id=5, conc=1, timeout=-29.5)  # slot TTL = timeout + 30 s = 0.5 s
        assert (await one.try_acquire(r, 1))[0]
        assert (await two.try_acquire(r, 1))[0] is None
        await asyncio.sleep(0.6)  # `one` "died" without releasing
        assert (await two.try_acquire(r, 1))[0] is not None
        await one.close()
        await two.close()

    asyncio.run(scenario())


def test_generate_content_takes_one_slot_and_one_request_per_http_call(backend):
    """generateContent fans a 4-image job out into 4 HTTP calls: 4 slots, 4 requests of the RPM."""

    async def scenario():
        limiter = UpstreamLimiter()
        r = route(conc=5, rpm=6)
        r.target.protocol = "generate_content"
        four, _ = await limiter.try_acquire(r, 4)
        assert four is not None and four.calls == 4
        one, _ = await limiter.try_acquire(r, 1)
        assert one is not None
        none, wait = await limiter.try_acquire(r, 1)
        assert none is None and wait == -1  # 5 calls in flight: the account's concurrency
        await limiter.release(four)
        one_more, _ = await limiter.try_acquire(r, 1)
        assert one_more is not None  # 6 requests this minute
        over, wait = await limiter.try_acquire(r, 1)
        assert over is None and wait > 0  # the RPM counts calls, not jobs
        await limiter.close()

    asyncio.run(scenario())


# --- the fair queue per tenant in front of each account ---------------------------------------
def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["local", "redis", "redis-degraded"])
def fair_backend(request, db, settings):
    """Without Redis; with Redis (the queue is in the Lua script, across processes); and with a
    configured Redis that is down (each process queues its own waiters)."""
    from config import redis_client

    if request.param == "redis":
        request.getfixturevalue("use_redis")
    elif request.param == "local":
        request.getfixturevalue("use_database_limits")
    else:
        settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
        settings.REDIS_RETRY_SECONDS = 60
        settings.UPSTREAM_LIMIT_DEGRADED_PROCESSES = 1
        redis_client.get_redis.cache_clear()
    yield request.param
    if request.param == "redis-degraded":
        redis_client.get_redis.cache_clear()
        redis_client.degraded.recovered()


def queued(limiter: UpstreamLimiter, account_id: int, tenant: str) -> int:
    """How many waiters of `tenant` the account's queue holds (where this limiter keeps it now)."""
    from config.redis_client import get_redis
    from generation.engine.upstream_limits import _RedisBackend

    if isinstance(limiter._backend, _RedisBackend) and time.monotonic() >= limiter._redis_down_until:
        from django.conf import settings

        return get_redis().zcard(f"{settings.REDIS_PREFIX}:ul:{account_id}:q:{tenant}")
    backend = limiter._fallback if isinstance(limiter._backend, _RedisBackend) else limiter._backend
    account = backend._accounts.get(account_id)
    return len(account.queues.get(tenant, {})) if account else 0


async def until(condition) -> None:
    """Let the waiters run until `condition()` holds (each asks within POLL_MAX)."""
    for _ in range(2000):
        if await condition() if asyncio.iscoroutinefunction(condition) else condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def test_a_bystander_gets_the_next_free_slot_before_a_hogs_twenty_waiters(fair_backend):
    async def scenario():
        limiter = UpstreamLimiter()
        r = route(account_id=11, conc=2, timeout=60)
        deadline = time.monotonic() + 60
        held = [await limiter.acquire(r, 1, deadline=deadline, tenant="hog", weight=4) for _ in range(2)]
        hogs = []
        for n in range(1, 21):  # the hog queues first, one after another
            hogs.append(
                asyncio.ensure_future(limiter.acquire(r, 1, deadline=deadline, tenant="hog", weight=4))
            )
            await until(lambda n=n: queued(limiter, 11, "hog") == n)
        bystander = asyncio.ensure_future(limiter.acquire(r, 1, deadline=deadline, tenant="by", weight=1))
        await until(lambda: queued(limiter, 11, "by") == 1)

        await limiter.release(held.pop())
        done, _ = await asyncio.wait([bystander, *hogs], return_when=asyncio.FIRST_COMPLETED)
        assert done == {bystander}  # hog: 1 in flight / 4; bystander: 0 / 1
        await until(lambda: queued(limiter, 11, "by") == 0)
        assert queued(limiter, 11, "hog") == 20

        await limiter.release(held.pop())  # now the hog's turn: its first waiter (FIFO)
        done, _ = await asyncio.wait(hogs, return_when=asyncio.FIRST_COMPLETED)
        assert done == {hogs[0]}
        assert queued(limiter, 11, "hog") == 19

        await limiter.release(bystander.result())
        await limiter.release(hogs[0].result())
        for task in hogs[1:]:  # nobody starves: each one in turn, in arrival order
            slot = await task
            await limiter.release(slot)
        assert queued(limiter, 11, "hog") == 0
        await limiter.close()

    asyncio.run(scenario())


def test_contended_slots_are_shared_by_weight(fair_backend):
    """Weights 3 and 1, four slots freed: three to the first tenant, one to the second."""

    async def scenario():
        limiter = UpstreamLimiter()
        r = route(account_id=12, conc=4, timeout=60)
        deadline = time.monotonic() + 60
        held = [await limiter.acquire(r, 1, deadline=deadline, tenant="other") for _ in range(4)]
        waiting: dict[str, list[asyncio.Future]] = {"big": [], "small": []}
        for tenant, weight in (("big", 3), ("small", 1)):
            for n in range(1, 7):
                task = limiter.acquire(r, 1, deadline=deadline, tenant=tenant, weight=weight)
                waiting[tenant].append(asyncio.ensure_future(task))
                await until(lambda t=tenant, n=n: queued(limiter, 12, t) == n)
        for slot in held:
            await limiter.release(slot)
        await until(lambda: sum(t.done() for ts in waiting.values() for t in ts) == 4)
        served = {tenant: sum(t.done() for t in tasks) for tenant, tasks in waiting.items()}
        assert served == {"big": 3, "small": 1}
        for tasks in waiting.values():
            for pending in tasks:
                if pending.done():
                    await limiter.release(pending.result())
                else:
                    pending.cancel()
        await asyncio.gather(*(t for ts in waiting.values() for t in ts), return_exceptions=True)
        await limiter.close()

    asyncio.run(scenario())


def test_a_big_waiter_is_not_starved_by_small_ones(fair_backend):
    """A 4-call generateContent waiter at the head of the fair order holds its turn: a 1-call
    request of the busy tenant cannot take the single slot freed ahead of it."""

    async def scenario():
        limiter = UpstreamLimiter()
        r = route(account_id=13, conc=4, timeout=60)
        r.target.protocol = "generate_content"
        deadline = time.monotonic() + 60
        held = [await limiter.acquire(r, 1, deadline=deadline, tenant="busy") for _ in range(4)]
        big = asyncio.ensure_future(limiter.acquire(r, 4, deadline=deadline, tenant="quiet"))
        await until(lambda: queued(limiter, 13, "quiet") == 1)
        await limiter.release(held.pop())
        slot, wait = await limiter.try_acquire(r, 1, Waiter("busy"))
        assert slot is None and wait == -1
        assert queued(limiter, 13, "busy") == 0  # a one-shot try leaves no trace in the queue
        for slot in held:
            await limiter.release(slot)
        four = await big
        assert four.calls == 4
        await limiter.release(four)
        await limiter.close()

    asyncio.run(scenario())


def test_a_waiter_whose_deadline_passes_leaves_the_queue(fair_backend):
    async def scenario():
        limiter = UpstreamLimiter()
        r = route(account_id=14, conc=1, timeout=60)
        held = await limiter.acquire(r, 1, deadline=time.monotonic() + 60, tenant="a")
        short = asyncio.ensure_future(limiter.acquire(r, 1, deadline=time.monotonic() + 1.5, tenant="b"))
        await until(lambda: queued(limiter, 14, "b") == 1)
        with pytest.raises(LimitWaitExceeded):
            await short
        assert queued(limiter, 14, "b") == 0
        later = asyncio.ensure_future(limiter.acquire(r, 1, deadline=time.monotonic() + 60, tenant="c"))
        await until(lambda: queued(limiter, 14, "c") == 1)
        await limiter.release(held)
        await limiter.release(await later)  # the expired waiter did not hold its turn
        await limiter.close()

    asyncio.run(scenario())


def test_cancel_at_any_point_never_leaks_a_slot(fair_backend):
    """Cancel a waiter after 0, 1, 2, ... turns of the event loop (before, during and after its
    Redis call): the account always ends with every slot free and nobody queued."""

    async def scenario():
        limiter = UpstreamLimiter()
        r = route(account_id=15, conc=2, timeout=60)
        for turns in range(25):
            blocker = await limiter.acquire(r, 1, deadline=time.monotonic() + 60, tenant="x")
            task = asyncio.ensure_future(limiter.acquire(r, 1, deadline=time.monotonic() + 60, tenant="y"))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            result = (await asyncio.gather(task, return_exceptions=True))[0]
            if not isinstance(result, BaseException):
                await limiter.release(result)
            await limiter.release(blocker)
            assert queued(limiter, 15, "y") == 0
            both = [(await limiter.try_acquire(r, 1))[0] for _ in range(2)]
            assert all(both), f"a slot leaked after a cancel at turn {turns}"
            for slot in both:
                await limiter.release(slot)
        await limiter.close()

    asyncio.run(scenario())


def test_fair_order_holds_across_processes(db, use_redis):
    """Two limiters stand for two worker processes: the hog's waiters are in one, the bystander's
    in the other; a slot the hog's process frees (the hog keeps one in flight) still goes to the
    bystander."""

    async def scenario():
        one, two = UpstreamLimiter(), UpstreamLimiter()
        r = route(account_id=16, conc=2, timeout=60)
        deadline = time.monotonic() + 60
        held = [await one.acquire(r, 1, deadline=deadline, tenant="hog", weight=4) for _ in range(2)]
        hogs = []
        for n in range(1, 6):
            hogs.append(asyncio.ensure_future(one.acquire(r, 1, deadline=deadline, tenant="hog", weight=4)))
            await until(lambda n=n: queued(one, 16, "hog") == n)
        bystander = asyncio.ensure_future(two.acquire(r, 1, deadline=deadline, tenant="by"))
        await until(lambda: queued(two, 16, "by") == 1)
        await one.release(held.pop())  # wakes the hog's waiters in `one` at once: not theirs
        done, _ = await asyncio.wait([bystander, *hogs], return_when=asyncio.FIRST_COMPLETED)
        assert done == {bystander}
        await two.release(bystander.result())
        await one.release(held.pop())
        for task in hogs:
            await one.release(await task)
        await one.close()
        await two.close()

    asyncio.run(scenario())
