"""Stripe catalog sync (`manage.py stripe_sync`): one Product, one sum Billing Meter per tier, and for
each paid plan a metered monthly Price per tier plus its base Price, with the ids stored locally.

Idempotent: existing objects are found first (stored id, active meter with our event name, price
by lookup key) and reused when they match; a price whose amount changed is replaced by a new one
that takes over the lookup key (Stripe prices are immutable). Create calls carry idempotency keys
derived from what they create, so a crash between a create and our save cannot duplicate it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction

from billing import stripe_client
from billing.models import BillingMeter
from billing.services import plan_is_paid
from tenants.models import ALL_TIERS, Plan

PRODUCT_NAME = "Imagegate images"


def meter_event_name(tier: str) -> str:
    return f"imagegate_images_{tier}"


def price_lookup_key(plan: Plan, component: str) -> str:
    return f"imagegate_{plan.code}_{component}"


def dollars_to_cents_decimal(amount: Decimal) -> str:
    """Stripe's `unit_amount_decimal`: cents as a plain decimal string (0.0125 dollars -> "1.25")."""
    cents = (amount * 100).normalize()
    text = format(cents, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _key(*parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f"imagegate-sync-{parts[0]}-{digest}"


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _ensure_product(report: SyncReport) -> str:
    stored = Plan.objects.exclude(stripe_product_id="").values_list("stripe_product_id", flat=True).first()
    if stored:
        product = stripe_client.product_retrieve(product_id=stored)
        if product is not None and product.get("active", True):
            if product.get("name") != PRODUCT_NAME:
                stripe_client.product_update(
                    product_id=stored,
                    name=PRODUCT_NAME,
                    idempotency_key=_key("product-name", stored, PRODUCT_NAME),
                )
                report.updated.append(f"product {stored}")
            else:
                report.unchanged.append(f"product {stored}")
            return stored
    product = stripe_client.product_create(
        name=PRODUCT_NAME, metadata={"imagegate": "images"}, idempotency_key=_key("product", PRODUCT_NAME)
    )
    report.created.append(f"product {product['id']}")
    return product["id"]


def _ensure_meters(report: SyncReport) -> dict[str, str]:
    meters: dict[str, str] = {}
    active: list[dict[str, Any]] | None = None
    for tier in ALL_TIERS:
        event_name = meter_event_name(tier)
        row = BillingMeter.objects.filter(tier=tier).first()
        if row and row.event_name == event_name:
            meter = stripe_client.meter_retrieve(meter_id=row.stripe_meter_id)
            if (
                meter is not None
                and meter.get("status") == "active"
                and meter.get("event_name") == event_name
            ):
                meters[tier] = row.stripe_meter_id
                report.unchanged.append(f"meter {event_name}")
                continue
        if active is None:
            active = stripe_client.meter_list_active()
        # Stripe allows one active meter per event name, so an existing one is ours to reuse.
        found = next((m for m in active if m.get("event_name") == event_name), None)
        if found is None:
            found = stripe_client.meter_create(
                event_name=event_name,
                display_name=f"Imagegate {tier} images",
                idempotency_key=_key("meter", event_name),
            )
            report.created.append(f"meter {event_name} {found['id']}")
        else:
            report.updated.append(f"meter {event_name} {found['id']} (adopted)")
        BillingMeter.objects.update_or_create(
            tier=tier, defaults={"event_name": event_name, "stripe_meter_id": found["id"]}
        )
        meters[tier] = found["id"]
    return meters


def _price_matches(price: dict[str, Any], wanted: dict[str, Any]) -> bool:
    recurring = price.get("recurring") or {}
    wanted_recurring = wanted["recurring"]
    amount = price.get("unit_amount_decimal")
    if amount is None and price.get("unit_amount") is not None:
        amount = str(price["unit_amount"])
    return (
        price.get("active", True)
        and price.get("product") == wanted["product"]
        and price.get("currency") == wanted["currency"]
        and amount is not None
        and Decimal(str(amount)) == Decimal(wanted["unit_amount_decimal"])
        and recurring.get("interval") == wanted_recurring["interval"]
        and recurring.get("usage_type") == wanted_recurring["usage_type"]
        and recurring.get("meter") == wanted_recurring.get("meter")
    )


def _ensure_price(report: SyncReport, *, plan: Plan, component: str, wanted: dict[str, Any]) -> str:
    lookup_key = price_lookup_key(plan, component)
    existing = stripe_client.price_find_by_lookup_key(lookup_key=lookup_key)
    if existing is not None and _price_matches(existing, wanted):
        report.unchanged.append(f"price {lookup_key}")
        return existing["id"]
    params = {
        **wanted,
        "lookup_key": lookup_key,
        "transfer_lookup_key": True,
        "nickname": f"{plan.name} {component}",
        "metadata": {"plan": plan.code, "component": component},
    }
    price = stripe_client.price_create(params=params, idempotency_key=_key("price", params))
    (report.updated if existing else report.created).append(f"price {lookup_key} {price['id']}")
    return price["id"]


def stripe_catalog_sync() -> SyncReport:
    report = SyncReport()
    product_id = _ensure_product(report)
    meters = _ensure_meters(report)
    for plan in Plan.objects.order_by("code"):
        fields: dict[str, str] = {"stripe_product_id": product_id}
        if plan_is_paid(plan):
            for tier in ALL_TIERS:
                wanted = {
                    "product": product_id,
                    "currency": plan.currency,
                    "unit_amount_decimal": dollars_to_cents_decimal(plan.price_for(tier)),
                    "recurring": {"interval": "month", "usage_type": "metered", "meter": meters[tier]},
                }
                fields[f"stripe_price_{tier}_id"] = _ensure_price(
                    report, plan=plan, component=tier, wanted=wanted
                )
            if plan.base_price_monthly > 0:
                wanted = {
                    "product": product_id,
                    "currency": plan.currency,
                    "unit_amount_decimal": dollars_to_cents_decimal(plan.base_price_monthly),
                    "recurring": {"interval": "month", "usage_type": "licensed"},
                }
                fields["stripe_base_price_id"] = _ensure_price(
                    report, plan=plan, component="base", wanted=wanted
                )
            else:
                fields["stripe_base_price_id"] = ""
        with transaction.atomic():
            Plan.objects.filter(pk=plan.pk).update(**fields)
    return report
