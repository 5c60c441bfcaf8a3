"""Reads behind the dashboard pages: each page's numbers in a few aggregate queries.

Times are UTC; "this month" is the billing month (tenants.selectors.billing_period_start).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import UsageRecord
from billing.selectors import ZERO, organization_usage
from generation.batches.services import batch_list
from generation.engine.health import circuits_open
from generation.engine.storage import image_url
from generation.models import Batch, Image, InputFile, Job, JobInput, Route, RouteStatsMinute
from tenants.models import ALL_TIERS, ApiKey, Organization
from tenants.selectors import billing_period_start, organization_overview

LATENCY_SAMPLE_LIMIT = 20_000  # newest finished jobs of the month used for the percentiles


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def percentile(values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return None
    rank = max(1, round(fraction * len(values) + 0.4999))  # ceil without importing math for one call
    return values[min(rank, len(values)) - 1]


@dataclass(frozen=True)
class Overview:
    overview: object  # tenants.selectors.OrganizationOverview
    images: int
    billable_amount: Decimal
    currency: str
    chart: dict  # {"labels": [...], "tiers": {tier: [images per day]}, "p50": [...], "p95": [...]}
    jobs_total: int
    jobs_succeeded: int
    jobs_failed: int
    success_rate: float | None
    images_total: int
    images_filtered: int
    filter_rate: float | None
    latency_p50: int | None
    latency_p95: int | None
    recent_jobs: list[Job]

    @property
    def chart_rows(self) -> list[tuple[str, list[int], int | None, int | None]]:
        """The charts' text equivalent: one row per day."""
        tiers = list(self.chart["tiers"].values())
        return [
            (label, [values[i] for values in tiers], self.chart["p50"][i], self.chart["p95"][i])
            for i, label in enumerate(self.chart["labels"])
        ]


def organization_dashboard(*, organization: Organization, now: datetime | None = None) -> Overview:
    now = now or timezone.now()
    month = billing_period_start(now)
    today = now.astimezone(UTC).date()
    labels = _days(month, today)
    usage = organization_usage(organization=organization, start=month, end=today)
    per_tier: dict[str, dict[date, int]] = {tier: defaultdict(int) for tier in ALL_TIERS}
    for row in usage:
        per_tier.setdefault(row.tier, defaultdict(int))[row.day] += row.images

    jobs = list(
        Job.objects.for_org(organization)
        .filter(created_at__gte=_midnight(month))
        .order_by("-public_id")
        .values_list("status", "created_at", "finished_at")[:LATENCY_SAMPLE_LIMIT]
    )
    by_status: dict[str, int] = defaultdict(int)
    latencies: dict[date, list[int]] = defaultdict(list)
    for status, created, finished in jobs:
        by_status[status] += 1
        if status == Job.Status.SUCCEEDED and finished is not None:
            latencies[created.astimezone(UTC).date()].append(int((finished - created).total_seconds() * 1000))
    every_latency = sorted(ms for values in latencies.values() for ms in values)
    for values in latencies.values():
        values.sort()
    finished_jobs = by_status[Job.Status.SUCCEEDED] + by_status[Job.Status.FAILED]

    images = Image.objects.for_org(organization).filter(created_at__gte=_midnight(month))
    image_counts = images.aggregate(total=Count("id"), filtered=Count("id", filter=Q(filtered=True)))
    recent = with_thumbnails(
        list(Job.objects.for_org(organization).select_related("organization").order_by("-public_id")[:8]),
        organization=organization,
    )
    return Overview(
        overview=organization_overview(organization=organization, now=now),
        images=sum(row.images for row in usage if row.livemode),
        billable_amount=sum((row.amount for row in usage if row.livemode), ZERO),
        currency=organization.plan.currency,
        chart={
            "labels": [day.isoformat() for day in labels],
            "tiers": {tier: [counts.get(day, 0) for day in labels] for tier, counts in per_tier.items()},
            "p50": [percentile(latencies.get(day, []), 0.5) for day in labels],
            "p95": [percentile(latencies.get(day, []), 0.95) for day in labels],
        },
        jobs_total=len(jobs),
        jobs_succeeded=by_status[Job.Status.SUCCEEDED],
        jobs_failed=by_status[Job.Status.FAILED],
        success_rate=(by_status[Job.Status.SUCCEEDED] / finished_jobs) if finished_jobs else None,
        images_total=image_counts["total"],
        images_filtered=image_counts["filtered"],
        filter_rate=(image_counts["filtered"] / image_counts["total"]) if image_counts["total"] else None,
        latency_p50=percentile(every_latency, 0.5),
        latency_p95=percentile(every_latency, 0.95),
        recent_jobs=recent,
    )


