"""Operator admin for billing: the usage ledger (read-only, with its outbox state), the meter reports
that carried it to Stripe, billing alerts, revenue, upstream cost and margin per organization and
month, billing accounts, processed Stripe events and meters."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import (
    BillingAccount,
    BillingAlert,
    BillingMeter,
    MeterReport,
    OrganizationMonthlySummary,
    StripeEvent,
    UsageRecord,
)
from billing.outbox import EXPIRY_MARGIN, STRIPE_TIMESTAMP_LIMIT, meter_report_confirm
from billing.selectors import usage_overdue
from tenants.selectors import billing_period_end, billing_period_start


class OutboxFilter(admin.SimpleListFilter):
    title = "outbox"
    parameter_name = "outbox"

    def lookups(self, request, model_admin):
        return [
            (
                "overdue",
                f"Approaching Stripe's 35-day limit (> {settings.BILLING_OUTBOX_ALERT_AGE_DAYS} days)",
            ),
            ("retrying", "Retrying after an error"),
            ("waiting", "Waiting (no meter report yet: no billable subscription, or next run)"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "overdue":
            return queryset.filter(pk__in=usage_overdue().values("pk"))
        if self.value() == "retrying":
            return queryset.filter(
                report_status=UsageRecord.ReportStatus.PENDING, meter_report__attempts__gt=0
            )
        if self.value() == "waiting":
            return queryset.filter(
                report_status=UsageRecord.ReportStatus.PENDING,
                meter_report__isnull=True,
                livemode=True,
                amount__gt=0,
            )
        return queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """The ledger is written by the generation engine only; here it is read, never edited."""

    list_display = (
        "public_id",
        "organization",
        "api_key",
        "livemode",
        "billed_tier",
        "served_tier",
        "model",
        "amount",
        "upstream_cost",
        "created_at",
        "report_status",
        "meter_report",
        "reported_at",
    )
    list_filter = (
        "report_status",
        OutboxFilter,
        "livemode",
        "billed_tier",
        "served_tier",
        "model",
        ("organization", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = (
        "public_id",
        "job_public_id",
        "image_public_id",
        "organization__name",
        "meter_report__public_id",
    )
    date_hierarchy = "created_at"
    list_select_related = ("organization", "api_key", "meter_report")
    actions = ("retry_now",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        overdue = usage_overdue().count()
        if overdue:
            self.message_user(
                request,
                f"{overdue} usage record(s) have not reached Stripe after "
                f"{settings.BILLING_OUTBOX_ALERT_AGE_DAYS} days; Stripe refuses meter events older than 35 "
                "days. Filter by outbox to see them.",
                messages.ERROR,
            )
        return super().changelist_view(request, extra_context)

    @admin.action(description="Report again now (failed records still within Stripe's 35 days)")
    def retry_now(self, request, queryset):
        """Failed records go back to the outbox without a report (they were never counted); records
        already in a report are retried through it (Meter reports)."""
        reportable = timezone.now() - STRIPE_TIMESTAMP_LIMIT + EXPIRY_MARGIN
        count = queryset.filter(
            report_status=UsageRecord.ReportStatus.FAILED,
            meter_report__isnull=True,
            created_at__gte=reportable,
        ).update(report_status=UsageRecord.ReportStatus.PENDING, last_error="")
        self.message_user(
            request, f"{count} record(s) will be reported on the next outbox run.", messages.SUCCESS
        )


class UsageRecordInline(admin.TabularInline):
    model = UsageRecord
    fields = ("public_id", "job_public_id", "image_public_id", "billed_tier", "amount", "created_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(MeterReport)
class MeterReportAdmin(admin.ModelAdmin):
    """One Stripe meter event each; its usage records are listed on its page (the audit trail)."""

    list_display = (
        "public_id",
        "organization",
        "tier",
        "bucket_start",
        "value",
        "amount",
        "status",
        "confirmation",
        "attempts",
        "in_doubt_since",
        "next_attempt_at",
    )
    list_filter = ("status", "confirmation", "tier", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("public_id", "stripe_customer_id", "organization__name")
    date_hierarchy = "bucket_start"
    list_select_related = ("organization",)
    inlines = (UsageRecordInline,)
    actions = ("mark_counted", "send_again")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Stripe counted these (checked by hand): confirm without resending")
    def mark_counted(self, request, queryset):
        count = 0
        for report in queryset.filter(status__in=[MeterReport.Status.RECONCILE, MeterReport.Status.PENDING]):
            count += meter_report_confirm(report=report, confirmation="operator")
        self.message_user(request, f"{count} report(s) confirmed.", messages.SUCCESS)

    @admin.action(description="Stripe did not count these (checked by hand): send again")
    def send_again(self, request, queryset):
        count = queryset.filter(status=MeterReport.Status.RECONCILE).update(
            status=MeterReport.Status.PENDING, in_doubt_since=None, next_attempt_at=None
        )
        self.message_user(
            request, f"{count} report(s) will be sent on the next outbox run.", messages.SUCCESS
        )


@admin.register(BillingAlert)
class BillingAlertAdmin(admin.ModelAdmin):
    list_display = (
        "kind",
        "organization",
        "tier",
        "period_start",
        "images",
        "amount",
        "ledger_value",
        "stripe_value",
        "updated_at",
        "resolved_at",
    )
    list_filter = ("kind", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("organization__name", "message")
    list_select_related = ("organization",)
    actions = ("resolve",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Mark resolved (handled)")
    def resolve(self, request, queryset):
        count = queryset.filter(resolved_at__isnull=True).update(resolved_at=timezone.now())
        self.message_user(request, f"{count} alert(s) resolved.", messages.SUCCESS)


def _recent_months(count: int = 12) -> list[date]:
    month = billing_period_start(timezone.now())
    months = []
    for _ in range(count):
        months.append(month)
        month = (month - timedelta(days=1)).replace(day=1)
    return months


class MonthFilter(admin.SimpleListFilter):
    """Picks the month the figures cover (default: this month) and annotates them."""

    title = "month"
    parameter_name = "month"

    def lookups(self, request, model_admin):
        return [(m.strftime("%Y-%m"), m.strftime("%B %Y")) for m in _recent_months()[1:]]

    def choices(self, changelist):
        choices = list(super().choices(changelist))
        choices[0]["display"] = "This month"
        return choices

    def month(self) -> date:
        try:
            return datetime.strptime(self.value() or "", "%Y-%m").date()
        except ValueError:
            return billing_period_start(timezone.now())

    def queryset(self, request, queryset):
        start = self.month()
        window = Q(
            usage_records__created_at__gte=datetime.combine(start, datetime.min.time(), tzinfo=UTC),
            usage_records__created_at__lt=datetime.combine(
                billing_period_end(start), datetime.min.time(), tzinfo=UTC
            ),
        )
        live = window & Q(usage_records__livemode=True)
        money: DecimalField = DecimalField(max_digits=16, decimal_places=6)
        return queryset.annotate(
            _images=Count("usage_records", filter=live),
            _revenue=Coalesce(
                Sum("usage_records__amount", filter=live), Value(Decimal("0")), output_field=money
            ),
            # Upstream cost counts every image we paid for, test keys included.
            _cost=Coalesce(
                Sum("usage_records__upstream_cost", filter=window), Value(Decimal("0")), output_field=money
            ),
        )


@admin.register(OrganizationMonthlySummary)
class OrganizationMonthlySummaryAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "plan",
        "status",
        "images",
        "revenue",
        "upstream_cost",
        "margin",
        "margin_percent",
    )
    list_filter = (MonthFilter, "plan", "status")
    search_fields = ("name", "slug", "public_id")
    list_select_related = ("plan",)
    ordering = ("name",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Live images", ordering="_images")
    def images(self, obj):
        return obj._images

    @admin.display(description="Revenue", ordering="_revenue")
    def revenue(self, obj):
        return obj._revenue.quantize(Decimal("0.01"))

    @admin.display(description="Upstream cost", ordering="_cost")
    def upstream_cost(self, obj):
        return obj._cost.quantize(Decimal("0.01"))

    @admin.display(description="Margin")
    def margin(self, obj):
        return (obj._revenue - obj._cost).quantize(Decimal("0.01"))

    @admin.display(description="Margin %")
    def margin_percent(self, obj):
        if not obj._revenue:
            return "–"
        return f"{(obj._revenue - obj._cost) / obj._revenue * 100:.1f} %"


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    list_display = (
        "organization",
        "stripe_customer_id",
        "subscription_status",
        "plan",
        "current_period_end",
        "payment_failed_at",
        "last_invoice_paid_at",
    )
    list_filter = ("subscription_status", "plan")
    search_fields = ("organization__name", "stripe_customer_id", "stripe_subscription_id")
    list_select_related = ("organization", "plan")

    def get_readonly_fields(self, request, obj=None):
        # Mirrored from Stripe; editing here would be overwritten by the next webhook.
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "type", "organization", "outcome", "livemode", "created", "received_at")
    list_filter = ("type", "livemode")
    search_fields = ("event_id", "organization__name")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(BillingMeter)
class BillingMeterAdmin(admin.ModelAdmin):
    list_display = ("tier", "event_name", "stripe_meter_id", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
