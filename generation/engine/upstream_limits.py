"""Upstream limits per provider account: calls in flight, requests per minute, images per minute.

With Redis they hold across every worker on every machine: one Lua script checks and takes all
three atomically, so workers wait their turn instead of collecting 429s from Google. A concurrency
slot is a sorted-set member that expires on its own (timeout + margin), so a worker that dies
holding slots cannot leak them. Without Redis (single-machine development) the same limits are
kept per process. While a configured Redis is unreachable, each process keeps its share of the
limits locally (limit / UPSTREAM_LIMIT_DEGRADED_PROCESSES, at least 1) and goes back to Redis by
itself: the account's total stays within the configured limits as long as that setting is at least
the number of worker processes (the documented tolerance), and no job fails over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from config.redis_client import REDIS_ERRORS, degraded

# One call of this script is one attempt to take `calls` slots (and requests, images) for one
# waiter. KEYS[1] is the account's key prefix; the script builds the per-tenant keys from it (one
# Redis instance, not Redis Cluster). Keys under the prefix:
#   slots          zset  slot member (token:i) -> expiry ms      every call in flight on the account
#   ts:<tenant>    zset  the same members, per tenant            that tenant's calls in flight
#   q:<tenant>     zset  waiter token -> arrival sequence        that tenant's waiters, FIFO
#   calls          hash  waiter token -> calls it needs
#   alive          zset  waiter token -> expiry ms               a waiter that stops asking expires
#   tenants        hash  tenant -> weight                        tenants with waiters
#   seq            counter of arrivals
# When the account has fewer free slots than waiters need, the next slots go to the tenant with the
# least (calls in flight / weight), FIFO within a tenant, ties to the earliest arrival; a waiter
# whose need exceeds the free slots holds its turn (nobody leapfrogs it, so nobody starves).
_ACQUIRE_LUA = """
local P = KEYS[1]
local now = tonumber(ARGV[1])
local token = ARGV[2]
local slot_ttl = tonumber(ARGV[3])
local conc_limit, rpm_limit, ipm_limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local images, window_end = tonumber(ARGV[7]), tonumber(ARGV[8])
local calls = tonumber(ARGV[9])
local tenant, weight = ARGV[10], tonumber(ARGV[11])
local join = ARGV[12] == '1'
local alive_ttl = tonumber(ARGV[13])
local rpm_key, ipm_key = P .. ':rpm:' .. ARGV[14], P .. ':ipm:' .. ARGV[14]
local slots = P .. ':slots'

local function leave()
  redis.call('ZREM', P .. ':q:' .. tenant, token)
  redis.call('HDEL', P .. ':calls', token)
  redis.call('ZREM', P .. ':alive', token)
  if redis.call('ZCARD', P .. ':q:' .. tenant) == 0 then redis.call('HDEL', P .. ':tenants', tenant) end
end

local function not_now(result)
  if not join then leave() end
  return result
end

