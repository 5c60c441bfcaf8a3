"""Billing views: the dashboard's billing pages (session login, owners and admins only) and the
`GET /v1/usage` API. Each view resolves the organization, calls one service or selector, renders."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing import errors, selectors, services, stripe_client
from billing.forms import SpendControlsForm
from tenants import services as tenant_services
from tenants.access import dashboard_access
from tenants.api import OrganizationScopedAPIView
from tenants.errors import EmailNotVerified, InvalidRequest
from tenants.models import ALL_TIERS, Organization, Plan
from tenants.schema import ERRORS
from tenants.selectors import billing_period_end, billing_period_start, organization_spend_status
from tenants.services import user_require_verified_email

MAX_USAGE_RANGE_DAYS = 366
TIER_ORDER = {tier: index for index, tier in enumerate(ALL_TIERS)}


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


# --- Dashboard pages ---------------------------------------------------------------------------


def _billing_organization(request: Any) -> Organization:
    """The organization the page acts on, resolved as every logged-in page does (tenants.access):
    the `organization` field if it is one of the user's (else 404, the same answer as for an
    organization that does not exist), or the one chosen in the dashboard's switcher. Members
    without the owner or admin role get 403."""
    wanted = request.POST.get("organization") or request.GET.get("organization")
    access = dashboard_access(request, organization_id=wanted)
    if access is None:
        raise Http404("No such organization.")
    if not access.can_manage:
        raise PermissionDenied("Only owners and admins manage billing.")
    return access.organization


def _message(request, organization, title: str, text: str, *, status: int = 200) -> HttpResponse:
    return render(
        request,
        "billing/message.html",
        {"organization": organization, "title": title, "text": text},
        status=status,
    )


def _not_configured(request, organization) -> HttpResponse:
    return _message(
        request,
        organization,
        "Billing is not configured",
        "Online payment is not set up on this installation. Usage is still recorded and shown on your "
        "billing page; contact the operator to change plans.",
    )


@login_required
@require_GET
def billing_overview(request: HttpRequest) -> HttpResponse:
    return _overview(request, _billing_organization(request))


def _overview(request: HttpRequest, organization: Organization, *, spend_form=None) -> HttpResponse:
    account = selectors.billing_account_get(organization=organization)
    plans = [plan for plan in Plan.objects.all() if services.plan_is_paid(plan)]
    return render(
        request,
        "billing/overview.html",
        {
            "organization": organization,
            "account": account,
            "configured": stripe_client.is_configured(),
            "plans": plans,
            "statement": selectors.month_to_date_statement(organization=organization),
            "preview": selectors.organization_invoice_preview(organization=organization),
            "grace_ends_at": selectors.payment_grace_ends_at(account=account),
            "blocked": selectors.live_generation_blocked(organization=organization),
            "spend": organization_spend_status(organization=organization, api_key=None),
            "spend_form": spend_form
            or SpendControlsForm(
                initial={
                    "monthly_spend_cap": organization.monthly_spend_cap,
                    "spend_alert_thresholds": ", ".join(str(t) for t in organization.spend_alert_thresholds),
                }
            ),
        },
        status=400 if spend_form is not None else 200,
    )


@login_required
@require_POST
def billing_spend_controls(request: HttpRequest) -> HttpResponse:
    """The organization's monthly spend cap and alert thresholds (owners and admins)."""
    organization = _billing_organization(request)
    form = SpendControlsForm(request.POST)
    if not form.is_valid():
        return _overview(request, organization, spend_form=form)
    tenant_services.organization_spend_controls_set(
        organization=organization,
        monthly_spend_cap=form.cleaned_data["monthly_spend_cap"],
        alert_thresholds=form.cleaned_data["spend_alert_thresholds"],
    )
    messages.success(request, "Spend controls saved.")
    return HttpResponseSeeOther(reverse("billing:overview") + f"?organization={organization.public_id}")


@login_required
@require_POST
def billing_checkout(request: HttpRequest) -> HttpResponse:
    organization = _billing_organization(request)
    if not stripe_client.is_configured():
        return _not_configured(request, organization)
    code = request.POST.get("plan", "").strip()
    plan = Plan.objects.filter(code=code).first() if code else None
    try:
        user_require_verified_email(user=request.user)
    except EmailNotVerified as exc:
        return _message(request, organization, "Verify your e-mail address", exc.message, status=403)
    try:
        if plan is None:
            raise InvalidRequest("Choose a plan to subscribe to.", param="plan")
        url = services.checkout_session_create(organization=organization, plan=plan)
    except InvalidRequest as exc:
        return _message(request, organization, "Cannot start checkout", exc.message, status=400)
    except errors.PaymentProviderError as exc:
        return _message(request, organization, "Payment provider unavailable", exc.message, status=502)
    return HttpResponseSeeOther(url)


@login_required
@require_POST
def billing_portal(request: HttpRequest) -> HttpResponse:
    organization = _billing_organization(request)
    if not stripe_client.is_configured():
        return _not_configured(request, organization)
    try:
        url = services.portal_session_create(organization=organization)
    except errors.PaymentProviderError as exc:
        return _message(request, organization, "Payment provider unavailable", exc.message, status=502)
    return HttpResponseSeeOther(url)


@login_required
@require_GET
def billing_success(request: HttpRequest) -> HttpResponse:
    organization = _billing_organization(request)
    if not stripe_client.is_configured():
        return _not_configured(request, organization)
    # The subscription is activated by Stripe's webhook, never by this page's query string.
    return _message(
        request,
        organization,
        "Thank you",
        "Your subscription is being set up; it shows on your billing page as soon as Stripe confirms it.",
    )


