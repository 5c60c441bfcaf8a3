"""Generation: the upstream catalog (provider accounts, models, routes) and jobs with their images.

The catalog is data, editable in admin and seeded by a migration: model ids, capabilities and
prices change too often to live in code. A Job row is the source of truth for a request; the task
broker only rings the doorbell (see generation/jobs.py for the status machine and its invariants).
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import date
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from tenants.ids import new_public_id
from tenants.models import OrgScopedQuerySet, Tier

logger = logging.getLogger(__name__)


def new_job_id() -> str:
    return new_public_id("gen")


def new_image_id() -> str:
    return new_public_id("img")


def new_batch_id() -> str:
    return new_public_id("batch")


def new_delivery_id() -> str:
    return new_public_id("whdel")


def new_file_id() -> str:
    return new_public_id("file")


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


# --- Catalog --------------------------------------------------------------------------------
class ProviderAccount(models.Model):
    """One set of upstream credentials with its own limits (a Gemini API key, a Vertex project)."""

    class Kind(models.TextChoices):
        SANDBOX = "sandbox", "Sandbox (local renderer)"
        GEMINI_API = "gemini_api", "Gemini Developer API"
        VERTEX_AI = "vertex_ai", "Vertex AI"

    DEFAULT_BASE_URLS: dict[str, tuple[str, str]] = {
        Kind.GEMINI_API: ("GEMINI_API_BASE", "https://generativelanguage.googleapis.com"),
        Kind.VERTEX_AI: ("VERTEX_API_BASE", "https://aiplatform.googleapis.com"),
    }

    name = models.SlugField(max_length=60, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.CharField(
        max_length=300,
        blank=True,
        help_text="Blank: GEMINI_API_BASE / VERTEX_API_BASE from the environment, else Google's.",
    )
    region = models.CharField(max_length=40, default="global")
    project = models.CharField(
        max_length=120, blank=True, help_text="Vertex project id (else the service account's)."
    )
    credentials_ref = models.CharField(
        max_length=300,
        blank=True,
        help_text="Where the secret lives, never the secret: 'env:VAR' (the variable holds the API key or "
        "service-account JSON), 'envfile:VAR' (the variable holds a file path), or 'file:/path'.",
    )
    max_concurrency = models.PositiveIntegerField(default=32, help_text="Calls in flight across all workers.")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: unlimited.")
    images_per_minute = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: unlimited.")
    timeout_seconds = models.PositiveIntegerField(default=120)
    options = models.JSONField(
        default=dict, blank=True, help_text='Sandbox: {"latency_ms": 800, "failure_rate": 0}'
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        env_name, default = self.DEFAULT_BASE_URLS.get(self.kind, ("", ""))
        return (os.environ.get(env_name) or default).rstrip("/") if env_name else ""

    def clean(self) -> None:
        """Admin edits are checked against the same policy the worker applies (see below)."""
        problems = {}
        if self.base_url and not base_url_allowed(self.base_url):
            problems["base_url"] = (
                "Only Google's API hosts (PROVIDER_BASE_URL_HOSTS) over https; http only for loopback."
            )
        ref_problem = credentials_ref_problem(self.credentials_ref) if self.credentials_ref else None
        if ref_problem:
            problems["credentials_ref"] = ref_problem
        if problems:
            raise ValidationError(problems)


# --- Where provider secrets may come from and go to -------------------------------------------
# A staff user edits provider accounts in the admin; without these rules they could point an
# account's credentials at any variable (STRIPE_SECRET_KEY) or file (/proc/self/environ) and its
# base_url at their own host, and the worker would send that secret there as its API key.
def env_name_allowed(name: str) -> bool:
    return bool(name) and any(fnmatchcase(name, pattern) for pattern in settings.PROVIDER_SECRET_ENV_NAMES)


def secret_path_allowed(path: str) -> bool:
    """Inside PROVIDER_SECRETS_DIR after resolving symlinks and `..`."""
    try:
        resolved = Path(path).resolve(strict=False)
        root = Path(settings.PROVIDER_SECRETS_DIR).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):
        return False
    return resolved != root and resolved.is_relative_to(root)


def credentials_ref_problem(ref: str) -> str | None:
    scheme, _, value = ref.partition(":")
    if scheme in ("env", "envfile"):
        if not env_name_allowed(value):
            names = ", ".join(settings.PROVIDER_SECRET_ENV_NAMES)
            return f"Environment variables must match PROVIDER_SECRET_ENV_NAMES ({names})."
        return None
    if scheme == "file":
        if not secret_path_allowed(value):
            return f"Files must be inside PROVIDER_SECRETS_DIR ({settings.PROVIDER_SECRETS_DIR})."
        return None
    return "Use env:VAR, envfile:VAR or file:/path."


def base_url_allowed(url: str) -> bool:
    """https to a host matching PROVIDER_BASE_URL_HOSTS; plain http only to an allowed loopback
    host (the fake upstream of development and tests)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if parts.username or parts.password or not host:
        return False
    if not any(fnmatchcase(host, pattern.lower()) for pattern in settings.PROVIDER_BASE_URL_HOSTS):
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in ("127.0.0.1", "localhost", "::1"))