if conc_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', P .. ':alive', '-inf', now)
  if not redis.call('ZSCORE', P .. ':alive', token) then
    redis.call('ZADD', P .. ':q:' .. tenant, redis.call('INCR', P .. ':seq'), token)
    redis.call('HSET', P .. ':calls', token, calls)
  end
  redis.call('ZADD', P .. ':alive', now + alive_ttl, token)
  redis.call('HSET', P .. ':tenants', tenant, weight)
  for _, key in ipairs({'q:' .. tenant, 'calls', 'alive', 'tenants', 'seq'}) do
    redis.call('PEXPIRE', P .. ':' .. key, 3600000)
  end
  local free = conc_limit - redis.call('ZCARD', slots)
  if free < calls then return not_now(-1) end
  -- Hand the free slots out in fair order until they run out; are we among those served?
  local queues = {}
  local state = redis.call('HGETALL', P .. ':tenants')
  for i = 1, #state, 2 do
    local t = state[i]
    redis.call('ZREMRANGEBYSCORE', P .. ':ts:' .. t, '-inf', now)
    queues[#queues + 1] = {t = t, w = math.max(tonumber(state[i + 1]) or 1, 1), index = 0,
                           load = redis.call('ZCARD', P .. ':ts:' .. t)}
  end
  local function head(q)
    while true do
      local entry = redis.call('ZRANGE', P .. ':q:' .. q.t, q.index, q.index, 'WITHSCORES')
      if #entry == 0 then return nil end
      if redis.call('ZSCORE', P .. ':alive', entry[1]) then
        return entry[1], tonumber(entry[2])
      end
      redis.call('ZREM', P .. ':q:' .. q.t, entry[1])  -- a waiter that went away
      redis.call('HDEL', P .. ':calls', entry[1])
    end
  end
  for _, q in ipairs(queues) do
    q.head, q.seq = head(q)
    if not q.head and q.index == 0 then redis.call('HDEL', P .. ':tenants', q.t) end
  end
  local served = false
  while true do
    local best = nil
    for _, q in ipairs(queues) do
      if q.head then
        if best == nil or q.load * best.w < best.load * q.w
           or (q.load * best.w == best.load * q.w and q.seq < best.seq) then
          best = q
        end
      end
    end
    if best == nil then break end
    local need = tonumber(redis.call('HGET', P .. ':calls', best.head) or '1')
    if need > free then break end
    if best.head == token then served = true; break end
    free = free - need
    best.load = best.load + need
    best.index = best.index + 1
    best.head, best.seq = head(best)
  end
  if not served then return not_now(-1) end
end
local used_requests = tonumber(redis.call('GET', rpm_key) or '0')
local used_images = tonumber(redis.call('GET', ipm_key) or '0')
if rpm_limit > 0 and used_requests + calls > rpm_limit then return not_now(window_end - now) end
if ipm_limit > 0 and used_images + images > ipm_limit then return not_now(window_end - now) end
if conc_limit > 0 then
  for i = 1, calls do
    redis.call('ZADD', slots, now + slot_ttl, token .. ':' .. i)
    redis.call('ZADD', P .. ':ts:' .. tenant, now + slot_ttl, token .. ':' .. i)
  end
  redis.call('PEXPIRE', slots, slot_ttl + 60000)
  redis.call('PEXPIRE', P .. ':ts:' .. tenant, slot_ttl + 60000)
  leave()
end
if rpm_limit > 0 then redis.call('INCRBY', rpm_key, calls); redis.call('PEXPIRE', rpm_key, 120000) end
if ipm_limit > 0 then redis.call('INCRBY', ipm_key, images); redis.call('PEXPIRE', ipm_key, 120000) end
return 0
"""

# Give back a waiter's slots (if the script took any) and its place in the queue.
_RELEASE_LUA = """
local P, token, tenant, calls = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, calls do
  redis.call('ZREM', P .. ':slots', token .. ':' .. i)
  redis.call('ZREM', P .. ':ts:' .. tenant, token .. ':' .. i)
