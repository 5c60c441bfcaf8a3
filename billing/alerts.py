"""Operator alerts about billing (`BillingAlert`): raised by the outbox and reconciliation, shown in
admin and on the operator page. At most one open alert exists per kind, organization, tier and
period: raising again updates it (or adds to it), so a condition seen every minute is one row."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.models import BillingAlert


def billing_alert_raise(
    *,
    kind: str,
    organization_id: int | None,
    message: str,
    images: int = 0,
    amount: Decimal = Decimal(0),
    tier: str = "",
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    ledger_value: int | None = None,
    stripe_value: int | None = None,
    accumulate: bool = False,
) -> BillingAlert:
    """Open (or update) the alert. `accumulate` adds images and amount to an open alert (usage that
    became unreportable run after run) instead of replacing them (a current count)."""
    with transaction.atomic():
        alert = (
            BillingAlert.objects.open()
            .select_for_update()
            .filter(kind=kind, organization_id=organization_id, tier=tier, period_start=period_start)
            .first()
        )
        if alert is None:
            return BillingAlert.objects.create(
                kind=kind,
                organization_id=organization_id,
                tier=tier,
                period_start=period_start,
                period_end=period_end,
                images=images,
                amount=amount,
                ledger_value=ledger_value,
                stripe_value=stripe_value,
                message=message,
            )
        fields: dict[str, Any] = {
            "message": message,
            "period_end": period_end,
            "ledger_value": ledger_value,
            "stripe_value": stripe_value,
            "updated_at": timezone.now(),
        }
        if accumulate:
            fields.update(images=F("images") + images, amount=F("amount") + amount)
        else:
            fields.update(images=images, amount=amount)
        BillingAlert.objects.filter(pk=alert.pk).update(**fields)
        alert.refresh_from_db()
        return alert


def billing_alerts_resolve(
    *,
    kind: str,
    keep_organization_ids: set[int] | None = None,
    organization_id: int | None = None,
    tier: str | None = None,
    period_start: datetime | None = None,
) -> int:
    """Resolve open alerts of `kind` whose condition is gone: all but `keep_organization_ids`, or the
    one alert named by organization, tier and period."""
    alerts = BillingAlert.objects.open().filter(kind=kind)
    if keep_organization_ids is not None:
        alerts = alerts.exclude(organization_id__in=keep_organization_ids)
    if organization_id is not None:
        alerts = alerts.filter(organization_id=organization_id)
    if tier is not None:
        alerts = alerts.filter(tier=tier, period_start=period_start)
    return alerts.update(resolved_at=timezone.now())
