"""Ledger rows for tests, shaped like the generation engine writes them (one row per image)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.models import UsageRecord
from tenants.ids import new_public_id


def usage_record_create(
    *,
    organization,
    api_key=None,
    tier: str = "fast",
    livemode: bool = True,
    created_at: datetime | None = None,
    unit_price: Decimal | None = None,
    upstream_cost: Decimal = Decimal("0.020000"),
    save: bool = True,
) -> UsageRecord:
    price = organization.plan.price_for(tier) if unit_price is None else unit_price
    record = UsageRecord(
        organization=organization,
        api_key=api_key,
        job_public_id=new_public_id("gen"),
        image_public_id=new_public_id("img"),
        livemode=livemode,
        requested_tier=tier,
        served_tier=tier,
        billed_tier=tier,
        model=f"imagen-4.0-{tier}-generate-001",
        route=f"google-{tier}",
        currency=organization.plan.currency,
        unit_price=price,
        amount=price,
        upstream_cost=upstream_cost,
        created_at=created_at or timezone.now(),
    )
    if save:
        record.save()
    return record
