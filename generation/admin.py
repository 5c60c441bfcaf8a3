"""Operator admin for the upstream catalog (editable) and for jobs (read-only).

Credentials are never stored here: a provider account holds only a reference to where its secret
lives (`env:…`, `envfile:…`, `file:…`); the admin shows whether that reference resolves, never
the secret. Catalog edits reach every worker within CATALOG_TTL_SECONDS.
"""

from datetime import timedelta

from django.contrib import admin
from django.db.models import Q, Sum
from django.utils import timezone

from generation.engine.credentials import account_credentials
from generation.models import (
    Batch,
    Image,
    Job,
    ProviderAccount,
    Route,
    RouteStatsMinute,
    UpstreamModel,
    WebhookDelivery,
    WebhookEndpoint,
)


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "enabled",
        "credentials_configured",
        "effective_base_url",
        "region",
        "max_concurrency",
        "requests_per_minute",
        "images_per_minute",
    )
    list_filter = ("kind", "enabled")
    readonly_fields = ("credentials_configured", "effective_base_url")

    @admin.display(boolean=True, description="Credentials found")
    def credentials_configured(self, obj: ProviderAccount) -> bool:
        return account_credentials(obj) is not None


class RouteInline(admin.TabularInline):
    model = Route
    extra = 0
    fields = ("tier", "position", "account", "options", "enabled")


@admin.register(UpstreamModel)
class UpstreamModelAdmin(admin.ModelAdmin):
    list_display = ("model_id", "display_name", "protocol", "lifecycle", "shutdown_date", "successor")
    list_filter = ("protocol", "lifecycle")
    search_fields = ("model_id", "display_name")
    inlines = (RouteInline,)


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = (
        "tier",
        "position",
        "account",
        "model",
        "options",
        "enabled",
        "calls_last_hour",
        "errors_last_hour",
    )
    list_filter = ("tier", "enabled", "account")
    list_editable = ("position", "enabled")
    ordering = ("tier", "position")

    def get_queryset(self, request):
        since = timezone.now() - timedelta(hours=1)
        recent = Q(stats__minute__gte=since)
        return (
            super()
            .get_queryset(request)
            .select_related("account", "model")
            .annotate(
                _calls=Sum("stats__calls", filter=recent, default=0),
                _errors=Sum("stats__errors", filter=recent, default=0),
            )
        )

    @admin.display(description="Calls (1 h)", ordering="_calls")
    def calls_last_hour(self, obj):
        return obj._calls

    @admin.display(description="Errors (1 h)", ordering="_errors")
    def errors_last_hour(self, obj):
        return obj._errors


class ImageInline(admin.TabularInline):
    model = Image
    extra = 0
    can_delete = False
    fields = ("public_id", "index", "width", "height", "mime_type", "size_bytes", "filtered", "filter_reason")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: a job's state changes only through generation.jobs.services services."""

    list_display = (
        "public_id",
        "organization",
        "status",
        "tier",
        "served_tier",
        "served_model",
        "count",
        "images_delivered",
        "amount",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "tier", "served_tier", "livemode")
    search_fields = ("public_id", "organization__name", "organization__public_id", "idempotency_key")
    date_hierarchy = "created_at"
    list_select_related = ("organization",)
    inlines = (ImageInline,)
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RouteStatsMinute)
class RouteStatsMinuteAdmin(admin.ModelAdmin):
    list_display = ("minute", "route", "calls", "errors", "images", "mean_latency_ms")
    list_filter = ("route",)
    date_hierarchy = "minute"
    list_select_related = ("route__account", "route__model")

    @admin.display(description="Mean latency (ms)")
    def mean_latency_ms(self, obj):
        return round(obj.latency_ms_sum / obj.calls) if obj.calls else None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class _ReadOnlyAdmin(admin.ModelAdmin):
    """State changes only through generation.batches.services / generation.webhooks.services services."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Batch)
class BatchAdmin(_ReadOnlyAdmin):
    list_display = ("public_id", "organization", "status", "total", "next_index", "created_at", "finished_at")
    list_filter = ("status",)
    search_fields = ("public_id", "organization__name", "organization__public_id")
    list_select_related = ("organization",)
    exclude = ("requests",)  # up to 1,000 request bodies: too big for a form


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnlyAdmin):
    list_display = (
        "public_id",
        "organization",
        "event",
        "object_id",
        "status",
        "attempts",
        "last_status_code",
    )
    list_filter = ("status", "event")
    search_fields = ("public_id", "object_id", "organization__name")
    list_select_related = ("organization",)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(_ReadOnlyAdmin):
    list_display = ("organization", "url", "enabled", "updated_at")
    exclude = ("secret",)  # a secret is never shown back in admin
    list_select_related = ("organization",)
