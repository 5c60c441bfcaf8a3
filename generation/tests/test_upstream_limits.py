import asyncio
import time
from types import SimpleNamespace

import pytest

from generation.engine.upstream_limits import LimitWaitExceeded, UpstreamLimiter


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
