"""The router: serve one job's images from the fastest healthy route, retrying, failing over and
falling back a tier as the tenant's policy allows.

Rules (PRODUCT.md "Routing and reliability"):
- Routes of the requested tier are tried fastest-healthy first (`HealthBook.order`); routes whose
  circuit is open are skipped until their cool-down ends.
- Retryable failures (429, 5xx, timeouts, connection errors, unusable 200s) are retried on the same
  route with exponential backoff and full jitter, honouring the upstream's Retry-After/RetryInfo;
  then the next route is tried. A 400 is never retried and never failed over.
- Images already delivered are kept: a retry or failover only asks for the ones still missing.
- A `404 NOT_FOUND` "model not found" means the model is retired on that account, not a transient
  error: the route is disabled at once (the `on_model_gone` hook writes it down and alerts; this
  process skips it before the catalog cache catches up) and the request fails over.
- Batch plans (`preferred_service_tier="flex"`) try flex routes first, whatever their latency.
- When every primary route is saturated (no upstream slot free right now) or has failed, the
  fallback tier's routes serve the rest, if the plan has any (the tenant's policy decided that).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

import httpx

from generation.engine.catalog import RoutePlan, RouteSpec
from generation.engine.health import HealthBook
from generation.engine.providers import provider_for
from generation.engine.providers.base import (
    ProviderImage,
    ProviderRequest,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamTimeout,
)
from generation.engine.upstream_limits import LimitWaitExceeded, UpstreamLimiter, Waiter

logger = logging.getLogger(__name__)

ATTEMPTS_PER_ROUTE = 3
BACKOFF_BASE = 0.25
BACKOFF_MAX = 4.0
MAX_HONOURED_RETRY_AFTER = 20.0
# How long this process skips a route whose model answered 404 "not found", by itself: long enough
# for every process's catalog cache to see the route disabled in the database.
GONE_SKIP_SECONDS = 30.0

ModelGoneHook = Callable[[RouteSpec, UpstreamError], Awaitable[None]]


@dataclass
class RoutedImage:
    image: ProviderImage
    route: RouteSpec


@dataclass
class Attempt:
    route: str
    tier: str
    ok: bool
    ms: int
    images: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Outcome:
    images: list[RoutedImage] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    fallback_reason: str = ""
    error: UpstreamError | None = None  # set when images are missing
    usage: dict = field(default_factory=dict)
    upstream_cost: Decimal = Decimal("0")
    service_tier: str | None = None  # Google's service tier that served the (first) images

    @property
    def served_route(self) -> RouteSpec | None:
        return self.images[0].route if self.images else None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt))


class ClientPool:
    """Several httpx clients used in turn. httpcore's connection pool rescans every connection on
    each request start and end (quadratic in connections held), which at ~200 upstream calls in
    flight cost more CPU than the calls themselves; shards of ~32 connections keep that negligible."""

    def __init__(self, *, shards: int = 8, connections_per_shard: int = 128) -> None:
        limits = httpx.Limits(
            max_connections=connections_per_shard, max_keepalive_connections=32, keepalive_expiry=30
        )
        self._clients = [
            httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120, connect=10), follow_redirects=False)
            for _ in range(shards)
        ]
        self._next = itertools.cycle(self._clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._next)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


class Router:
    def __init__(
        self,
        *,
        clients: ClientPool,
        health: HealthBook,
        limiter: UpstreamLimiter,
        on_model_gone: ModelGoneHook | None = None,
    ):
        self.clients = clients
        self.health = health
        self.limiter = limiter
        self.on_model_gone = on_model_gone
        self._gone: dict[int, float] = {}  # route id -> monotonic time until which it is skipped

    def _is_gone(self, route: RouteSpec) -> bool:
        until = self._gone.get(route.id)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._gone[route.id]
            return False
        return True

    async def _model_gone(self, route: RouteSpec, error: UpstreamError) -> None:
        self._gone[route.id] = time.monotonic() + GONE_SKIP_SECONDS
        logger.warning("route %s: upstream says the model is gone (%s); disabling it", route.label, error)
        if self.on_model_gone is not None:
            try:
                await self.on_model_gone(route, error)
            except Exception:  # failing over matters more than recording it
                logger.exception("route %s: could not record the retired model", route.label)

    async def execute(
        self,
        plan: RoutePlan,
        request: ProviderRequest,
        *,
        deadline: float,
        outcome: Outcome | None = None,
        weight: int = 1,
    ) -> Outcome:
        """`outcome` may be the caller's: if the job is canceled mid-way, the images already
        delivered by earlier calls are still in it (and are delivered and billed). `weight` is the
        tenant's share of a contended provider account (the fair queue in upstream_limits)."""
        outcome = outcome if outcome is not None else Outcome()
        remaining = request.count
        primary = [r for r in self.health.order(plan.primary) if not self._is_gone(r)]
        fallback = [r for r in self.health.order(plan.fallback) if not self._is_gone(r)]
        if plan.preferred_service_tier:  # stable: health order within each group
            primary.sort(key=lambda r: r.service_tier != plan.preferred_service_tier)
            fallback.sort(key=lambda r: r.service_tier != plan.preferred_service_tier)
        queue: list[tuple[RouteSpec, bool]] = [(r, False) for r in primary] + [(r, True) for r in fallback]
        saturated_primary = False

        # Saturation: if no primary route has a free slot right now but a fallback route does,
        # serve from the fallback tier rather than queueing behind the primary's limits.
        preacquired = None
        if fallback:
            preacquired, saturated_primary = await self._first_free(
                primary, fallback, remaining, request.tenant, weight
            )
            if preacquired and preacquired[1] is True:
                queue = [(preacquired[0], True)] + [(r, fb) for r, fb in queue if r is not preacquired[0]]
                outcome.fallback_reason = f"{plan.tier} tier saturated"

        for route, is_fallback in queue:
            if remaining == 0:
                break
            slot = None
            if preacquired and preacquired[0] is route:
                slot, preacquired = preacquired[2], None
            elif self._is_gone(route):
                outcome.attempts.append(Attempt(route.label, route.tier, False, 0, error="model_gone"))
                continue
            elif not self.health.available(route.id, tenant=request.tenant):
                outcome.attempts.append(Attempt(route.label, route.tier, False, 0, error="circuit_open"))
                continue
            if is_fallback and not outcome.fallback_reason:
                outcome.fallback_reason = (
                    f"{plan.tier} tier saturated" if saturated_primary else f"{plan.tier} tier unavailable"
                )
            remaining, stop = await self._serve_from(
                route, request, remaining, outcome, slot, deadline, weight
            )
            if stop:
                break
        if preacquired:
            await self.limiter.release(preacquired[2])
        if remaining and outcome.error is None:
            outcome.error = UpstreamError("No upstream route was available before the deadline.")
        return outcome

    async def _first_free(
        self, primary, fallback, images, tenant: str, weight: int
    ) -> tuple[tuple | None, bool]:
        """A slot free right now (and not owed to a waiting tenant with a better claim)."""
        for route in primary:
            if self.health.available(route.id, tenant=tenant):
                slot, _ = await self.limiter.try_acquire(route, images, Waiter(tenant, weight))
                if slot is not None:
                    return (route, False, slot), False
        for route in fallback:
            if self.health.available(route.id, tenant=tenant):
                slot, _ = await self.limiter.try_acquire(route, images, Waiter(tenant, weight))
                if slot is not None:
                    return (route, True, slot), True
        return None, True

    async def _serve_from(
        self,
        route: RouteSpec,
        request: ProviderRequest,
        remaining: int,
        outcome: Outcome,
        slot,
        deadline: float,
        weight: int = 1,
    ) -> tuple[int, bool]:
        """Try one route up to ATTEMPTS_PER_ROUTE times. Returns (images still missing, stop?)."""
        provider = provider_for(route.target)
        for attempt in range(ATTEMPTS_PER_ROUTE):
            if time.monotonic() >= deadline:
                if slot is not None:  # pre-acquired for us: give it back, never leak it
                    await self.limiter.release(slot)
                return remaining, True
            if slot is None:
                try:
                    slot = await self.limiter.acquire(
                        route, remaining, deadline=deadline, tenant=request.tenant, weight=weight
                    )
                except LimitWaitExceeded as exc:
                    outcome.error = UpstreamError(str(exc))
                    return remaining, False
            started = time.monotonic()
            self.health.started(route.id)
            error: UpstreamError | None = None
            try:
                call = provider(self.clients.next(), route.target, replace(request, count=remaining))
                result = await asyncio.wait_for(call, timeout=max(0.1, deadline - time.monotonic()))
            except UpstreamError as exc:
                error = exc
            except TimeoutError:
                error = UpstreamTimeout("job deadline reached during the upstream call")
            except asyncio.CancelledError:
                self.health.abandoned(route.id)
                raise
            finally:
                await self.limiter.release(slot)
                slot = None
            ms = int((time.monotonic() - started) * 1000)
            if error is not None:
                if error.route_fault:
                    self.health.finished(
                        route.id, ok=False, latency_ms=ms, error=error.code, tenant=request.tenant
                    )
                else:  # a 400 is the request's fault (one tenant's prompts): not the route's health
                    self.health.abandoned(route.id)
                outcome.attempts.append(Attempt(route.label, route.tier, False, ms, error=error.code))
                outcome.error = error
                if not error.route_fault:
                    return remaining, True  # a 400: the request is wrong everywhere; never retry
                if isinstance(error, UpstreamModelNotFound):
                    await self._model_gone(route, error)
                    return remaining, False  # retired on this account: the next route, now
                if not error.retryable:
                    return remaining, False  # this route cannot serve: fail over at once
                wait = _backoff(attempt, error.retry_after)
                if attempt + 1 >= ATTEMPTS_PER_ROUTE or wait > MAX_HONOURED_RETRY_AFTER:
                    return remaining, False
                if time.monotonic() + wait >= deadline:
                    return remaining, False
                await asyncio.sleep(wait)
                continue

            got = len(result.images)
            delivered = sum(1 for image in result.images if not image.filtered)
            self.health.finished(route.id, ok=True, latency_ms=ms, images=delivered, tenant=request.tenant)
            outcome.attempts.append(Attempt(route.label, route.tier, True, ms, images=got))
            outcome.images += [RoutedImage(image, route) for image in result.images]
            for key, value in result.usage.items():
                if isinstance(value, int | float):
                    outcome.usage[key] = outcome.usage.get(key, 0) + value
            outcome.upstream_cost += (
                result.upstream_cost
                if result.upstream_cost is not None
                else route.upstream_cost(request.resolution, result.usage, delivered, result.service_tier)
            )
            if outcome.service_tier is None and result.service_tier:
                outcome.service_tier = result.service_tier
            remaining -= got
            if remaining <= 0:
                outcome.error = None
                return 0, True
            outcome.error = result.error
            if result.error is not None and not result.error.retryable:
                return remaining, False
            await asyncio.sleep(_backoff(attempt, result.error.retry_after if result.error else None))
        return remaining, False