def api_keys_for_dashboard(*, organization: Organization) -> list[ApiKey]:
    return list(ApiKey.objects.for_org(organization).select_related("created_by").order_by("-created_at"))


def playground_keys(*, organization: Organization, now: datetime | None = None) -> list[ApiKey]:
    """Keys the playground may run with: usable now, with the generate scope."""
    now = now or timezone.now()
    keys = ApiKey.objects.for_org(organization).filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
    return [key for key in keys.order_by("mode", "-created_at") if ApiKey.Scope.GENERATE in key.scopes]


def jobs_for_dashboard(
    *,
    organization: Organization,
    status: str | None,
    tier: str | None,
    api_key: str | None,
    cursor: str | None,
    limit: int = 25,
) -> tuple[list[Job], str | None]:
    """Newest first, filtered; returns the page and the cursor of the next one."""
    queryset = Job.objects.for_org(organization).select_related("api_key")
    if status:
        queryset = queryset.filter(status=status)
    if tier:
        queryset = queryset.filter(tier=tier)
    if api_key:
        queryset = queryset.filter(api_key__public_id=api_key)
    if cursor:
        queryset = queryset.filter(public_id__lt=cursor)
    jobs = list(queryset.order_by("-public_id")[: limit + 1])
    page = with_thumbnails(jobs[:limit], organization=organization)
    return page, (jobs[limit - 1].public_id if len(jobs) > limit else None)


# --- Images: thumbnails, gallery, inputs --------------------------------------------------------
def with_thumbnails(jobs: list[Job], *, organization: Organization) -> list[Job]:
    """Sets `job.thumbnail_url` (the first delivered image, signed) and `job.has_inputs` on each
    job, in two queries for the whole page."""
    ids = [job.pk for job in jobs]
    first: dict[int, Image] = {}
    for image in Image.objects.filter(job_id__in=ids, filtered=False).order_by("job_id", "index"):
        first.setdefault(image.job_id, image)
    with_inputs = set(JobInput.objects.filter(job_id__in=ids).values_list("job_id", flat=True).distinct())
    ttl = organization.image_url_ttl_seconds
    for job in jobs:
        image = first.get(job.pk)
        url = (
            image_url(public_id=image.public_id, storage_path=image.storage_path, ttl_seconds=ttl)
            if image and image.storage_path
            else None
        )
        setattr(job, "thumbnail_url", url)  # noqa: B010 - a page attribute, not a model field
        setattr(job, "has_inputs", job.pk in with_inputs)  # noqa: B010
    return jobs


@dataclass(frozen=True)
class GalleryImage:
    url: str
    width: int | None
    height: int | None
    job_public_id: str
    prompt: str
    edited: bool


