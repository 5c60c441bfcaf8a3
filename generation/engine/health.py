"""Per-route health: latency EWMA, recent error rate, in-flight calls and a circuit breaker.

Each worker process keeps its own book (it sees its own calls immediately); an opened circuit is
also published to Redis with the cool-down as TTL, so every process stops sending to a failing
route within a second; a route closed to one tenant alone (its own failures) is shared the same
way, so that tenant fails over in every process, not only in the one that saw it. The sharing
runs as `share()` on the runner's event loop with async Redis (one pipelined round trip, never a
blocking call on the loop); while Redis is down each process just keeps its own book.
A route whose circuit is open is skipped until its cool-down ends; then one probe call at a time
is let through (half-open): success closes the circuit, failure re-opens it with a longer cool-down.
Counters are flushed to `RouteStatsMinute` for the operator dashboard.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from config.redis_client import get_redis

logger = logging.getLogger(__name__)

PROBE_LEASE_SECONDS = 30.0
EWMA_ALPHA = 0.2
LATENCY_STEP = 1.25  # routes whose latencies differ by less than this factor count as equally fast
WINDOW_SECONDS = 60.0
MIN_CALLS_FOR_RATE = 5
FAILURE_RATE_TO_OPEN = 0.5
CONSECUTIVE_FAILURES_TO_OPEN = 3
COOLDOWN_START = 5.0
COOLDOWN_MAX = 120.0


def _circuit_key(route_id: int) -> str:
    return f"{settings.REDIS_PREFIX}:circuit:{route_id}"


def _tenants_key(route_id: int) -> str:
    """Hash: tenant -> unix ms until which the route is closed to that tenant alone."""
    return f"{settings.REDIS_PREFIX}:circuit:{route_id}:tenants"


def circuits_open(route_ids: list[int]) -> set[int]:
    """Routes whose circuit some worker has opened (shared through Redis; empty without Redis).
    For dashboards: the web process has no HealthBook of its own."""
    client = get_redis()
    if client is None or not route_ids:
        return set()
    try:
        flags = client.mget([_circuit_key(route_id) for route_id in route_ids])
    except Exception:  # noqa: BLE001 - a dashboard must render even when Redis is down
        return set()
    return {route_id for route_id, flag in zip(route_ids, flags, strict=True) if flag}


@dataclass
class RouteState:
    ewma_ms: float | None = None
    in_flight: int = 0
    consecutive_failures: int = 0
    recent: deque = field(default_factory=deque)  # (monotonic time, ok, tenant)
    # Tenants whose own failures closed the route to them alone, until then (monotonic time).
    tenant_blocked: dict = field(default_factory=dict)
    open_until: float = 0.0
    cooldown: float = COOLDOWN_START
    probe_until: float = 0.0  # a probe call is in flight until then (a lease, in case it never ends)
    # For the minute flush: calls, errors, images, latency_ms_sum since the last flush.
    pending: list = field(default_factory=lambda: [0, 0, 0, 0])

    def error_rate(self, now: float) -> float:
        while self.recent and now - self.recent[0][0] > WINDOW_SECONDS:
            self.recent.popleft()
        if len(self.recent) < MIN_CALLS_FOR_RATE:
            return 0.0
        return sum(1 for _, ok, _ in self.recent if not ok) / len(self.recent)

    def only_tenants_fault(self, tenant: str) -> bool:
        """Every recent failure is this tenant's while another tenant's calls succeed: its own
        requests are failing (a prompt the model chokes on), not the route."""
        if not tenant:
            return False
        failing = {who for _, ok, who in self.recent if not ok}
        others_ok = any(ok and who != tenant for _, ok, who in self.recent)
        return failing == {tenant} and others_ok


class HealthBook:
    def __init__(
        self, *, cooldown_start: float = COOLDOWN_START, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`clock` is monotonic seconds; tests pass their own to move time without sleeping."""
        self.cooldown_start = cooldown_start
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[int, RouteState] = {}
        self._remote: set[int] = set()  # routes another process has open (see share())
        self._outbox: dict[int, float] = {}  # route id -> seconds open (0: closed), to publish
        # Routes closed to one tenant: (route id, tenant) -> seconds, to publish; and as read back
        # from every process: route id -> {tenant: unix time until}.
        self._tenant_outbox: dict[tuple[int, str], float] = {}
        self._remote_tenants: dict[int, dict[str, float]] = {}

    def state(self, route_id: int) -> RouteState:
        with self._lock:
            return self._states.setdefault(route_id, RouteState(cooldown=self.cooldown_start))

    def _remote_is_open(self, route_id: int, now: float) -> bool:
        """Opened by another process (as of the last `share()`); never a network call."""
        return route_id in self._remote

    async def share(self, client) -> None:
        """Publish the circuits this process opened or closed, then read which routes any process
        has open. `client` is a redis.asyncio client; errors propagate (the caller backs off)."""
        with self._lock:
            outbox, self._outbox = self._outbox, {}
            tenant_outbox, self._tenant_outbox = self._tenant_outbox, {}
            route_ids = list(self._states)
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for route_id, open_for in outbox.items():
            if open_for:
                pipe.set(_circuit_key(route_id), "1", px=int(open_for * 1000))
            else:
                pipe.delete(_circuit_key(route_id))
        for (route_id, tenant), blocked_for in tenant_outbox.items():
            pipe.hset(_tenants_key(route_id), tenant, int((now + blocked_for) * 1000))
            pipe.pexpire(_tenants_key(route_id), int(blocked_for * 1000) + 60_000)
        if route_ids:
            pipe.mget([_circuit_key(route_id) for route_id in route_ids])
            for route_id in route_ids:
                pipe.hgetall(_tenants_key(route_id))
        results = await pipe.execute() if len(pipe) else []
        if not route_ids:
            return
        reads = results[len(results) - len(route_ids) - 1 :]
        flags, tenant_maps = reads[0], reads[1:]
        self._remote = {rid for rid, flag in zip(route_ids, flags, strict=True) if flag}
        remote_tenants: dict[int, dict[str, float]] = {}
        for route_id, blocked in zip(route_ids, tenant_maps, strict=True):
            live = {
                (t.decode() if isinstance(t, bytes) else t): int(until) / 1000
                for t, until in blocked.items()
                if int(until) / 1000 > now
            }
            if live:
                remote_tenants[route_id] = live
        self._remote_tenants = remote_tenants

    def available(self, route_id: int, *, tenant: str = "") -> bool:
        """May a call (of `tenant`) go to this route now? (Closed, or half-open with no probe in
        flight; and not closed to this tenant alone.)"""
        now = self._clock()
        state = self.state(route_id)
        with self._lock:
            if tenant and state.tenant_blocked.get(tenant, 0.0) > now:
                return False
            if tenant and self._remote_tenants.get(route_id, {}).get(tenant, 0.0) > time.time():
                return False  # another process closed the route to this tenant
            if state.open_until:
                return state.open_until <= now and state.probe_until <= now
        return not self._remote_is_open(route_id, now)

    def order(self, routes: list) -> list:
        """Fastest healthy first. Healthy (closed-circuit) routes are ranked by latency EWMA in
        steps of 25%, so routes about as fast as each other keep the operator's `position` order;
        a route without measurements is assumed as fast as the best measured one (position decides)."""
        now = self._clock()
        measured = [ewma for r in routes if (ewma := self.state(r.id).ewma_ms) is not None]
        assumed = min(measured) if measured else 1.0

        def key(route):
            state = self.state(route.id)
            closed = state.open_until <= now and not self._remote_is_open(route.id, now)
            latency = max(assumed if state.ewma_ms is None else state.ewma_ms, 1.0)
            return (0 if closed else 1, round(math.log(latency, LATENCY_STEP)), route.position)

        return sorted(routes, key=key)

    def started(self, route_id: int) -> None:
        now = self._clock()
        state = self.state(route_id)
        with self._lock:
            state.in_flight += 1
            if state.open_until and state.open_until <= now:
                state.probe_until = now + PROBE_LEASE_SECONDS  # this call is the half-open probe

    def abandoned(self, route_id: int) -> None:
        """A call that ended without an answer (its job was canceled): neither success nor failure."""
        state = self.state(route_id)
        with self._lock:
            state.in_flight = max(0, state.in_flight - 1)
            state.probe_until = 0.0

    def finished(
        self,
        route_id: int,
        *,
        ok: bool,
        latency_ms: float,
        images: int = 0,
        error: str = "",
        tenant: str = "",
    ) -> None:
        now = self._clock()
        state = self.state(route_id)
        opened_for = 0.0
        with self._lock:
            state.in_flight = max(0, state.in_flight - 1)
            state.recent.append((now, ok, tenant))
            state.pending[0] += 1
            state.pending[2] += images
            state.pending[3] += int(latency_ms)
            if ok:
                state.ewma_ms = (
                    latency_ms
                    if state.ewma_ms is None
                    else (EWMA_ALPHA * latency_ms + (1 - EWMA_ALPHA) * state.ewma_ms)
                )
                state.consecutive_failures = 0
                if state.open_until:  # a successful probe closes the circuit
                    state.open_until, state.cooldown, state.probe_until = 0.0, self.cooldown_start, 0.0
                    closed = True
                else:
                    return
            else:
                closed = False
        if closed:
            logger.warning("route %s: probe succeeded, circuit closed", route_id)
            self._publish(route_id, 0)
            return
        with self._lock:
            state.pending[1] += 1
            state.consecutive_failures += 1
            was_probe = bool(state.open_until)
            tripped = (
                was_probe
                or state.consecutive_failures >= CONSECUTIVE_FAILURES_TO_OPEN
                or state.error_rate(now) >= FAILURE_RATE_TO_OPEN
            )
            if tripped and not was_probe and state.only_tenants_fault(tenant):
                # One tenant's failures close the route to that tenant only (it fails over), for a
                # short while; everyone else keeps using it.
                state.tenant_blocked[tenant] = now + self.cooldown_start
                self._tenant_outbox[(route_id, tenant)] = self.cooldown_start
                state.consecutive_failures = 0
                state.recent = deque(entry for entry in state.recent if entry[2] != tenant)
                tripped = False
            if tripped:
                if was_probe:
                    state.cooldown = min(state.cooldown * 2, COOLDOWN_MAX)
                state.open_until = now + state.cooldown
                state.probe_until = 0.0
                opened_for = state.cooldown
        if opened_for:
            logger.warning(
                "route %s: circuit opened for %.0f s after %s (%d consecutive failures)",
                route_id,
                opened_for,
                error or "a failure",
                state.consecutive_failures,
            )
            self._publish(route_id, opened_for)

    def _publish(self, route_id: int, open_for: float) -> None:
        """Queue the circuit state for `share()`: a key that expires with the cool-down."""
        with self._lock:
            self._outbox[route_id] = open_for
            if not open_for:
                self._remote.discard(route_id)

    def snapshot(self) -> dict[int, dict]:
        now = self._clock()
        with self._lock:
            return {
                route_id: {
                    "ewma_ms": state.ewma_ms,
                    "in_flight": state.in_flight,
                    "error_rate": state.error_rate(now),
                    "circuit": "open"
                    if state.open_until > now
                    else ("half_open" if state.open_until else "closed"),
                }
                for route_id, state in self._states.items()
            }

    def drain_pending(self) -> dict[int, list[int]]:
        """Counters since the last call, for the per-minute stats table."""
        with self._lock:
            out = {}
            for route_id, state in self._states.items():
                if state.pending[0]:
                    out[route_id] = state.pending
                    state.pending = [0, 0, 0, 0]
            return out
