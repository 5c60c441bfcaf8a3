"""Reads of the upstream catalog: which routes may serve a request, and what they can honour.

The catalog is cached per process for a few seconds (`CATALOG_TTL_SECONDS`), so the hot path does
not query four tables per image while admin edits still take effect within seconds. Credentials
are resolved when the snapshot is built and only ever held in memory.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.utils import timezone

from generation.engine.credentials import account_credentials
from generation.engine.providers.base import Credentials, Target
from generation.errors import ModelRetired, UnknownModel
from generation.models import ProviderAccount, Route, UpstreamModel
from generation.params import GenerationParams
from tenants.errors import InvalidRequest, PermissionDenied
from tenants.models import Tier

CATALOG_TTL_SECONDS = 5.0

# Names customers may send as `model` that mean a tier rather than a concrete model.
TIER_ALIASES = {
    "fast": Tier.FAST,
    "standard": Tier.STANDARD,
    "ultra": Tier.ULTRA,
    "imagen-4-fast": Tier.FAST,
    "imagen-4": Tier.STANDARD,
    "imagen-4-standard": Tier.STANDARD,
    "imagen-4-ultra": Tier.ULTRA,
}

# Where a saturated or failing tier may be served from, when the tenant's policy allows it.
FALLBACK_TIERS: dict[str, list[str]] = {Tier.FAST: [Tier.STANDARD], Tier.STANDARD: [], Tier.ULTRA: []}

# Request parameters checked against route capabilities, in the order errors are reported.
_OPTIONAL_FEATURES = ("seed", "negative_prompt")

# Google's service tiers (route option "service_tier"). Flex costs about half and may be shed or
# take minutes, so only batch items (which can wait) use it; priority costs more (the route's
# "priority_multiplier") and is served at standard when Google's priority capacity runs out.
SERVICE_TIERS = ("standard", "flex", "priority")
FLEX_COST_FACTOR = Decimal("0.5")
DEFAULT_PRIORITY_MULTIPLIER = Decimal("1.8")


@dataclass(frozen=True)
class ModelInfo:
    """A catalog model whether or not it has an enabled route (a pinned, retired model still
    answers "retired on …, successor …" after catalog_sync disabled its routes)."""

    model_id: str
    lifecycle: str
    shutdown_date: date | None
    successor_model_id: str | None

    def is_retired(self, today: date) -> bool:
        if self.lifecycle == UpstreamModel.Lifecycle.RETIRED:
            return True
        return self.shutdown_date is not None and today >= self.shutdown_date


@dataclass(frozen=True)
class InputLimits:
    """A model's input-image capabilities, from `capabilities["inputs"]` in the catalog:
    {"max_images": 14, "mask": true, "mime_types": [...], "max_bytes": ..., "max_pixels": ...}.
    A model without the key takes no input images (Imagen's :predict)."""

    max_images: int = 0
    mask: bool = False
    mime_types: tuple[str, ...] = ()
    max_bytes: int = 0
    max_pixels: int = 0

    @classmethod
    def of(cls, capabilities: dict) -> InputLimits:
        inputs = capabilities.get("inputs") or {}
        return cls(
            max_images=int(inputs.get("max_images", 0)),
            mask=bool(inputs.get("mask", False)),
            mime_types=tuple(inputs.get("mime_types", ())),
            max_bytes=int(inputs.get("max_bytes", 0)),
            max_pixels=int(inputs.get("max_pixels", 0)),
        )

    @classmethod
    def strictest(cls, routes: list[RouteSpec]) -> InputLimits:
        """Limits every route of a plan honours, so failover never meets an input it refuses."""
        limits = [route.input_limits for route in routes]
        if not limits:
            return cls()
        types = set(limits[0].mime_types)
        for limit in limits[1:]:
            types &= set(limit.mime_types)
        return cls(
            max_images=min(limit.max_images for limit in limits),
            mask=all(limit.mask for limit in limits),
            mime_types=tuple(sorted(types)),
            max_bytes=min(limit.max_bytes for limit in limits),
            max_pixels=min(limit.max_pixels for limit in limits),
        )


@dataclass(frozen=True)
class RouteSpec:
    id: int
    tier: str
    position: int
    label: str
    account_id: int
    account_name: str
    account_kind: str
    max_concurrency: int
    requests_per_minute: int | None
    images_per_minute: int | None
    model_id: str
    lifecycle: str
    shutdown_date: date | None
    successor_model_id: str | None
    capabilities: dict
    cost_per_image: dict
    token_prices: dict
    target: Target
    has_credentials: bool

    @property
    def is_sandbox(self) -> bool:
        return self.account_kind == ProviderAccount.Kind.SANDBOX

    @property
    def service_tier(self) -> str:
        """The Google service tier this route asks for ("standard" when the option is unset)."""
        if self.is_sandbox or self.target.protocol != UpstreamModel.Protocol.GENERATE_CONTENT:
            return "standard"
        value = str(self.target.options.get("service_tier") or "standard").lower()
        return value if value in SERVICE_TIERS else "standard"

    def service_tier_factor(self, served: str | None) -> Decimal:
        """Price factor over the standard tier for the tier that actually served the call."""
        if served == "flex":
            return FLEX_COST_FACTOR
        if served == "priority":
            try:
                return Decimal(
                    str(self.target.options.get("priority_multiplier", DEFAULT_PRIORITY_MULTIPLIER))
                )
            except ArithmeticError:
                return DEFAULT_PRIORITY_MULTIPLIER
        return Decimal(1)

    def is_retired(self, today: date) -> bool:
        if self.lifecycle == UpstreamModel.Lifecycle.RETIRED:
            return True
        return self.shutdown_date is not None and today >= self.shutdown_date

    def unsupported_param(self, params: GenerationParams) -> str | None:
        """The first parameter this route cannot honour, or None."""
        caps = self.capabilities
        if params.aspect_ratio not in caps.get("aspect_ratios", []):
            return "aspect_ratio"
        if params.resolution not in caps.get("resolutions", []):
            return "resolution"
        if params.count > caps.get("max_images", 1):
            return "count"
        if params.output_format not in caps.get("output_formats", []):
            return "output_format"
        for feature in _OPTIONAL_FEATURES:
            if getattr(params, feature) is not None and not caps.get(feature, False):
                return feature
        if params.safety_level and params.safety_level not in caps.get("safety_levels", []):
            return "safety_level"
        if params.person_generation and params.person_generation not in caps.get("person_generation", []):
            return "person_generation"
        inputs = self.input_limits
        if len(params.images) > inputs.max_images:
            return "images"
        if params.mask and not inputs.mask:
            return "mask"
        return None

    @property
    def input_limits(self) -> InputLimits:
        """What this route's model accepts as input images (none unless the catalog says so)."""
        return InputLimits.of(self.capabilities)

    def upstream_cost(
        self, resolution: str, usage: dict | None, images: int, service_tier: str | None = None
    ) -> Decimal:
        """What we paid, in USD: token counts x the model's token prices (USD per 1M tokens) when
        the upstream reported them, else the per-image table; times the served service tier's
        factor (flex -50%, priority the route's multiplier). Thought tokens are priced at
        "thinking", else at the text-output rate, as Google bills them."""
        if self.is_sandbox or images == 0:
            return Decimal("0")
        factor = self.service_tier_factor(service_tier)
        prices = self.token_prices
        if usage and prices and usage.get("imageTokenCount"):
            million = Decimal(1_000_000)
            image_tokens = Decimal(usage.get("imageTokenCount", 0))
            text_out = Decimal(usage.get("candidatesTokenCount", 0)) - image_tokens
            thoughts = Decimal(usage.get("thoughtsTokenCount", 0))
            text_price = Decimal(prices.get("text_output", "0"))
            cost = (
                image_tokens * Decimal(prices.get("image_output", "0"))
                + Decimal(usage.get("promptTokenCount", 0)) * Decimal(prices.get("input", "0"))
                + max(text_out, Decimal(0)) * text_price
                + thoughts * Decimal(prices.get("thinking", text_price))
            ) / million
            return cost * factor
        value = self.cost_per_image.get(resolution)
        return Decimal(str(value)) * images * factor if value is not None else Decimal("0")


def _effective_capabilities(model: UpstreamModel, kind: str) -> dict:
    caps = dict(model.capabilities)
    if kind == ProviderAccount.Kind.GEMINI_API:
        for feature in caps.get("vertex_only", []):
            caps[feature] = [] if isinstance(caps.get(feature), list) else False
    return caps


@dataclass
class CatalogSnapshot:
    routes: list[RouteSpec] = field(default_factory=list)
    built_at: float = 0.0
    models: dict[str, ModelInfo] = field(default_factory=dict)

    def model_ids(self) -> set[str]:
        return {route.model_id for route in self.routes}


def build_snapshot() -> CatalogSnapshot:
    routes = []
    queryset = (
        Route.objects.filter(enabled=True, account__enabled=True)
        .exclude(model__lifecycle=UpstreamModel.Lifecycle.DISCOVERED)  # never routed until priced
        .select_related("account", "model", "model__successor")
    )
    models = {
        m.model_id: ModelInfo(
            model_id=m.model_id,
            lifecycle=m.lifecycle,
            shutdown_date=m.shutdown_date,
            successor_model_id=m.successor.model_id if m.successor else None,
        )
        for m in UpstreamModel.objects.exclude(lifecycle=UpstreamModel.Lifecycle.DISCOVERED).select_related(
            "successor"
        )
    }
    for route in queryset:
        account, model = route.account, route.model
        credentials = account_credentials(account)
        protocol = "sandbox" if account.kind == ProviderAccount.Kind.SANDBOX else model.protocol
        caps = _effective_capabilities(model, account.kind)
        target = Target(
            kind=account.kind,
            protocol=protocol,
            base_url=account.effective_base_url,
            model=model.model_id,
            region=account.region,
            credentials=credentials or Credentials(),
            options={**account.options, **route.options},
            dimensions=caps.get("dimensions", {}),
            timeout_seconds=float(account.timeout_seconds),
        )
        routes.append(
            RouteSpec(
                id=route.id,
                tier=route.tier,
                position=route.position,
                label=f"{account.name}/{model.model_id}",
                account_id=account.id,
                account_name=account.name,
                account_kind=account.kind,
                max_concurrency=account.max_concurrency,
                requests_per_minute=account.requests_per_minute,
                images_per_minute=account.images_per_minute,
                model_id=model.model_id,
                lifecycle=model.lifecycle,
                shutdown_date=model.shutdown_date,
                successor_model_id=model.successor.model_id if model.successor else None,
                capabilities=caps,
                cost_per_image=model.cost_per_image,
                token_prices=model.token_prices,
                target=target,
                has_credentials=credentials is not None,
            )
        )
    routes.sort(key=lambda r: (r.tier, r.position, r.id))
    return CatalogSnapshot(routes=routes, built_at=time.monotonic(), models=models)


_cache_lock = threading.Lock()
_cache: CatalogSnapshot | None = None


def catalog_snapshot() -> CatalogSnapshot:
    global _cache
    snapshot = _cache
    if snapshot is None or time.monotonic() - snapshot.built_at > CATALOG_TTL_SECONDS:
        with _cache_lock:
            if _cache is None or time.monotonic() - _cache.built_at > CATALOG_TTL_SECONDS:
                _cache = build_snapshot()
            snapshot = _cache
    return snapshot


def catalog_invalidate() -> None:
    global _cache
    with _cache_lock:
        _cache = None


def _usable(routes: list[RouteSpec], *, livemode: bool, today: date) -> list[RouteSpec]:
    live = [r for r in routes if not r.is_sandbox and r.has_credentials and not r.is_retired(today)]
    sandbox = [r for r in routes if r.is_sandbox and not r.is_retired(today)]
    if not livemode:
        return sandbox
    # Live keys use Google; only while no Google credentials are configured at all for these
    # routes (a fresh install) do they use the sandbox, which is never billed.
    return live if any(not r.is_sandbox and r.has_credentials for r in routes) else sandbox


@dataclass
class RoutePlan:
    """The routes that may serve one request, primary tier first, then allowed fallbacks."""

    tier: str
    model_id: str | None  # the concrete model that was pinned (after any automatic migration)
    primary: list[RouteSpec]
    fallback: list[RouteSpec]
    notice: str = ""  # e.g. why a pinned model was migrated
    # Routes asking for this Google service tier are tried first (batch items: "flex").
    preferred_service_tier: str | None = None


def _resolve_tier_or_model(model: str | None, tier: str | None) -> tuple[str | None, str | None]:
    if model:
        alias = TIER_ALIASES.get(model.strip().lower())
        if alias is not None:
            if tier and tier != alias:
                raise InvalidRequest(
                    f"model '{model}' means the {alias} tier but tier is '{tier}'.", param="tier"
                )
            return None, alias
        return model.strip(), tier
    return None, tier or Tier.FAST


def route_plan(
    *,
    params: GenerationParams,
    livemode: bool,
    allowed_tiers: list[str],
    fallback_policy: str,
    auto_migrate_models: bool,
    model: str | None = None,
    tier: str | None = None,
    snapshot: CatalogSnapshot | None = None,
    batch: bool = False,
) -> RoutePlan:
    """Choose the candidate routes and validate `params` against them. Raises a 400 naming the
    first parameter no candidate route can honour, before anything is reserved or queued.

    `batch`: the request is a batch item, which can wait: flex routes of the tier are tried first
    and priority routes are left out; interactive requests never use flex routes (unless the
    tier has nothing else)."""
    snapshot = snapshot or catalog_snapshot()
    today = timezone.now().date()
    model_id, tier = _resolve_tier_or_model(model, tier)
    notice = ""

    if model_id is not None:
        routes = [r for r in snapshot.routes if r.model_id == model_id and (tier is None or r.tier == tier)]
        info = snapshot.models.get(model_id)
        if not routes and info and not info.is_retired(today):
            # Known, not retired, but every route is off (e.g. disabled after a live 404).
            raise InvalidRequest(f"No route can serve the model '{model_id}' right now.", param="model")
        if not routes and not (info and info.is_retired(today)):
            known = sorted(snapshot.model_ids() | set(TIER_ALIASES))
            raise UnknownModel(f"Unknown model '{model_id}'. Known: {', '.join(known)}.", param="model")
        if all(r.is_retired(today) for r in routes) and (routes or info):
            retired = routes[0] if routes else info
            assert retired is not None  # noqa: S101 - the condition above guarantees it
            successor = retired.successor_model_id
            if not (auto_migrate_models and successor):
                raise ModelRetired(
                    f"Model '{model_id}' was retired"
                    + (f" on {retired.shutdown_date.isoformat()}" if retired.shutdown_date else "")
                    + (f"; its successor is '{successor}'" if successor else "")
                    + ". Pin the successor, or enable automatic model migration in your settings.",
                    param="model",
                )
            notice = f"'{model_id}' is retired; served by its successor '{successor}'."
            model_id = successor
            routes = [
                r for r in snapshot.routes if r.model_id == model_id and (tier is None or r.tier == tier)
            ]
            if not routes:  # the successor is not served (in this tier): say so, not IndexError
                raise ModelRetired(
                    f"Model '{retired.model_id}' was retired and its successor '{successor}' is not "
                    f"served{f' in the {tier} tier' if tier else ''}. Choose another model or tier.",
                    param="model",
                )
        tier = tier or routes[0].tier
        routes = [r for r in routes if r.tier == tier]
        fallback_tiers: list[str] = []  # a pinned model is never swapped for another tier's model
    else:
        routes = [r for r in snapshot.routes if r.tier == tier]
        fallback_tiers = FALLBACK_TIERS.get(tier or "", []) if fallback_policy != "deny" else []

    if tier not in allowed_tiers:
        raise PermissionDenied(
            f"Your plan does not include the {tier} tier (allowed: {', '.join(allowed_tiers)}).", param="tier"
        )
    primary = _usable(routes, livemode=livemode, today=today)
    if not primary:
        raise InvalidRequest(
            f"No route can serve the {tier} tier right now.", param="model" if model_id else "tier"
        )
    primary = _filter_supported(primary, params, tier)
    primary = _by_service_tier(primary, batch=batch)

    fallback: list[RouteSpec] = []
    for fallback_tier in fallback_tiers:
        if fallback_tier not in allowed_tiers and fallback_policy == "allow_billed_as_served":
            continue  # billing at a tier the plan does not include would be a surprise
        candidates = _usable(
            [r for r in snapshot.routes if r.tier == fallback_tier], livemode=livemode, today=today
        )
        fallback += [r for r in candidates if r.unsupported_param(params) is None]
    fallback = _by_service_tier(fallback, batch=batch) if fallback else fallback
    return RoutePlan(
        tier=tier,
        model_id=model_id,
        primary=primary,
        fallback=fallback,
        notice=notice,
        preferred_service_tier="flex" if batch else None,
    )


def _by_service_tier(routes: list[RouteSpec], *, batch: bool) -> list[RouteSpec]:
    """Batch items: flex first (the router keeps that order), never priority when anything else
    can serve. Interactive: no flex (minutes of latency, may be shed) when anything else can."""
    if batch:
        kept = [r for r in routes if r.service_tier != "priority"] or routes
        return sorted(kept, key=lambda r: r.service_tier != "flex")
    return [r for r in routes if r.service_tier != "flex"] or routes


def _filter_supported(routes: list[RouteSpec], params: GenerationParams, tier: str) -> list[RouteSpec]:
    supported = [r for r in routes if r.unsupported_param(params) is None]
    if supported:
        return supported
    # Name the parameter that the routes reject, with what they do accept.
    param = next(p for r in routes if (p := r.unsupported_param(params)))
    caps = routes[0].capabilities

    def union(key: str) -> list:
        # What any route of the tier accepts (Lite takes 1K, 2.1 takes 2K and 4K: "1K, 2K, 4K").
        values: list = []
        for route in routes:
            values += [v for v in route.capabilities.get(key) or [] if v not in values]
        return values

    accepted = {
        "aspect_ratio": union("aspect_ratios"),
        "resolution": union("resolutions"),
        "count": f"1-{caps.get('max_images', 1)}",
        "output_format": union("output_formats"),
        "safety_level": union("safety_levels"),
        "person_generation": union("person_generation"),
    }.get(param)
    value = getattr(params, param)
    detail = (
        f"; supported: {', '.join(accepted) if isinstance(accepted, list) else accepted}" if accepted else ""
    )
    if param in _OPTIONAL_FEATURES or param == "mask":
        message = f"{param} is not supported by the {tier} tier's models ({routes[0].model_id}){detail}."
    elif param == "images":
        limit = routes[0].input_limits.max_images
        message = (
            f"{len(params.images)} input images is more than the {tier} tier's model "
            f"({routes[0].model_id}) accepts ({limit})."
            if limit
            else f"images are not supported by the {tier} tier's model ({routes[0].model_id})."
        )
    else:
        message = f"{param} '{value}' is not supported by the {tier} tier{detail}."
    raise InvalidRequest(message, param=param)