def recent_images(*, organization: Organization, limit: int = 48) -> list[GalleryImage]:
    """The newest delivered images of the organization, with the prompt that made them."""
    rows = (
        Image.objects.for_org(organization)
        .filter(filtered=False)
        .exclude(storage_path="")
        .select_related("job")
        .order_by("-id")[:limit]
    )
    ttl = organization.image_url_ttl_seconds
    return [
        GalleryImage(
            url=image_url(public_id=row.public_id, storage_path=row.storage_path, ttl_seconds=ttl),
            width=row.width,
            height=row.height,
            job_public_id=row.job.public_id,
            prompt=row.job.prompt,
            edited=bool(row.job.params.get("images")),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class JobInputView:
    file_public_id: str
    role: str
    available: bool  # False once the file was deleted (retention)


def job_inputs(*, job: Job) -> list[JobInputView]:
    return [
        JobInputView(file_public_id=row.file_public_id, role=row.role, available=row.file_id is not None)
        for row in JobInput.objects.filter(job=job).order_by("role", "position")
    ]


def input_file_for_dashboard(*, organization: Organization, public_id: str) -> InputFile | None:
    """An input file of this organization (expired or not, until retention deletes it)."""
    return InputFile.objects.for_org(organization).filter(public_id=public_id).first()


# --- Operator -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteHealth:
    route: Route
    calls: int
    errors: int
    images: int
    latency_ms: int | None
    error_rate: float | None
    circuit_open: bool


@dataclass(frozen=True)
class PlatformOverview:
    routes: list[RouteHealth]
    revenue_chart: dict  # {"labels", "revenue", "upstream_cost"}
    revenue_total: Decimal
    upstream_cost_total: Decimal
    top_tenants: list[dict]
    jobs_in_flight: int
    window_minutes: int


def platform_overview(
    *, now: datetime | None = None, window_minutes: int = 60, days: int = 30
) -> PlatformOverview:
    now = now or timezone.now()
    routes = list(Route.objects.select_related("account", "model").order_by("tier", "position", "id"))
    stats = {
        row["route_id"]: row
        for row in RouteStatsMinute.objects.filter(minute__gte=now - timedelta(minutes=window_minutes))
        .values("route_id")
        .annotate(
            calls=Sum("calls"), errors=Sum("errors"), images=Sum("images"), latency=Sum("latency_ms_sum")
        )
    }
    open_ids = circuits_open([route.id for route in routes])
    health = []
    for route in routes:
        row = stats.get(route.id, {})
        calls, errors = row.get("calls") or 0, row.get("errors") or 0
        health.append(
            RouteHealth(
                route=route,
                calls=calls,
                errors=errors,
                images=row.get("images") or 0,
                latency_ms=int(row["latency"] / calls) if calls else None,
                error_rate=errors / calls if calls else None,
                circuit_open=route.id in open_ids,
            )
        )
    today = now.astimezone(UTC).date()
    start = today - timedelta(days=days - 1)
    live = UsageRecord.objects.filter(livemode=True, created_at__gte=_midnight(start))
    per_day = {
        row["day"]: row
        for row in live.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(revenue=Sum("amount"), cost=Sum("upstream_cost"))
    }
    labels = _days(start, today)
    revenue = [per_day.get(day, {}).get("revenue") or ZERO for day in labels]
    cost = [per_day.get(day, {}).get("cost") or ZERO for day in labels]
    month = billing_period_start(now)
    top = list(
        UsageRecord.objects.filter(created_at__gte=_midnight(month))
        .values("organization__public_id", "organization__name")
        .annotate(
            images=Count("id"), revenue=Sum("amount", filter=Q(livemode=True)), cost=Sum("upstream_cost")
        )
        .order_by("-images")[:10]
    )
    in_flight = Organization.objects.aggregate(total=Sum("jobs_in_flight"))["total"] or 0
    return PlatformOverview(
        routes=health,
        revenue_chart={
            "labels": [day.isoformat() for day in labels],
            "revenue": [float(value) for value in revenue],
            "upstream_cost": [float(value) for value in cost],
        },
        revenue_total=sum(revenue, ZERO),
        upstream_cost_total=sum(cost, ZERO),
        top_tenants=top,
        jobs_in_flight=in_flight,
        window_minutes=window_minutes,
    )


# --- Batches --------------------------------------------------------------------------------
def batches_with_counts(*, organization: Organization, limit: int = 5) -> list[tuple[Batch, dict[str, int]]]:
    """The newest batches with their item counts, in two queries whatever `limit` is. The arithmetic
    is generation.batches.services.batch_counts' (a test holds them equal), grouped over several batches."""
    batches, _ = batch_list(organization=organization, limit=limit)
    rows = (
        Job.objects.filter(batch__in=batches)
        .values("batch_id", "status")
        .annotate(
            n=Count("pk"), filtered=Count("pk", filter=Q(status=Job.Status.SUCCEEDED, images_delivered=0))
        )
    )
    by_batch: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        by_batch[row["batch_id"]][row["status"]] += row["n"]
        by_batch[row["batch_id"]]["filtered"] += row["filtered"]
    result = []
    for batch in batches:
        counts = by_batch[batch.pk]
        fed = sum(n for status, n in counts.items() if status != "filtered")
        unfed = batch.total - fed
        never_fed = batch.status in (Batch.Status.CANCELING, Batch.Status.CANCELED)
        result.append(
            (
                batch,
                {
                    "total": batch.total,
                    "queued": counts[Job.Status.QUEUED] + (0 if never_fed else unfed),
                    "running": counts[Job.Status.RUNNING],
                    "succeeded": counts[Job.Status.SUCCEEDED] - counts["filtered"],
                    "failed": counts[Job.Status.FAILED],
                    "filtered": counts["filtered"],
                    "canceled": counts[Job.Status.CANCELED] + (unfed if never_fed else 0),
                },
            )
        )
    return result
