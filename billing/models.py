"""The usage ledger: one row per delivered image. It is the truth that invoices, Stripe meter
events and dashboards derive from; rows are written once (by the generation engine, in the same
transaction that finishes the job) and never updated except for their reporting state.

Also here: the meter reports that carry usage to Stripe (`MeterReport`: one Stripe meter event per
customer, tier and minute, covering the usage records that point at it), operator alerts
(`BillingAlert`), each organization's billing state mirrored from Stripe webhooks (`BillingAccount`),
the Stripe meter per tier (`BillingMeter`), and the webhook events already processed (`StripeEvent`).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from tenants.ids import new_public_id
from tenants.models import Organization, OrgScopedQuerySet


def new_usage_record_id() -> str:
    return new_public_id("usg")


def new_meter_report_id() -> str:
    return new_public_id("mrp")


class UsageRecord(models.Model):
    class ReportStatus(models.TextChoices):
        # Not yet confirmed by Stripe: waiting for a subscription, for its meter report, or for the
        # report's send to succeed.
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent to Stripe"
        # Never billable: test mode or a zero amount.
        SKIPPED = "skipped", "Not billable"
        # Could not reach Stripe within its 35-day backdating limit: an operator bills it by hand.
        FAILED = "failed", "Unreportable (needs an operator)"

    public_id = models.CharField(max_length=40, unique=True, default=new_usage_record_id, editable=False)
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="usage_records"
    )
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    # Public ids rather than foreign keys: the ledger outlives job retention and stays decoupled.
    job_public_id = models.CharField(max_length=40, db_index=True)
    # One image is billed at most once, whatever retries or duplicate workers do.
    image_public_id = models.CharField(max_length=40, unique=True)
    livemode = models.BooleanField()
    requested_tier = models.CharField(max_length=16)
    served_tier = models.CharField(max_length=16)
    # The tier whose price applies (the requested one under fallback policy "allow").
    billed_tier = models.CharField(max_length=16)
    model = models.CharField(max_length=100)
    route = models.CharField(max_length=120)
    currency = models.CharField(max_length=3, default="usd")
    unit_price = models.DecimalField(max_digits=10, decimal_places=4)
    amount = models.DecimalField(max_digits=12, decimal_places=4)
    upstream_cost = models.DecimalField(max_digits=12, decimal_places=6)
    created_at = models.DateTimeField(db_index=True)

    # Outbox state (billing.outbox): the record is counted in exactly one `MeterReport` (one Stripe
    # meter event of value N), assigned once, in the transaction that creates the report, and never
    # changed: the audit trail from an invoice line back to images. `claimed_until`/`claim_token`
    # are legacy per-record claims (the outbox now claims reports) and stay empty.
    meter_report = models.ForeignKey(
        "billing.MeterReport", null=True, blank=True, on_delete=models.PROTECT, related_name="usage_records"
    )
    report_status = models.CharField(
        max_length=16, choices=ReportStatus.choices, default=ReportStatus.PENDING
    )
    reported_at = models.DateTimeField(null=True, blank=True)
    report_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, default="")

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "created_at"], name="usage_org_created"),
            # Small: only rows still waiting to be reported.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(report_status="pending"),
                name="usage_outbox_pending",
            ),
            # Small: only rows not yet in a meter report (what aggregation scans).
            models.Index(
                fields=["organization", "id"],
                condition=Q(report_status="pending", meter_report__isnull=True),
                name="usage_outbox_unreported",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.organization_id} {self.billed_tier} {self.amount}"


class MeterReport(models.Model):
    """One Stripe meter event: `value` images of one tier for one customer in one minute.

    Its `public_id` is the event's `identifier`, fixed when the report is created, so every retry of
    the same report is the same event to Stripe. Stripe only deduplicates identifiers for 24 h: a
    send whose outcome is unknown (timeout, 5xx) sets `in_doubt_since`, and once that is older than
    BILLING_OUTBOX_RESEND_WINDOW_HOURS the report is not sent again until reconciliation
    (`billing.reconciliation`) has read Stripe's meter event summaries and decided whether Stripe
    counted it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "To send"
        SENT = "sent", "Confirmed by Stripe"
        RECONCILE = "reconcile", "In doubt past Stripe's dedupe window: waiting for reconciliation"
        FAILED = "failed", "Unreportable (needs an operator)"

    public_id = models.CharField(max_length=40, unique=True, default=new_meter_report_id, editable=False)
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.PROTECT, related_name="meter_reports"
    )
    # The customer at aggregation time: a retry reports to the same customer whatever happens later.
    stripe_customer_id = models.CharField(max_length=255)
    tier = models.CharField(max_length=16)
    # Filled when first sent (from BillingMeter); reconciliation reads the meter it went to.
    event_name = models.CharField(max_length=100, blank=True, default="")
    stripe_meter_id = models.CharField(max_length=255, blank=True, default="")
    # Start of the UTC minute the usage falls in; the meter event's timestamp. Minute-aligned because
    # Stripe's event summaries only take minute-aligned ranges.
    bucket_start = models.DateTimeField()
    value = models.PositiveIntegerField(help_text="Images: the number of usage records in this report.")
    amount = models.DecimalField(max_digits=14, decimal_places=4)
    currency = models.CharField(max_length=3, default="usd")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    first_sent_at = models.DateTimeField(null=True, blank=True)
    # The first attempt whose outcome we never learned (Stripe may or may not have counted it).
    in_doubt_since = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # How we know Stripe has it: "accepted", "duplicate" (an earlier attempt landed), "reconciled".
    confirmation = models.CharField(max_length=16, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-bucket_start", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"], condition=Q(status="pending"), name="meter_report_due"
            ),
            models.Index(fields=["stripe_customer_id", "tier", "bucket_start"], name="meter_report_bucket"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.public_id} {self.tier} x{self.value} @ {self.bucket_start:%Y-%m-%d %H:%M} ({self.status})"
        )


