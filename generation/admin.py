"""Operator admin for the upstream catalog (editable) and for jobs (read-only).

Credentials are never stored here: a provider account holds only a reference to where its secret
lives (`env:…`, `envfile:…`, `file:…`); the admin shows whether that reference resolves, never
the secret. Catalog edits reach every worker within CATALOG_TTL_SECONDS.
"""

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Q, Sum
from django.utils import timezone

from generation.engine.catalog import catalog_invalidate
from generation.engine.catalog_sync import catalog_sync
from generation.engine.credentials import account_credentials
from generation.models import (
    Batch,
    CatalogAlert,
    Image,
    InputFile,
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
    # Where the secret is read from and which host it is sent to: superusers only. Staff may tune
    # limits and switch accounts on and off; every change is in the admin's history with the old
    # and new value of these fields (see construct_change_message).
    SENSITIVE_FIELDS = ("kind", "base_url", "credentials_ref")
    actions = ("run_catalog_sync",)

    @admin.action(description="Run catalog_sync now (models.list of the selected accounts)")
    def run_catalog_sync(self, request, queryset):
        accounts = list(queryset.filter(enabled=True).exclude(kind=ProviderAccount.Kind.SANDBOX))
        if not accounts:
            self.message_user(request, "No enabled Google account selected.", messages.WARNING)
            return
        report = catalog_sync(accounts=accounts)
        level = messages.WARNING if report.failed else messages.SUCCESS
        self.message_user(request, f"catalog_sync: {report.summary()}", level)

    @admin.display(boolean=True, description="Credentials found")
    def credentials_configured(self, obj: ProviderAccount) -> bool:
        return account_credentials(obj) is not None

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return readonly
        return readonly + self.SENSITIVE_FIELDS

    def has_add_permission(self, request):
        return request.user.is_superuser and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def construct_change_message(self, request, form, formsets, add=False):
        """Django's history records which fields changed; for the sensitive ones record the values
        too (references and URLs, never secrets), so the audit trail says where a secret went."""
        message = super().construct_change_message(request, form, formsets, add)
        values: dict[str, dict[str, object]] = {
            name: {"old": form.initial.get(name, ""), "new": form.cleaned_data.get(name, "")}
            for name in self.SENSITIVE_FIELDS
            if name in form.changed_data
        }
        if values:
            message = [*message, {"security": values}] if isinstance(message, list) else message  # type: ignore[dict-item]
        return message


class RouteInline(admin.TabularInline):
    model = Route
    extra = 0
    fields = ("tier", "position", "account", "options", "enabled", "disabled_reason")
    readonly_fields = ("disabled_reason",)


@admin.register(UpstreamModel)
class UpstreamModelAdmin(admin.ModelAdmin):
    """Prices and capabilities are edited here; `source` says where each fact came from.
    Discovered models (found by catalog_sync) stay unrouted until an operator makes them active."""

    list_display = (
        "model_id",
        "display_name",
        "protocol",
        "lifecycle",
        "shutdown_date",
        "successor",
        "last_seen_upstream_at",
        "metadata_mismatch",
    )
    list_filter = ("protocol", "lifecycle")
    search_fields = ("model_id", "display_name")
    readonly_fields = ("upstream_metadata", "metadata_mismatch", "last_seen_upstream_at")
    inlines = (RouteInline,)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        catalog_invalidate()


@admin.register(CatalogAlert)
class CatalogAlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "model_id", "account", "message", "acknowledged_at")
    list_filter = ("kind", ("acknowledged_at", admin.EmptyFieldListFilter))
    search_fields = ("model_id", "message")
    readonly_fields = ("kind", "model_id", "account", "message", "created_at", "acknowledged_at")
    actions = ("acknowledge",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Acknowledge the selected alerts")
    def acknowledge(self, request, queryset):
        count = queryset.filter(acknowledged_at__isnull=True).update(acknowledged_at=timezone.now())
        self.message_user(request, f"{count} alert(s) acknowledged.")


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = (
        "tier",
        "position",
        "account",
        "model",
        "options",
        "enabled",
        "disabled_reason",
        "calls_last_hour",
        "errors_last_hour",
    )
    list_filter = ("tier", "enabled", "account")
    list_editable = ("position", "enabled")
    ordering = ("tier", "position")

    def save_model(self, request, obj, form, change):
        if obj.enabled:
            obj.disabled_reason = ""  # an operator brought it back: the system's reason is stale
        super().save_model(request, obj, form, change)

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
        "upstream_cost",
        "service_tier",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "tier", "served_tier", "service_tier", "livemode")
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


@admin.register(InputFile)
class InputFileAdmin(_ReadOnlyAdmin):
    """Input images (uploads and inline inputs); deleted by retention (generation.files)."""

    list_display = (
        "public_id",
        "organization",
        "source",
        "mime_type",
        "width",
        "height",
        "size_bytes",
        "expires_at",
    )
    list_filter = ("source", "mime_type")
    search_fields = ("public_id", "organization__name", "organization__public_id")
    list_select_related = ("organization",)
