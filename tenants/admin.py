"""Operator admin for tenants. Key secrets and hashes are never displayed; status changes go
through the services so they take effect on the next API request."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from tenants import services
from tenants.models import ApiKey, Invitation, Membership, Organization, Plan, QuotaPeriod, SpendAlert
from tenants.selectors import billing_period_start


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "is_default",
        "included_images_per_month",
        "price_fast",
        "price_standard",
        "price_ultra",
        "requests_per_minute",
        "max_concurrent_jobs",
        "allowed_tiers",
    )
    readonly_fields = (
        "stripe_product_id",
        "stripe_base_price_id",
        "stripe_price_fast_id",
        "stripe_price_standard_id",
        "stripe_price_ultra_id",
    )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "masked", "mode", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False  # keys are created where their secret can be shown once: dashboard or createtenant


class OrganizationActionForm(ActionForm):
    plan = forms.ModelChoiceField(
        queryset=Plan.objects.all(), required=False, label="Plan (for 'Change plan')"
    )


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "public_id",
        "plan",
        "status",
        "images_this_month",
        "jobs_in_flight",
        "created_at",
    )
    list_filter = ("status", "plan")
    search_fields = ("name", "slug", "public_id")
    inlines = (MembershipInline, ApiKeyInline)
    action_form = OrganizationActionForm
    actions = ("suspend", "reactivate", "change_plan", "revoke_all_keys")
    readonly_fields = ("public_id", "status", "suspended_at", "jobs_in_flight", "created_at")
    fieldsets = (
        (None, {"fields": ("public_id", "name", "slug", "plan", "status", "suspended_at", "created_at")}),
        (
            "Limit overrides (blank = plan value)",
            {
                "fields": (
                    "monthly_images_override",
                    "requests_per_minute_override",
                    "max_concurrent_jobs_override",
                    "allowed_tiers_override",
                )
            },
        ),
        ("Spend controls", {"fields": ("monthly_spend_cap", "spend_alert_thresholds")}),
        ("Settings", {"fields": ("fallback_policy", "image_url_ttl_seconds", "jobs_in_flight")}),
    )

    def get_queryset(self, request):
        period = QuotaPeriod.objects.filter(organization=OuterRef("pk"), period_start=billing_period_start())
        return (
            super()
            .get_queryset(request)
            .select_related("plan")
            .annotate(
                _images_this_month=Coalesce(
                    Subquery(period.values("images_reserved")[:1], output_field=IntegerField()), 0
                )
            )
        )

    @admin.display(description="Images this month", ordering="_images_this_month")
    def images_this_month(self, obj):
        return obj._images_this_month

    @admin.action(description="Suspend selected organizations (their keys answer 403 at once)")
    def suspend(self, request, queryset):
        now = timezone.now()
        for organization in queryset:
            services.organization_suspend(organization=organization, now=now)
        self.message_user(request, f"Suspended {queryset.count()} organization(s).", messages.SUCCESS)

    @admin.action(description="Reactivate selected organizations")
    def reactivate(self, request, queryset):
        for organization in queryset:
            services.organization_reactivate(organization=organization)
        self.message_user(request, f"Reactivated {queryset.count()} organization(s).", messages.SUCCESS)

    @admin.action(description="Change plan (choose the plan in the box above)")
    def change_plan(self, request, queryset):
        plan_id = request.POST.get("plan") or ""
        plan = Plan.objects.filter(pk=plan_id).first() if plan_id.isdigit() else None
        if plan is None:
            self.message_user(request, "Choose a plan first.", messages.ERROR)
            return
        for organization in queryset:
            services.organization_change_plan(organization=organization, plan=plan)
        self.message_user(request, f"Moved {queryset.count()} organization(s) to {plan}.", messages.SUCCESS)

    @admin.action(description="Revoke every API key of the selected organizations")
    def revoke_all_keys(self, request, queryset):
        keys = ApiKey.objects.filter(organization__in=queryset, revoked_at__isnull=True)
        count = keys.update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "organization",
        "masked",
        "mode",
        "scopes",
        "monthly_image_cap",
        "monthly_spend_cap",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("mode", "revoked_at")
    search_fields = ("name", "public_id", "organization__name", "last4")
    fields = (
        "public_id",
        "organization",
        "name",
        "masked",
        "mode",
        "scopes",
        "monthly_image_cap",
        "monthly_spend_cap",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = (
        "public_id",
        "organization",
        "masked",
        "mode",
        "created_by",
        "created_at",
        "last_used_at",
    )
    actions = ("revoke",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__username", "user__email", "organization__name")
    autocomplete_fields = ("user", "organization")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Read-only: invitations are sent from the dashboard; the token is never stored, only its hash."""

    list_display = ("email", "organization", "role", "invited_by", "created_at", "expires_at", "accepted_at")
    list_filter = ("role",)
    search_fields = ("email", "organization__name", "public_id")
    list_select_related = ("organization", "invited_by")
    readonly_fields = (
        "public_id",
        "organization",
        "email",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    )
    exclude = ("token_hash",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SpendAlert)
class SpendAlertAdmin(admin.ModelAdmin):
    """Spend threshold e-mails sent to owners (one per threshold per month)."""

    list_display = ("organization", "period_start", "threshold", "spend", "cap", "sent_at")
    list_filter = ("threshold", "period_start")
    search_fields = ("organization__name",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