class BillingAlertQuerySet(models.QuerySet):
    def open(self) -> BillingAlertQuerySet:
        return self.filter(resolved_at__isnull=True)


class BillingAlert(models.Model):
    """Something an operator must look at, with the images and money at stake. Raised by the outbox
    and reconciliation, shown in admin and on the operator page; at most one open alert per kind,
    organization, tier and period (the raiser updates it rather than piling up copies)."""

    class Kind(models.TextChoices):
        USAGE_WAITING = "usage_waiting", "Usage waiting for a subscription"
        USAGE_OVERDUE = "usage_overdue", "Usage close to Stripe's 35-day limit"
        USAGE_UNREPORTABLE = "usage_unreportable", "Usage Stripe can no longer take (bill by hand)"
        RECONCILIATION_MISMATCH = "reconciliation_mismatch", "Ledger and Stripe disagree"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="billing_alerts"
    )
    tier = models.CharField(max_length=16, blank=True, default="")
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    images = models.PositiveIntegerField(default=0)
    amount = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    ledger_value = models.IntegerField(null=True, blank=True)
    stripe_value = models.IntegerField(null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = BillingAlertQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:80]}"


class BillingAccount(models.Model):
    """An organization's billing state, mirrored from Stripe. Webhooks are the only writers of the
    subscription and payment fields; the customer id is written when we create the customer."""

    # Subscription statuses under which Stripe invoices metered usage (so we report it).
    BILLABLE_STATUSES = ("active", "trialing", "past_due", "unpaid")

    organization = models.OneToOneField(
        "tenants.Organization", on_delete=models.CASCADE, related_name="billing_account"
    )
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="")
    stripe_subscription_id = models.CharField(max_length=255, blank=True, default="")
    # Stripe's own status string (active, trialing, past_due, unpaid, canceled, incomplete, …).
    subscription_status = models.CharField(max_length=32, blank=True, default="")
    # The plan whose Stripe prices the subscription carries.
    plan = models.ForeignKey(
        "tenants.Plan", null=True, blank=True, on_delete=models.SET_NULL, related_name="billing_accounts"
    )
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    # `created` of the last subscription event applied: older events arriving late are ignored.
    subscription_event_at = models.DateTimeField(null=True, blank=True)
    # When the first unpaid invoice failed; cleared by `invoice.paid`. Grace runs from here.
    payment_failed_at = models.DateTimeField(null=True, blank=True)
    last_invoice_paid_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_customer_id"],
                condition=~Q(stripe_customer_id=""),
                name="uniq_billing_stripe_customer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization} ({self.subscription_status or 'no subscription'})"

    @property
    def has_billable_subscription(self) -> bool:
        return bool(self.stripe_customer_id) and self.subscription_status in self.BILLABLE_STATUSES


class BillingMeter(models.Model):
    """The Stripe Billing Meter of one tier (sum of images), created by `manage.py stripe_sync`."""

    tier = models.CharField(max_length=16, unique=True)
    event_name = models.CharField(max_length=100, unique=True)
    stripe_meter_id = models.CharField(max_length=255)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.tier}: {self.event_name} ({self.stripe_meter_id})"


class StripeEvent(models.Model):
    """A webhook event we processed. The unique `event_id` makes processing happen once: the row is
    inserted in the same transaction that applies the event, so a replay finds it and does nothing."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    livemode = models.BooleanField(default=False)
    created = models.DateTimeField(help_text="When Stripe created the event.")
    received_at = models.DateTimeField(auto_now_add=True)
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What we did with it: "applied", or why it was ignored.
    outcome = models.CharField(max_length=200, blank=True, default="")
    payload = models.JSONField()

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class OrganizationMonthlySummary(Organization):
    """Admin-only view of organizations: images, revenue, upstream cost and margin for one month."""

    class Meta:
        proxy = True
        verbose_name = "monthly revenue and margin"
        verbose_name_plural = "monthly revenue and margin"