class UpstreamModel(models.Model):
    class Protocol(models.TextChoices):
        PREDICT = "predict", "Imagen :predict"
        GENERATE_CONTENT = "generate_content", "Gemini :generateContent"

    class Lifecycle(models.TextChoices):
        ACTIVE = "active", "Active"
        DEPRECATED = "deprecated", "Deprecated"
        RETIRED = "retired", "Retired"
        # Seen in an upstream models.list but not priced or routed by an operator yet: never routed.
        DISCOVERED = "discovered", "Discovered (not routed)"

    model_id = models.CharField(max_length=100, unique=True)
    display_name = models.CharField(max_length=100)
    protocol = models.CharField(max_length=20, choices=Protocol.choices)
    # {"aspect_ratios": [...], "resolutions": [...], "max_images": 4, "max_images_per_call": 4,
    #  "output_formats": [...], "seed": bool, "negative_prompt": bool, "safety_levels": [...],
    #  "person_generation": [...], "dimensions": {resolution: {ratio: [w, h]}}}
    capabilities = models.JSONField(default=dict)
    lifecycle = models.CharField(max_length=16, choices=Lifecycle.choices, default=Lifecycle.ACTIVE)
    shutdown_date = models.DateField(null=True, blank=True)
    successor = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # What we pay per delivered image, by resolution, in USD: {"1K": "0.067", ...}
    cost_per_image = models.JSONField(default=dict)
    # Token-priced models (Gemini), USD per million tokens:
    # {"image_output": "60", "input": "0.5", "text_output": "3", "thinking": "3"} ("thinking" defaults
    # to "text_output": Google bills thought tokens at the text-output rate).
    # When the upstream reports token counts, the cost is computed from them instead of cost_per_image.
    token_prices = models.JSONField(default=dict, blank=True)
    # Where the facts above come from ("Google deprecations page 2026-09", "[3P] …"): operators
    # keep them current, and catalog_sync checks them against the upstream's models.list.
    source = models.CharField(max_length=300, blank=True)
    # What catalog_sync last saw upstream: {"account": {"displayName", "supportedGenerationMethods",
    # "inputTokenLimit", "outputTokenLimit"}}; and a disagreement with our row, if any.
    upstream_metadata = models.JSONField(default=dict, blank=True)
    metadata_mismatch = models.CharField(max_length=500, blank=True)
    last_seen_upstream_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model_id"]

    def __str__(self) -> str:
        return self.model_id

    def is_retired(self, today: date) -> bool:
        if self.lifecycle == self.Lifecycle.RETIRED:
            return True
        return self.shutdown_date is not None and today >= self.shutdown_date

    def cost_for(self, resolution: str) -> Decimal:
        value = self.cost_per_image.get(resolution)
        return Decimal(str(value)) if value is not None else Decimal("0")


class CatalogAlert(models.Model):
    """Something an operator must look at: a model gone upstream, a route disabled by a 404, a
    model newly discovered, metadata that disagree. Shown in admin and on the operator page until
    acknowledged; one open alert per (kind, model, account) so a daily sync does not pile them up."""

    class Kind(models.TextChoices):
        MODEL_GONE = "model_gone", "Model disappeared upstream"
        MODEL_NOT_FOUND = "model_not_found", "Upstream answered 404 model not found"
        MODEL_DISCOVERED = "model_discovered", "New model discovered upstream"
        METADATA_MISMATCH = "metadata_mismatch", "Upstream metadata disagree"
        SYNC_FAILED = "sync_failed", "catalog_sync could not list models"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    model_id = models.CharField(max_length=100)
    account = models.ForeignKey(
        ProviderAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["acknowledged_at", "kind"], name="catalog_alert_open")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.model_id}"


