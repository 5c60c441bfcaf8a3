"""Billing writes: the Stripe customer of an organization, Checkout and Portal sessions, and applying
Stripe webhook events to the organization's `BillingAccount`.

Invariants: an organization has at most one Stripe customer (created under a row lock with an
idempotency key derived from the organization id); each webhook event is applied at most once (its
id is inserted in the same transaction that applies it); subscription events older than the last
one applied are ignored, because Stripe delivers at least once and in any order.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing import errors, stripe_client
from billing.models import BillingAccount, StripeEvent
from tenants import services as tenant_services
from tenants.errors import InvalidRequest
from tenants.models import ALL_TIERS, Membership, Organization, Plan

logger = logging.getLogger(__name__)

HANDLED_EVENT_TYPES = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)


def _from_timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def _public_url(name: str) -> str:
    return settings.PUBLIC_BASE_URL + reverse(name)


def plan_is_paid(plan: Plan) -> bool:
    return plan.base_price_monthly > 0 or any(plan.price_for(tier) > 0 for tier in ALL_TIERS)


def plan_stripe_price_ids(plan: Plan) -> dict[str, str]:
    return {tier: getattr(plan, f"stripe_price_{tier}_id") for tier in ALL_TIERS}


def billing_account_ensure(*, organization: Organization) -> BillingAccount:
    account, _ = BillingAccount.objects.get_or_create(organization=organization)
    return account


def billing_customer_ensure(*, organization: Organization) -> BillingAccount:
    """The organization's account with a Stripe customer, creating the customer on first use.

    No lock is held during the Stripe call (on SQLite that would be the database's write lock): the
    idempotency key derived from the organization makes concurrent first uses, and a retry after a
    lost response, get the same customer from Stripe, and only an empty id is ever overwritten.
    """
    account = billing_account_ensure(organization=organization)
    if account.stripe_customer_id:
        return account
    owner = (
        Membership.objects.filter(organization=organization, role=Membership.Role.OWNER)
        .select_related("user")
        .order_by("created_at")
        .first()
    )
    customer_id = stripe_client.customer_create(
        name=organization.name,
        email=getattr(owner.user, "email", "") if owner else "",
        organization_public_id=organization.public_id,
        idempotency_key=f"imagegate-customer-{organization.public_id}",
    )
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer_id)
    account.refresh_from_db()
    if account.stripe_customer_id != customer_id:
        logger.warning(
            "organization %s already had Stripe customer %s; %s is unused",
            organization.public_id,
            account.stripe_customer_id,
            customer_id,
        )
    return account


def checkout_session_create(*, organization: Organization, plan: Plan) -> str:
    """A Checkout Session subscribing the organization to `plan`; returns the URL to redirect to."""
    if not stripe_client.is_configured():
        raise errors.BillingNotConfigured()
    if not plan_is_paid(plan):
        raise InvalidRequest(f"The {plan.name} plan is free; there is nothing to subscribe to.", param="plan")
    price_ids = plan_stripe_price_ids(plan)
    if not all(price_ids.values()) or (plan.base_price_monthly > 0 and not plan.stripe_base_price_id):
        raise InvalidRequest(f"The {plan.name} plan is not available for purchase yet.", param="plan")
    account = billing_customer_ensure(organization=organization)
    line_items: list[dict[str, Any]] = []
    if plan.base_price_monthly > 0:
        line_items.append({"price": plan.stripe_base_price_id, "quantity": 1})
    # Metered prices carry no quantity: Stripe derives it from the meter.
    line_items += [{"price": price_ids[tier]} for tier in ALL_TIERS]
    session = stripe_client.checkout_session_create(
        customer_id=account.stripe_customer_id,
        line_items=line_items,
        success_url=_public_url("billing:success") + "?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=_public_url("billing:cancel"),
        client_reference_id=organization.public_id,
        metadata={"organization_id": organization.public_id, "plan": plan.code},
        idempotency_key=stripe_client.new_idempotency_key(f"imagegate-checkout-{organization.public_id}"),
    )
    return session["url"]


def portal_session_create(*, organization: Organization) -> str:
    if not stripe_client.is_configured():
        raise errors.BillingNotConfigured()
    account = billing_customer_ensure(organization=organization)
    session = stripe_client.portal_session_create(
        customer_id=account.stripe_customer_id,
        return_url=_public_url("billing:overview"),
        idempotency_key=stripe_client.new_idempotency_key(f"imagegate-portal-{organization.public_id}"),
    )
    return session["url"]


# --- Webhooks ----------------------------------------------------------------------------------


def _account_for_customer(customer_id: str | None) -> BillingAccount | None:
    if not customer_id:
        return None
    return (
        BillingAccount.objects.select_for_update()
        .select_related("organization__plan")
        .filter(stripe_customer_id=customer_id)
        .first()
    )


def _plan_for_prices(price_ids: set[str]) -> Plan | None:
    if not price_ids:
        return None
    for plan in Plan.objects.all():
        ids = {plan.stripe_base_price_id, *plan_stripe_price_ids(plan).values()} - {""}
        if ids & price_ids:
            return plan
    return None


def _on_checkout_completed(obj: dict, created: datetime) -> tuple[BillingAccount | None, str]:
    organization = Organization.objects.filter(public_id=obj.get("client_reference_id") or "").first()
    account = _account_for_customer(obj.get("customer"))
    if account is None and organization is not None:
        account = BillingAccount.objects.select_for_update().filter(organization=organization).first()
        if account is None:
            account = BillingAccount.objects.create(organization=organization)
        if not account.stripe_customer_id and obj.get("customer"):
            account.stripe_customer_id = obj["customer"]
    if account is None:
        return None, "ignored: unknown customer and organization"
    if organization is not None and organization.pk != account.organization_id:
        logger.error(
            "checkout.session.completed: customer %s belongs to another organization", obj.get("customer")
        )
        return account, "ignored: customer and client_reference_id disagree"
    subscription_id = obj.get("subscription") or ""
    if subscription_id and not account.has_billable_subscription:
        account.stripe_subscription_id = subscription_id
    account.save()
    return account, "applied"


def _on_subscription(obj: dict, created: datetime, event_type: str) -> tuple[BillingAccount | None, str]:
    account = _account_for_customer(obj.get("customer"))
    if account is None:
        return None, "ignored: unknown customer"
    status = obj.get("status") or ""
    if event_type == "customer.subscription.deleted":
        status = status or "canceled"
    subscription_id = obj.get("id") or ""
    billable = status in BillingAccount.BILLABLE_STATUSES
    if (
        account.stripe_subscription_id
        and subscription_id != account.stripe_subscription_id
        and account.has_billable_subscription
        and not billable
    ):
        return account, "ignored: an older subscription ended while another one is current"
    if account.subscription_event_at and created < account.subscription_event_at:
        return account, "ignored: older than the subscription state we have"
    items = (obj.get("items") or {}).get("data") or []
    plan = _plan_for_prices({price_id for item in items if (price_id := (item.get("price") or {}).get("id"))})
    # Since API 2025-03-31 the period lives on the items; older payloads carry it on the subscription.
    period_start = obj.get("current_period_start") or next(
        (i.get("current_period_start") for i in items if i.get("current_period_start")), None
    )
    period_end = obj.get("current_period_end") or next(
        (i.get("current_period_end") for i in items if i.get("current_period_end")), None
    )
    previous_plan = account.plan
    account.stripe_subscription_id = subscription_id
    account.subscription_status = status
    account.plan = plan or account.plan
    account.current_period_start = _from_timestamp(period_start)
    account.current_period_end = _from_timestamp(period_end)
    account.subscription_event_at = created
    account.save()
    _sync_organization_plan(account=account, billable=billable, previous_plan=previous_plan)
    return account, "applied"


def _sync_organization_plan(*, account: BillingAccount, billable: bool, previous_plan: Plan | None) -> None:
    """The organization's limits and prices follow what it pays for in Stripe. When the subscription
    ends, an organization still on the plan it paid for goes back to the default plan; one an operator
    moved to another plan by hand stays there."""
    organization = account.organization
    if billable and account.plan and organization.plan_id != account.plan_id:
        tenant_services.organization_change_plan(organization=organization, plan=account.plan)
    elif not billable and account.subscription_status in ("canceled", "incomplete_expired"):
        paid_for = account.plan or previous_plan
        if paid_for and organization.plan_id == paid_for.pk and plan_is_paid(paid_for):
            tenant_services.organization_change_plan(
                organization=organization, plan=tenant_services.plan_default()
            )


def _on_invoice_paid(obj: dict, created: datetime) -> tuple[BillingAccount | None, str]:
    account = _account_for_customer(obj.get("customer"))
    if account is None:
        return None, "ignored: unknown customer"
    paid_at = _from_timestamp((obj.get("status_transitions") or {}).get("paid_at")) or created
    account.last_invoice_paid_at = max(filter(None, [account.last_invoice_paid_at, paid_at]))
    if account.payment_failed_at is not None and created >= account.payment_failed_at:
        billing_account_payment_failed_set(account=account, failed_at=None)
    account.save()
    return account, "applied"


def _on_invoice_payment_failed(obj: dict, created: datetime) -> tuple[BillingAccount | None, str]:
    account = _account_for_customer(obj.get("customer"))
    if account is None:
        return None, "ignored: unknown customer"
    if account.last_invoice_paid_at and created < account.last_invoice_paid_at:
        return account, "ignored: an invoice was paid after this failure"
    if account.payment_failed_at is None:  # grace runs from the first failure, not from each retry
        billing_account_payment_failed_set(account=account, failed_at=created)
        account.save()
    return account, "applied"


def billing_account_payment_failed_set(*, account: BillingAccount, failed_at: datetime | None) -> None:
    """Record (or clear) the first failed payment, here and on the organization, which admission
    reads (tenants.selectors.organization_payment_blocked). The caller saves the account."""
    account.payment_failed_at = failed_at
    tenant_services.organization_payment_failed_set(
        organization_id=account.organization_id, failed_at=failed_at
    )


def stripe_event_process(*, event: dict) -> bool:
    """Apply a verified Stripe event once. Returns False when the event was already processed."""
    created = _from_timestamp(event.get("created")) or datetime.now(tz=UTC)
    event_type = event["type"]
    obj = ((event.get("data") or {}).get("object")) or {}
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(
                event_id=event["id"],
                type=event_type,
                livemode=bool(event.get("livemode")),
                created=created,
                payload=event,
            )
            if event_type == "checkout.session.completed":
                account, outcome = _on_checkout_completed(obj, created)
            elif event_type.startswith("customer.subscription."):
                account, outcome = _on_subscription(obj, created, event_type)
            elif event_type == "invoice.paid":
                account, outcome = _on_invoice_paid(obj, created)
            elif event_type == "invoice.payment_failed":
                account, outcome = _on_invoice_payment_failed(obj, created)
            else:
                account, outcome = None, "ignored: event type not handled"
            record.organization_id = account.organization_id if account else None
            record.outcome = outcome
            record.save(update_fields=["organization", "outcome"])
    except IntegrityError:
        if StripeEvent.objects.filter(event_id=event["id"]).exists():
            return False  # a replay, or a concurrent delivery of the same event that won the insert
        raise
    logger.info("stripe event %s %s: %s", event["id"], event_type, outcome)
    return True
