"""Model shutdowns as tenants live them: which models an organization pins, and the owner e-mails
30 and 7 days before a pinned model's shutdown date.

A model is retired on its shutdown date by the date itself (`UpstreamModel.is_retired(today)`,
no manual step). Invariants: one e-mail per (organization, model, threshold), enforced by the
`ShutdownNotice` unique constraint; a notice row exists only if its e-mail was handed to the
mail backend (the row and the send share one transaction); a task that missed days still sends
the nearest threshold once, never both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from generation.engine.catalog import TIER_ALIASES
from generation.models import Job, ShutdownNotice, UpstreamModel
from tenants.models import Membership, Organization

logger = logging.getLogger(__name__)

NOTICE_THRESHOLDS_DAYS = (30, 7)  # the nearest one that has been reached is sent
PINNED_LOOKBACK_DAYS = 90  # an organization "pins" a model it requested by id in this window
SHUTDOWN_NOTICES_SCHEDULE_NAME = "generation: model shutdown notices (30 and 7 days before)"


@dataclass(frozen=True)
class PinnedModel:
    model_id: str
    lifecycle: str  # as of today: a deprecated model past its date is "retired"
    shutdown_date: date | None
    successor: str | None
    days_left: int | None


def models_pinned(*, organization: Organization, today: date | None = None) -> list[PinnedModel]:
    """Models this organization asked for by id lately that have (or had) a shutdown date."""
    today = today or timezone.now().date()
    since = timezone.now() - timedelta(days=PINNED_LOOKBACK_DAYS)
    requested = set(
        Job.objects.for_org(organization)
        .filter(created_at__gte=since)
        .exclude(requested_model="")
        .values_list("requested_model", flat=True)
        .distinct()
    ) - set(TIER_ALIASES)
    if not requested:
        return []
    pinned = []
    for model in UpstreamModel.objects.filter(model_id__in=requested).select_related("successor"):
        if model.shutdown_date is None and model.lifecycle == UpstreamModel.Lifecycle.ACTIVE:
            continue
        retired = model.is_retired(today)
        pinned.append(
            PinnedModel(
                model_id=model.model_id,
                lifecycle=UpstreamModel.Lifecycle.RETIRED if retired else model.lifecycle,
                shutdown_date=model.shutdown_date,
                successor=model.successor.model_id if model.successor else None,
                days_left=(model.shutdown_date - today).days if model.shutdown_date else None,
            )
        )
    return sorted(pinned, key=lambda p: (p.shutdown_date or date.max, p.model_id))


def _threshold(days_left: int) -> int | None:
    reached = [t for t in NOTICE_THRESHOLDS_DAYS if days_left <= t]
    return min(reached) if reached else None


def shutdown_notices_send(*, today: date | None = None) -> int:
    """Send the due shutdown e-mails to the owners of every organization pinning a model whose
    shutdown is 30 (then 7) days away or less. Returns how many e-mails were sent."""
    today = today or timezone.now().date()
    sent = 0
    upcoming = UpstreamModel.objects.filter(
        shutdown_date__gt=today, shutdown_date__lte=today + timedelta(days=max(NOTICE_THRESHOLDS_DAYS))
    ).exclude(lifecycle=UpstreamModel.Lifecycle.RETIRED)
    since = timezone.now() - timedelta(days=PINNED_LOOKBACK_DAYS)
    for model in upcoming.select_related("successor"):
        assert model.shutdown_date is not None  # noqa: S101 - the filter above guarantees it
        days_left = (model.shutdown_date - today).days
        threshold = _threshold(days_left)
        if threshold is None:
            continue
        org_ids = (
            Job.objects.filter(requested_model=model.model_id, created_at__gte=since)
            .values_list("organization_id", flat=True)
            .distinct()
        )
        for organization in Organization.objects.filter(pk__in=list(org_ids)):
            if ShutdownNotice.objects.filter(
                organization=organization, model_id=model.model_id, days_before__lte=threshold
            ).exists():
                continue  # this threshold (or a nearer one) was already sent
            if _notify(organization=organization, model=model, threshold=threshold, days_left=days_left):
                sent += 1
    return sent


def _notify(*, organization: Organization, model: UpstreamModel, threshold: int, days_left: int) -> bool:
    recipients = sorted(
        Membership.objects.filter(organization=organization, role=Membership.Role.OWNER)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    if not recipients:
        return False
    context = {
        "organization": organization,
        "model": model,
        "successor": model.successor.model_id if model.successor else None,
        "days_left": days_left,
        "auto_migrate": organization.auto_migrate_models,
    }
    try:
        with transaction.atomic():
            ShutdownNotice.objects.create(
                organization=organization,
                model_id=model.model_id,
                shutdown_date=model.shutdown_date,  # type: ignore[misc]  # set: only models with a date are noticed
                days_before=threshold,
                recipients=recipients,
            )
            send_mail(
                subject=f"[Imagegate] {model.model_id} shuts down on {model.shutdown_date:%Y-%m-%d} "
                f"({days_left} days)",
                message=render_to_string("generation/email/model_shutdown.txt", context),
                from_email=None,
                recipient_list=recipients,
            )
    except IntegrityError:
        return False  # another worker sent it a moment ago
    return True


def shutdown_notices_task() -> int:
    """django-q2 schedule entry point (daily)."""
    return shutdown_notices_send()