class ShutdownNotice(models.Model):
    """One e-mail sent to an organization's owners about one model's shutdown at one threshold
    (30 or 7 days before). The unique constraint makes the daily task send it at most once."""

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    model_id = models.CharField(max_length=100)
    shutdown_date = models.DateField()
    days_before = models.PositiveSmallIntegerField()
    recipients = models.JSONField(default=list)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "model_id", "days_before"], name="uniq_shutdown_notice"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.model_id} -{self.days_before}d"


class Route(models.Model):
    """tier → ordered (provider account, model, options). Lower position = preferred when healthy."""

    tier = models.CharField(max_length=16, choices=Tier.choices)
    position = models.PositiveSmallIntegerField(default=10)
    account = models.ForeignKey(ProviderAccount, on_delete=models.CASCADE, related_name="routes")
    model = models.ForeignKey(UpstreamModel, on_delete=models.CASCADE, related_name="routes")
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"thinking_level": "MINIMAL", "service_tier": "flex"}; service_tier is standard '
        "(default), flex (-50%, slower, may be shed: batch items prefer it) or priority (with "
        '"priority_multiplier", e.g. "1.8", the price factor over standard).',
    )
    enabled = models.BooleanField(default=True)
    # Why the route was switched off by the system (catalog_sync or a live 404), for the operator.
    disabled_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["tier", "position", "id"]

    def __str__(self) -> str:
        return f"{self.tier}: {self.label}"

    @property
    def label(self) -> str:
        return f"{self.account.name}/{self.model.model_id}"


# --- Jobs -----------------------------------------------------------------------------------
class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    public_id = models.CharField(max_length=40, unique=True, default=new_job_id, editable=False)
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="jobs")
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    livemode = models.BooleanField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)

    # What was asked.
    tier = models.CharField(max_length=16, choices=Tier.choices)
    requested_model = models.CharField(max_length=100, blank=True)
    prompt = models.TextField()
    count = models.PositiveSmallIntegerField()
    params = models.JSONField(default=dict)  # aspect_ratio, resolution, output_format, seed, ...
    fallback_policy = models.CharField(max_length=32)
    metadata = models.JSONField(default=dict, blank=True)
    webhook_url = models.CharField(max_length=2000, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)

    # What served it.
    served_tier = models.CharField(max_length=16, blank=True)
    served_model = models.CharField(max_length=100, blank=True)
    route = models.CharField(max_length=120, blank=True)
    fallback_reason = models.CharField(max_length=200, blank=True)
    attempts_log = models.JSONField(default=list, blank=True)

    # Execution: claimed by one worker at a time through a lease (see generation/jobs.py).
    quota_period = models.DateField(null=True, blank=True)  # set when live quota was reserved
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    # Outcome.
    error_code = models.CharField(max_length=60, blank=True)
    error_message = models.TextField(blank=True)
    images_delivered = models.PositiveSmallIntegerField(default=0)
    amount = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    currency = models.CharField(max_length=3, default="usd")
    upstream_cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    # Google's service tier that actually served the job (the x-gemini-service-tier header, else
    # what we asked for): "standard", "flex" or "priority"; blank for the sandbox and Imagen.
    service_tier = models.CharField(max_length=16, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Batch items: the batch and the item's caller-chosen id, unique within the batch.
    batch = models.ForeignKey("Batch", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    custom_id = models.CharField(max_length=64, blank=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-public_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "custom_id"],
                condition=models.Q(batch__isnull=False),
                name="uniq_job_batch_custom_id",
            ),
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="uniq_job_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "public_id"], name="job_org_id"),
            models.Index(fields=["organization", "status", "public_id"], name="job_org_status_id"),
            models.Index(fields=["status", "lease_expires_at"], name="job_status_lease"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def latency_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.created_at).total_seconds() * 1000)


class Image(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=new_image_id, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    index = models.PositiveSmallIntegerField()
    storage_path = models.CharField(max_length=300, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    mime_type = models.CharField(max_length=40, blank=True)
    size_bytes = models.PositiveIntegerField(default=0)
    filtered = models.BooleanField(default=False)
    filter_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="uniq_image_job_index")]

    def __str__(self) -> str:
        return self.public_id


# --- Input images -----------------------------------------------------------------------------
class InputFileQuerySet(models.QuerySet):
    def for_org(self, organization) -> InputFileQuerySet:
        return self.filter(organization=organization)