@login_required
@require_GET
def billing_cancel(request: HttpRequest) -> HttpResponse:
    organization = _billing_organization(request)
    if not stripe_client.is_configured():
        return _not_configured(request, organization)
    return _message(
        request, organization, "Checkout canceled", "Nothing was charged. You can subscribe any time."
    )


# --- API: GET /v1/usage ------------------------------------------------------------------------


def _usage_date(value: date) -> date:
    if value > selectors.LATEST_USAGE_DATE:
        raise serializers.ValidationError(f"Dates must be on or before {selectors.LATEST_USAGE_DATE}.")
    return value


class UsageQuerySerializer(serializers.Serializer):
    start = serializers.DateField(required=False, input_formats=["%Y-%m-%d"])
    end = serializers.DateField(required=False, input_formats=["%Y-%m-%d"])

    def validate_start(self, value: date) -> date:
        return _usage_date(value)

    def validate_end(self, value: date) -> date:
        return _usage_date(value)

    def validate(self, attrs):
        start: date | None = attrs.get("start")
        end: date | None = attrs.get("end")
        if start is None and end is None:
            start = billing_period_start(timezone.now())
        if start is None and end is not None:
            start = end.replace(day=1)
        assert start is not None  # noqa: S101 - narrowing for the type checker: set just above
        if end is None:
            end = billing_period_end(start.replace(day=1)) - timedelta(days=1)
        if end < start:
            raise serializers.ValidationError({"end": "end must be on or after start."})
        if (end - start).days + 1 > MAX_USAGE_RANGE_DAYS:
            raise serializers.ValidationError(
                {"end": f"The range may cover at most {MAX_USAGE_RANGE_DAYS} days."}
            )
        return {"start": start, "end": end}


class UsageTotalsSerializer(serializers.Serializer):
    images = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=4)
    billable_amount = serializers.DecimalField(max_digits=14, decimal_places=4)


class UsageDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    images = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=4)


class UsageTierSerializer(serializers.Serializer):
    tier = serializers.CharField()
    images = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=4)


class UsageKeySerializer(serializers.Serializer):
    api_key = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    images = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=4)


class UsageRowSerializer(serializers.Serializer):
    date = serializers.DateField(source="day")
    tier = serializers.CharField()
    api_key = serializers.CharField(source="api_key_id", allow_null=True)
    api_key_name = serializers.CharField()
    livemode = serializers.BooleanField()
    images = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=4)


def _group(rows, key) -> list[dict]:
    groups: dict = {}
    for row in rows:
        entry = groups.setdefault(key(row), {"images": 0, "amount": selectors.ZERO})
        entry["images"] += row.images
        entry["amount"] += row.amount
    return [{"key": k, **v} for k, v in groups.items()]


USAGE_RESPONSE = inline_serializer(
    "Usage",
    {
        "object": serializers.CharField(),
        "organization": serializers.CharField(),
        "start": serializers.DateField(),
        "end": serializers.DateField(),
        "currency": serializers.CharField(),
        "totals": UsageTotalsSerializer(),
        "by_day": UsageDaySerializer(many=True),
        "by_tier": UsageTierSerializer(many=True),
        "by_key": UsageKeySerializer(many=True),
        "data": UsageRowSerializer(many=True),
    },
)


class UsageView(OrganizationScopedAPIView):
    """GET /v1/usage?start=YYYY-MM-DD&end=YYYY-MM-DD: the caller's images and amount by day, tier and
    key (UTC days, both ends inclusive; default this month; at most 366 days). Amounts are in the
    plan's currency; `billable_amount` counts live keys only (test keys are never billed)."""

    required_scope = "read"

    @extend_schema(parameters=[UsageQuerySerializer], responses={200: USAGE_RESPONSE, **ERRORS})
    def get(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        start, end = query.validated_data["start"], query.validated_data["end"]
        rows = selectors.organization_usage(organization=self.organization, start=start, end=end)
        by_key: dict[str | None, dict[str, Any]] = {}
        for row in rows:
            entry = by_key.setdefault(
                row.api_key_id,
                {"api_key": row.api_key_id, "name": row.api_key_name, "images": 0, "amount": selectors.ZERO},
            )
            entry["images"] += row.images
            entry["amount"] += row.amount
        return Response(
            {
                "object": "usage",
                "organization": self.organization.public_id,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "currency": self.organization.plan.currency,
                "totals": UsageTotalsSerializer(
                    {
                        "images": sum(r.images for r in rows),
                        "amount": sum((r.amount for r in rows), selectors.ZERO),
                        "billable_amount": sum((r.amount for r in rows if r.livemode), selectors.ZERO),
                    }
                ).data,
                "by_day": UsageDaySerializer(
                    [{"date": g["key"], **g} for g in _group(rows, lambda r: r.day)], many=True
                ).data,
                "by_tier": UsageTierSerializer(
                    sorted(
                        ({"tier": g["key"], **g} for g in _group(rows, lambda r: r.tier)),
                        key=lambda g: TIER_ORDER.get(g["tier"], len(TIER_ORDER)),
                    ),
                    many=True,
                ).data,
                "by_key": UsageKeySerializer(
                    sorted(by_key.values(), key=lambda k: (-k["images"], k["name"])), many=True
                ).data,
                "data": UsageRowSerializer(rows, many=True).data,
            }
        )
