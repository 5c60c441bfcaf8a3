"""Reads for the generation API: jobs of one organization, and the catalog as a tenant sees it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.db.models import Count, Prefetch, Sum
from django.utils import timezone

from generation.engine.catalog import (
    FALLBACK_TIERS,
    FLEX_COST_FACTOR,
    SERVICE_TIERS,
    TIER_ALIASES,
    catalog_snapshot,
)
from generation.engine.lifecycle import models_pinned
from generation.models import Image, Job
from generation.pagination import newest_first_page
from tenants.errors import NotFound
from tenants.models import ALL_TIERS, Organization
from tenants.selectors import organization_limits

_WITH_IMAGES = Prefetch("images", queryset=Image.objects.order_by("index"))


def job_get(*, organization: Organization, public_id: str) -> Job:
    """Another organization's job is indistinguishable from a missing one."""
    job = (
        Job.objects.for_org(organization)
        .select_related("organization")
        .prefetch_related(_WITH_IMAGES)
        .filter(public_id=public_id)
        .first()
    )
    if job is None:
        raise NotFound(f"No generation {public_id}.", param="id")
    return job


def job_is_finished(*, job_pk: int) -> bool:
    return Job.objects.filter(pk=job_pk, status__in=Job.TERMINAL).exists()


def job_list(
    *, organization: Organization, status: str | None, cursor: str | None, limit: int
) -> tuple[list[Job], bool]:
    """Newest first. `cursor` is the id of the last job of the previous page (ids sort by time)."""
    queryset = Job.objects.for_org(organization).select_related("organization").prefetch_related(_WITH_IMAGES)
    if status:
        queryset = queryset.filter(status=status)
    return newest_first_page(queryset, cursor=cursor, limit=limit)


def upstream_cost_by_service_tier(*, since) -> dict:
    """Live upstream cost per Google service tier since `since`, and what flex saved: flex is
    billed at half the standard price, so the saving equals what the flex jobs cost."""
    rows = {
        row["service_tier"] or "standard": row
        for row in Job.objects.filter(livemode=True, finished_at__gte=since)
        .values("service_tier")
        .annotate(jobs=Count("id"), cost=Sum("upstream_cost"), revenue=Sum("amount"))
    }
    zero = Decimal("0")
    tiers = [
        {
            "service_tier": tier,
            "jobs": rows.get(tier, {}).get("jobs", 0),
            "cost": rows.get(tier, {}).get("cost") or zero,
            "revenue": rows.get(tier, {}).get("revenue") or zero,
        }
        for tier in SERVICE_TIERS
    ]
    for tier in tiers:
        tier["margin"] = tier["revenue"] - tier["cost"]
    flex_cost = next(t["cost"] for t in tiers if t["service_tier"] == "flex")
    return {"tiers": tiers, "flex_saving": flex_cost / FLEX_COST_FACTOR - flex_cost}


def models_for_organization(*, organization: Organization) -> dict:
    limits = organization_limits(organization=organization)
    plan = organization.plan
    today = timezone.now().date()
    snapshot = catalog_snapshot()
    tiers = [
        {
            "id": tier,
            "object": "tier",
            "allowed": tier in limits.allowed_tiers,
            "price_per_image": str(plan.price_for(tier)),
            "price_per_edit_image": str(plan.edit_price_for(tier)),  # requests with input images
            "currency": plan.currency,
            "fallback_tiers": [str(t) for t in FALLBACK_TIERS.get(tier, [])],
            "aliases": sorted(alias for alias, target in TIER_ALIASES.items() if target == tier),
        }
        for tier in ALL_TIERS
    ]
    models: dict[str, dict] = {}
    for route in snapshot.routes:
        entry = models.get(route.model_id)
        if entry is None:
            caps = route.capabilities
            entry = models[route.model_id] = {
                "id": route.model_id,
                "object": "model",
                "tiers": [],
                "lifecycle": "retired" if route.is_retired(today) else route.lifecycle,
                "shutdown_date": route.shutdown_date.isoformat() if route.shutdown_date else None,
                "successor": route.successor_model_id,
                "capabilities": {
                    "aspect_ratios": caps.get("aspect_ratios", []),
                    "resolutions": caps.get("resolutions", []),
                    "max_images": caps.get("max_images", 1),
                    "output_formats": caps.get("output_formats", []),
                    "seed": bool(caps.get("seed")),
                    "negative_prompt": bool(caps.get("negative_prompt")),
                    "safety_levels": caps.get("safety_levels", []),
                    "inputs": {
                        "max_images": route.input_limits.max_images,
                        "mask": route.input_limits.mask,
                        "mime_types": list(route.input_limits.mime_types),
                        "max_bytes": route.input_limits.max_bytes,
                        "max_pixels": route.input_limits.max_pixels,
                        "multi_turn": bool((caps.get("inputs") or {}).get("multi_turn")),
                    },
                },
            }
        if route.tier not in entry["tiers"]:
            entry["tiers"].append(route.tier)
    for info in snapshot.models.values():
        # Retired models without a route left still answer "retired, successor …" when pinned.
        if info.model_id not in models and info.is_retired(today):
            models[info.model_id] = {
                "id": info.model_id,
                "object": "model",
                "tiers": [],
                "lifecycle": "retired",
                "shutdown_date": info.shutdown_date.isoformat() if info.shutdown_date else None,
                "successor": info.successor_model_id,
                "capabilities": None,
            }
    pinned = {p.model_id: p for p in models_pinned(organization=organization, today=today)}
    for model_id, entry in models.items():
        entry["pinned"] = model_id in pinned
        shutdown = entry["shutdown_date"]
        entry["days_until_shutdown"] = (
            (date.fromisoformat(shutdown) - today).days
            if shutdown and entry["lifecycle"] != "retired"
            else None
        )
    return {"object": "list", "tiers": tiers, "data": sorted(models.values(), key=lambda m: m["id"])}