class InputFile(models.Model):
    """An input image (uploaded with POST /v1/files, or sent inline as a URL or base64 with a
    request), stored re-encoded by us: content type sniffed from the bytes, EXIF and other
    metadata dropped. Deleted after `expires_at` by the retention schedule unless an unfinished
    job still needs it (generation.files.services)."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded"
        URL = "url", "Fetched from a URL"
        INLINE = "inline", "Inline (base64)"

    public_id = models.CharField(max_length=40, unique=True, default=new_file_id, editable=False)
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    filename = models.CharField(max_length=200, blank=True)
    source_url = models.CharField(max_length=2000, blank=True)
    storage_path = models.CharField(max_length=300)
    mime_type = models.CharField(max_length=40)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    # SHA-256 of the bytes as received: the same inline image sent twice (an idempotent retry)
    # becomes the same file, so the request's fingerprint does not change.
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    objects = InputFileQuerySet.as_manager()

    class Meta:
        ordering = ["-public_id"]
        indexes = [
            models.Index(fields=["organization", "sha256"], name="inputfile_org_sha"),
            models.Index(fields=["expires_at"], name="inputfile_expires"),
        ]

    def __str__(self) -> str:
        return self.public_id


class JobInput(models.Model):
    """Which input files a job used, in order (role image or mask). The file id is kept even
    after retention deleted the file, so the job page can say the input expired."""

    class Role(models.TextChoices):
        IMAGE = "image", "Input image"
        MASK = "mask", "Mask"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="inputs")
    file = models.ForeignKey(InputFile, null=True, on_delete=models.SET_NULL, related_name="job_inputs")
    file_public_id = models.CharField(max_length=40)
    role = models.CharField(max_length=8, choices=Role.choices)
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["job_id", "role", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "role", "position"], name="uniq_jobinput_position")
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.role}{self.position}"


class RouteStatsMinute(models.Model):
    """Per-route call counters by minute, flushed by every worker; the operator dashboard's source."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="stats")
    minute = models.DateTimeField()
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["route", "minute"], name="uniq_route_minute")]

    def __str__(self) -> str:
        return f"{self.route_id}@{self.minute:%H:%M}"


# --- Batches --------------------------------------------------------------------------------
class Batch(models.Model):
    """Up to 1,000 validated generation requests, turned into jobs by the feeder a few at a time.

    `requests` holds the validated items in submission order; `next_index` is the feeder's cursor:
    items before it have a job (or were refused by quota), items after it are still pending.
    """

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        CANCELING = "canceling", "Canceling"
        CANCELED = "canceled", "Canceled"
        COMPLETED = "completed", "Completed"

    TERMINAL = (Status.CANCELED, Status.COMPLETED)

    public_id = models.CharField(max_length=40, unique=True, default=new_batch_id, editable=False)
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="batches")
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    requests = models.JSONField(default=list)  # [{"custom_id": str, "body": {...}}, ...]
    total = models.PositiveIntegerField()
    next_index = models.PositiveIntegerField(default=0)
    # One feeder at a time tops the batch up (so it never overshoots its share); a feeder that
    # died leaves this in the past and the next one proceeds.
    feeder_lease_until = models.DateTimeField(null=True, blank=True)
    webhook_url = models.CharField(max_length=2000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-public_id"]
        indexes = [
            models.Index(fields=["organization", "public_id"], name="batch_org_id"),
            models.Index(fields=["status"], name="batch_status"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


# --- Tenant webhooks ------------------------------------------------------------------------
class WebhookEndpoint(models.Model):
    """The organization's completion webhook and its signing secret (shown to the tenant)."""

    organization = models.OneToOneField(
        "tenants.Organization", on_delete=models.CASCADE, related_name="webhook_endpoint"
    )
    url = models.CharField(max_length=2000, blank=True)
    secret = models.CharField(max_length=80, default=new_webhook_secret)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.url or '(no url)'}"


class WebhookDelivery(models.Model):
    """One event to one URL. Claimed by a lease on `next_attempt_at` so only one sender holds it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    public_id = models.CharField(max_length=40, unique=True, default=new_delivery_id, editable=False)
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=40)
    object_id = models.CharField(max_length=40)
    url = models.CharField(max_length=2000)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-public_id"]
        indexes = [
            models.Index(fields=["organization", "public_id"], name="whdel_org_id"),
            models.Index(fields=["status", "next_attempt_at"], name="whdel_status_due"),
        ]

    def __str__(self) -> str:
        return self.public_id
