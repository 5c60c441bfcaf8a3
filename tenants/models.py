"""Tenants: organizations, members, plans, API keys and the counters that enforce their limits."""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from tenants.ids import new_api_key_id, new_invitation_id, new_organization_id


class Tier(models.TextChoices):
    FAST = "fast", "Fast"
    STANDARD = "standard", "Standard"
    ULTRA = "ultra", "Ultra"


ALL_TIERS = [Tier.FAST.value, Tier.STANDARD.value, Tier.ULTRA.value]


class Plan(models.Model):
    """What an organization pays and may use. Any limit can be overridden per organization."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    is_default = models.BooleanField(default=False, help_text="Plan given to new sign-ups.")
    # Images per calendar month (UTC) the organization may generate with live keys.
    included_images_per_month = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    base_price_monthly = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    price_fast = models.DecimalField(max_digits=10, decimal_places=4)
    price_standard = models.DecimalField(max_digits=10, decimal_places=4)
    price_ultra = models.DecimalField(max_digits=10, decimal_places=4)
    # Edits (requests with input images) may cost more per output image: {"fast": "0.05", ...};
    # a tier left out is priced as a generation.
    edit_prices = models.JSONField(default=dict, blank=True)
    requests_per_minute = models.PositiveIntegerField()
    max_concurrent_jobs = models.PositiveIntegerField()
    allowed_tiers = models.JSONField(default=list)
    # Filled by `manage.py stripe_sync`; blank until then.
    stripe_product_id = models.CharField(max_length=255, blank=True)
    stripe_base_price_id = models.CharField(max_length=255, blank=True)
    stripe_price_fast_id = models.CharField(max_length=255, blank=True)
    stripe_price_standard_id = models.CharField(max_length=255, blank=True)
    stripe_price_ultra_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["base_price_monthly", "code"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_free(self) -> bool:
        """Nothing to pay: no base price and every tier at 0. Live keys are refused on such a plan
        (tenants.admission): a live image costs us upstream money that nobody would pay for."""
        return self.base_price_monthly == 0 and not any(
            price > 0 for price in (self.price_fast, self.price_standard, self.price_ultra)
        )

    def price_for(self, tier: str) -> Decimal:
        return {
            Tier.FAST: self.price_fast,
            Tier.STANDARD: self.price_standard,
            Tier.ULTRA: self.price_ultra,
        }[Tier(tier)]

    def edit_price_for(self, tier: str) -> Decimal:
        """Per output image of a request with input images (the generation price unless set)."""
        value = (self.edit_prices or {}).get(str(tier))
        return Decimal(str(value)) if value is not None else self.price_for(tier)


class OrgScopedQuerySet(models.QuerySet):
    """Rows owned by one organization. Views and services read tenant-owned data only through
    `for_org`, so another tenant's row is simply not found (a 404, never a 403)."""

    def for_org(self, organization) -> Self:
        return self.filter(organization=organization)


def default_spend_alert_thresholds() -> list[int]:
    return [80, 100]


def validate_spend_alert_thresholds(value) -> None:
    """Admin and forms: whole percentages 1-100 (tenants.services cleans them the same way)."""
    if not isinstance(value, list) or not all(isinstance(t, int) and 1 <= t <= 100 for t in value):
        raise ValidationError("A list of whole percentages between 1 and 100, e.g. [80, 100].")


class OrganizationQuerySet(models.QuerySet):
    def active(self) -> OrganizationQuerySet:
        return self.filter(status=Organization.Status.ACTIVE)


class Organization(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    class Fallback(models.TextChoices):
        ALLOW = "allow", "Fall back, billed at the requested tier's price"
        ALLOW_BILLED_AS_SERVED = "allow_billed_as_served", "Fall back, billed at the served tier's price"
        DENY = "deny", "Never fall back"

    public_id = models.CharField(max_length=40, unique=True, default=new_organization_id, editable=False)
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="organizations")
    created_at = models.DateTimeField(auto_now_add=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # Denormalized from billing (set through tenants.services.organization_payment_failed_set by
    # billing's Stripe webhook handling): admission reads it without a billing query.
    payment_failed_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Per-tenant overrides: null means "use the plan's value".
    monthly_images_override = models.PositiveIntegerField(null=True, blank=True)
    requests_per_minute_override = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent_jobs_override = models.PositiveIntegerField(null=True, blank=True)
    allowed_tiers_override = models.JSONField(null=True, blank=True)

    # Customer settings.
    fallback_policy = models.CharField(max_length=32, choices=Fallback.choices, default=Fallback.ALLOW)
    image_url_ttl_seconds = models.PositiveIntegerField(default=3600)
    auto_migrate_models = models.BooleanField(
        default=False,
        help_text="Serve requests pinned to a retired model with its successor instead of failing.",
    )
    # Spend controls (tenants.limits): live spend per calendar month (UTC), in the plan's currency.
    monthly_spend_cap = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Live spend per calendar month (UTC) in the plan's currency; empty means no cap.",
    )
    spend_alert_thresholds = models.JSONField(
        default=default_spend_alert_thresholds,
        blank=True,
        validators=[validate_spend_alert_thresholds],
        help_text="Percentages of the monthly spend cap at which owners are e-mailed, once each per month.",
    )

    # Jobs accepted and not yet finished; changed only by conditional UPDATEs (tenants.limits).
    jobs_in_flight = models.PositiveIntegerField(default=0, editable=False)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class ApiKey(models.Model):
    """An API key. Only the SHA-256 of the whole key is stored; the key is shown once at creation."""

    class Mode(models.TextChoices):
        LIVE = "live", "Live"
        TEST = "test", "Test"

    class Scope(models.TextChoices):
        GENERATE = "generate", "Generate"
        READ = "read", "Read"

    public_id = models.CharField(max_length=40, unique=True, default=new_api_key_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    mode = models.CharField(max_length=8, choices=Mode.choices)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Caps on what this key may generate per calendar month (UTC), live mode only; empty: no cap.
    monthly_image_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Live images per calendar month (UTC); empty means no cap."
    )
    monthly_spend_cap = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Live spend per calendar month (UTC) in the plan's currency; empty means no cap.",
    )

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"ig_{self.mode}_…{self.last4}"

    @property
    def is_test(self) -> bool:
        return self.mode == self.Mode.TEST