end
redis.call('ZREM', P .. ':q:' .. tenant, token)
redis.call('HDEL', P .. ':calls', token)
redis.call('ZREM', P .. ':alive', token)
if redis.call('ZCARD', P .. ':q:' .. tenant) == 0 then redis.call('HDEL', P .. ':tenants', tenant) end
return 0
"""

# A waiter that stops asking (its process died) loses its place after this long; a live waiter
# asks at least every second (UpstreamLimiter.acquire), so this never drops one that is waiting.
WAITER_ALIVE_SECONDS = 3.0


class LimitWaitExceeded(Exception):
    """The deadline passed while waiting for an upstream slot."""


@dataclass(frozen=True)
class Slot:
    account_id: int
    token: str
    local: bool = False  # taken from the per-process fallback (Redis was down)
    calls: int = 1  # HTTP calls (concurrency slots and requests) this slot covers
    tenant: str = ""  # whose calls: the fair queue counts them against this tenant


@dataclass(frozen=True)
class Waiter:
    """Who asks for a slot: one provider call of one tenant. `weight` is the tenant's share of a
    contended account (its plan's concurrency limit); `token` is its place in the queue."""

    tenant: str = ""
    weight: int = 1
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _calls(route, images: int, concurrency: int, rpm: int) -> int:
    """Upstream HTTP calls one provider call makes: generateContent returns one image per call and
    fans out one call per image, so each takes its own slot and request (never more than the
    limits themselves, or a big job could never start)."""
    calls = images if getattr(route.target, "protocol", "") == "generate_content" else 1
    for limit in (concurrency, rpm):
        if limit:
            calls = min(calls, limit)
    return max(1, calls)


def _limits(route) -> tuple[int, int, int]:
    return (route.max_concurrency or 0, route.requests_per_minute or 0, route.images_per_minute or 0)


@dataclass
class _LocalAccount:
    holders: dict[str, str] = field(default_factory=dict)  # slot member -> tenant
    load: dict[str, int] = field(default_factory=dict)  # tenant -> calls in flight
    queues: dict[str, dict[str, int]] = field(default_factory=dict)  # tenant -> token -> calls (FIFO)
    weights: dict[str, int] = field(default_factory=dict)
    arrival: dict[str, int] = field(default_factory=dict)  # token -> sequence
    alive: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry


class _LocalBackend:
    """Per-process limits (no Redis), or this process's share of them while Redis is down. The same
    fair queue as the Redis script, over this process's waiters."""

    def __init__(self, *, share: int = 1) -> None:
        self._share = max(1, share)
        self._lock = threading.Lock()
        self._accounts: dict[int, _LocalAccount] = {}
        self._windows: dict[tuple[int, str, int], int] = {}
        self._seq = itertools.count(1)

    def limits(self, route) -> tuple[int, int, int]:
        return tuple(-(-limit // self._share) if limit else 0 for limit in _limits(route))  # type: ignore[return-value]

    async def try_acquire(self, route, images: int, waiter: Waiter, *, join: bool) -> float:
        conc, rpm, ipm = self.limits(route)
        calls = _calls(route, images, conc, rpm)
        window = int(time.time() // 60)
        wait = (window + 1) * 60 - time.time()
        with self._lock:
            account = self._accounts.setdefault(route.account_id, _LocalAccount())
            if conc:
                self._join(account, waiter, calls)
                if not self._served(account, conc, waiter.token):
                    return self._not_now(account, waiter, join, -1)
            if rpm and self._windows.get((route.account_id, "r", window), 0) + calls > rpm:
                return self._not_now(account, waiter, join, wait)
            if ipm and self._windows.get((route.account_id, "i", window), 0) + images > ipm:
                return self._not_now(account, waiter, join, wait)
            if conc:
                for i in range(1, calls + 1):
                    account.holders[f"{waiter.token}:{i}"] = waiter.tenant
                account.load[waiter.tenant] = account.load.get(waiter.tenant, 0) + calls
                self._leave(account, waiter)
            if rpm:
                self._windows[(route.account_id, "r", window)] = (
                    self._windows.get((route.account_id, "r", window), 0) + calls
                )
            if ipm:
                key = (route.account_id, "i", window)
                self._windows[key] = self._windows.get(key, 0) + images
            if len(self._windows) > 1000:
                self._windows = {k: v for k, v in self._windows.items() if k[2] >= window - 1}
            return 0

    def _join(self, account: _LocalAccount, waiter: Waiter, calls: int) -> None:
        now = time.monotonic()
        for token, expiry in list(account.alive.items()):
            if expiry <= now:  # only a waiter cancelled without leaving (cannot happen): tidy up
                for queue in account.queues.values():
                    queue.pop(token, None)
                del account.alive[token]
        if waiter.token not in account.alive:
            account.queues.setdefault(waiter.tenant, {})[waiter.token] = calls
            account.arrival[waiter.token] = next(self._seq)
        account.alive[waiter.token] = now + WAITER_ALIVE_SECONDS
        account.weights[waiter.tenant] = max(1, waiter.weight)

    @staticmethod
    def _served(account: _LocalAccount, conc: int, token: str) -> bool:
        """Hand the free slots out in fair order (least in flight per weight first, FIFO within a
        tenant); True if `token` is among those served now."""
        free = conc - len(account.holders)
        heads = {t: iter(list(q.items())) for t, q in account.queues.items() if q}
        load = {t: account.load.get(t, 0) for t in heads}
        current = {t: next(it, None) for t, it in heads.items()}
        while True:
            candidates = [t for t, entry in current.items() if entry is not None]
            if not candidates:
                return False
            best = min(
                candidates,
                key=lambda t: (load[t] / account.weights.get(t, 1), account.arrival[current[t][0]]),  # type: ignore[index]
            )
            best_token, need = current[best]  # type: ignore[misc]
            if need > free:
                return False
            if best_token == token:
                return True
            free -= need
            load[best] += need
            current[best] = next(heads[best], None)

    def _not_now(self, account: _LocalAccount, waiter: Waiter, join: bool, result: float) -> float:
        if not join:
            self._leave(account, waiter)
        return result

    @staticmethod
    def _leave(account: _LocalAccount, waiter: Waiter) -> None:
        queue = account.queues.get(waiter.tenant)
        if queue is not None:
            queue.pop(waiter.token, None)
            if not queue:
                del account.queues[waiter.tenant]
                account.weights.pop(waiter.tenant, None)
        account.alive.pop(waiter.token, None)
        account.arrival.pop(waiter.token, None)

    async def release(self, account_id: int, waiter: Waiter, calls: int = 1) -> None:
        with self._lock:
            account = self._accounts.get(account_id)
            if account is None:
                return
            for i in range(1, calls + 1):
                tenant = account.holders.pop(f"{waiter.token}:{i}", None)
                if tenant is not None:
                    account.load[tenant] -= 1
                    if not account.load[tenant]:
                        del account.load[tenant]
            self._leave(account, waiter)


class _RedisBackend:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        )
        self._script = self._client.register_script(_ACQUIRE_LUA)
        self._release = self._client.register_script(_RELEASE_LUA)

    @staticmethod
    def _prefix(account_id: int) -> str:
        return f"{settings.REDIS_PREFIX}:ul:{account_id}"

    def limits(self, route) -> tuple[int, int, int]:
        return _limits(route)

    async def try_acquire(self, route, images: int, waiter: Waiter, *, join: bool) -> float:
        conc, rpm, ipm = _limits(route)
        now_ms = int(time.time() * 1000)
        window = now_ms // 60_000
        result = await self._script(
            keys=[self._prefix(route.account_id)],
            args=[
                now_ms,
                waiter.token,
                int((route.target.timeout_seconds + 30) * 1000),
                conc,
                rpm,
                ipm,
                min(images, ipm) if ipm else images,
                (window + 1) * 60_000,
                _calls(route, images, conc, rpm),
                waiter.tenant,
                max(1, waiter.weight),
                "1" if join else "0",
                int(WAITER_ALIVE_SECONDS * 1000),
                window,
            ],
        )
        result = int(result)
        return -1 if result == -1 else result / 1000.0

    async def release(self, account_id: int, waiter: Waiter, calls: int = 1) -> None:
        await self._release(keys=[self._prefix(account_id)], args=[waiter.token, waiter.tenant, calls])

    async def close(self) -> None:
        await self._client.aclose()


class UpstreamLimiter:
    """Owned by one event loop (the worker's runner)."""

    POLL_START = 0.01
    POLL_MAX = 0.2

    def __init__(self) -> None:
        self._backend: _LocalBackend | _RedisBackend = (
            _RedisBackend(settings.REDIS_URL) if settings.REDIS_URL else _LocalBackend()
        )
        self._fallback = _LocalBackend(share=settings.UPSTREAM_LIMIT_DEGRADED_PROCESSES)
        self._redis_down_until = 0.0
        self._released: dict[int, asyncio.Event] = {}  # account -> set when this process frees a slot

    async def try_acquire(
        self, route, images: int, waiter: Waiter | None = None, *, join: bool = False
    ) -> tuple[Slot | None, float]:
        """Take a slot now if one is free and nobody with a better claim waits for it. Returns
        (slot, 0) or (None, seconds worth waiting; -1: until a slot is released). With `join` the
        waiter keeps its place in the account's queue when not served (`acquire` does)."""
        waiter = waiter or Waiter()
        backend = self._backend
        if isinstance(backend, _RedisBackend):
            if time.monotonic() < self._redis_down_until:
                backend = self._fallback
            else:
                try:
                    wait = await backend.try_acquire(route, images, waiter, join=join)
                except REDIS_ERRORS as exc:
                    degraded.failed(exc, "upstream limits")
                    self._redis_down_until = time.monotonic() + settings.REDIS_RETRY_SECONDS
                    backend = self._fallback
                else:
                    degraded.recovered()
                    return self._slot(route, images, waiter, backend, wait)
        wait = await backend.try_acquire(route, images, waiter, join=join)
        return self._slot(route, images, waiter, backend, wait)

    def _slot(self, route, images: int, waiter: Waiter, backend, wait: float) -> tuple[Slot | None, float]:
        if wait != 0:
            return None, wait
        conc, rpm, _ = backend.limits(route)
        local = backend is self._fallback
        calls = _calls(route, images, conc, rpm)
        return Slot(route.account_id, waiter.token, local=local, calls=calls, tenant=waiter.tenant), 0.0

    async def acquire(
        self, route, images: int, *, deadline: float, tenant: str = "", weight: int = 1
    ) -> Slot:
        """Wait (at most until `deadline`, a monotonic time) for a slot on this route's account, in
        the account's fair queue. A waiter that gives up (the deadline, a cancel) leaves the queue
        and gives back anything the interrupted call took: no slot leaks."""
        waiter = Waiter(tenant=tenant, weight=weight)
        poll = self.POLL_START
        try:
            while True:
                slot, wait = await self.try_acquire(route, images, waiter, join=True)
                if slot is not None:
                    return slot
                sleep = poll if wait < 0 else min(wait, 1.0)
                if time.monotonic() + sleep > deadline:
                    raise LimitWaitExceeded(
                        f"no upstream capacity on {route.account_name} before the deadline"
                    )
                released = self._released.setdefault(route.account_id, asyncio.Event())
                with contextlib.suppress(TimeoutError):  # a release in this process: ask again now
                    await asyncio.wait_for(released.wait(), sleep * (0.5 + random.random()))
                poll = min(poll * 2, self.POLL_MAX)
        except BaseException:
            calls = _calls(route, images, *_limits(route)[:2])
            await asyncio.shield(self._give_back(route.account_id, waiter, calls))
            raise

    async def _give_back(self, account_id: int, waiter: Waiter, calls: int) -> None:
        """Leave the queue everywhere the waiter may be (Redis and the fallback)."""
        await self._fallback.release(account_id, waiter, calls)
        if isinstance(self._backend, _RedisBackend):
            with contextlib.suppress(*REDIS_ERRORS):  # its place expires on its own
                await self._backend.release(account_id, waiter, calls)
        elif self._backend is not self._fallback:
            await self._backend.release(account_id, waiter, calls)

    async def release(self, slot: Slot) -> None:
        waiter = Waiter(tenant=slot.tenant, token=slot.token)
        try:
            if slot.local and isinstance(self._backend, _RedisBackend):
                await self._fallback.release(slot.account_id, waiter, slot.calls)
                return
            try:
                await self._backend.release(slot.account_id, waiter, slot.calls)
            except REDIS_ERRORS:  # the slot expires on its own (timeout + margin)
                self._redis_down_until = time.monotonic() + settings.REDIS_RETRY_SECONDS
        finally:
            event = self._released.pop(slot.account_id, None)
            if event is not None:
                event.set()  # this process's waiters on the account ask again at once

    async def close(self) -> None:
        if isinstance(self._backend, _RedisBackend):
            await self._backend.close()