class QuotaPeriod(models.Model):
    """Images reserved by an organization in one billing month (live keys only).

    `images_reserved` counts images accepted for generation; undelivered images are given back
    when their job ends. It only ever changes through conditional UPDATEs, which is what makes a
    burst of parallel reservations unable to overshoot the limit.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="quota_periods")
    period_start = models.DateField()
    images_reserved = models.PositiveIntegerField(default=0)
    # Worst-case spend of jobs in flight plus the actual spend of finished ones (what the cap checks),
    # and the actual spend alone (what alerts and dashboards show). Conditional UPDATEs only.
    spend_reserved = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))
    spend_used = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "period_start"], name="uniq_quota_period")
        ]

    def __str__(self) -> str:
        return f"{self.organization} {self.period_start:%Y-%m}: {self.images_reserved}"


class ApiKeyPeriod(models.Model):
    """What one live key reserved in one billing month, against its image and spend caps; changed
    only by conditional UPDATEs, like `QuotaPeriod`."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="periods")
    period_start = models.DateField()
    images_reserved = models.PositiveIntegerField(default=0)
    spend_reserved = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))
    spend_used = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "period_start"], name="uniq_api_key_period")
        ]

    def __str__(self) -> str:
        return (
            f"{self.api_key} {self.period_start:%Y-%m}: {self.images_reserved} images, {self.spend_reserved}"
        )


class SpendReservation(models.Model):
    """The worst case one live job reserved against the spend caps (count x the highest unit price
    that could apply), settled to the actual amount exactly once when the job ends."""

    job_public_id = models.CharField(max_length=40, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    period_start = models.DateField()
    images = models.PositiveIntegerField()
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    settled_at = models.DateTimeField(null=True, blank=True)
    settled_images = models.PositiveIntegerField(null=True, blank=True)
    settled_amount = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.job_public_id}: {self.amount} reserved"


class SpendAlert(models.Model):
    """A spend threshold e-mailed to the owners: at most one row (one e-mail) per threshold per month."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="spend_alerts")
    period_start = models.DateField()
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the monthly spend cap.")
    spend = models.DecimalField(max_digits=14, decimal_places=4)
    cap = models.DecimalField(max_digits=12, decimal_places=2)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start", "threshold"], name="uniq_spend_alert_threshold"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization} {self.period_start:%Y-%m} {self.threshold} %"


class RateLimitCounter(models.Model):
    """Fixed-window request counters, used when Redis is not configured."""

    key = models.CharField(max_length=120)
    window_start = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "window_start"], name="uniq_ratelimit_window")]

    def __str__(self) -> str:
        return f"{self.key}@{self.window_start}: {self.count}"


class Invitation(models.Model):
    """An e-mailed invitation to join an organization with a role. Like API keys, only the SHA-256
    of the token is stored; the token travels once, in the e-mail's link."""

    public_id = models.CharField(max_length=40, unique=True, default=new_invitation_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} → {self.organization} ({self.role})"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None


class LoginFailure(models.Model):
    """Failed log-ins counted per throttling key (a user name, a client network, or both), for
    exponential back-off (tenants.login_throttle). Rows of keys that stopped failing are deleted
    on success or once stale; log-ins are rare enough for the database, even with Redis."""

    key = models.CharField(max_length=200, unique=True)
    failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField()
    blocked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.failures}"


class EmailVerification(models.Model):
    """The e-mail address of a self-serve sign-up, until and after it is verified.

    Only self-serve sign-ups have a row: accounts created by an operator or through an invitation
    (whose link was delivered to the address) count as verified. An unverified account may use test
    keys; live keys and paid plans need `verified_at` (tenants.services.user_require_verified_email).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.email} ({'verified' if self.verified_at else 'unverified'})"
