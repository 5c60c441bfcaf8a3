"""Job lifecycle services: submit, claim, renew, finish, cancel, reap.

Status machine: queued → running → succeeded | failed; queued | running → canceled; a running job
whose lease expired (its worker died) is claimed again by the next worker that gets its doorbell.

Invariants:
- At most one worker executes a job at a time: `job_claim` is a conditional UPDATE (queued, or
  running with an expired lease) that sets a lease owner; every later write is conditional on
  `status = running AND lease_owner = me`, so a worker that lost its lease can change nothing.
- The quota images (live keys) and the concurrency slot are taken in the transaction that inserts
  the job, and given back exactly once: in the transaction that moves it to a terminal status, or,
  for a running job that is canceled, once its worker has stopped (`job_cancel_settle`; the
  reaper settles it when the worker died), so the upstream call never runs outside the limits.
- Runners claim due jobs themselves (`job_claim_due`); the broker doorbell is only a hint.
- Usage records are inserted in the same transaction as the success transition, one per delivered
  image with a unique image id: an image is billed at most once, whatever the broker does.
- The broker is only a doorbell (rung through `events.job_queued`, which the worker subscribes
  to): `job_reap` re-rings it for jobs whose message or worker was lost.
- Finishing announces `events.job_finished` inside the terminal transaction; its consumers (the
  waiting request, webhooks, batches) subscribe in generation/apps.py, and this module imports none.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import UsageRecord
from generation import events
from generation.documents import job_document
from generation.engine.catalog import InputLimits, RoutePlan, route_plan
from generation.engine.providers.base import ProviderRequest, UpstreamBadRequest
from generation.engine.router import Outcome
from generation.engine.storage import MIME_TYPES, image_delete, image_dimensions, image_store, image_transcode
from generation.errors import IdempotencyConflict, JobNotCancelable
from generation.files.services import Upload, input_resolve, inputs_check, job_inputs_attach, job_inputs_load
from generation.models import Batch, Image, Job, new_job_id
from generation.params import GenerationParams
from tenants.admission import generation_admit
from tenants.errors import InvalidRequest, MaxCostExceeded, NotFound
from tenants.ids import new_public_id
from tenants.limits import (
    concurrency_acquire,
    concurrency_release,
    live_reserve,
    quota_release,
    spend_settle,
    test_images_reserve,
)
from tenants.models import ApiKey, Organization
from tenants.selectors import organization_limits

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GenerationRequest(GenerationParams):
    """A validated generation request: the parameters, the prompt and how to route and report it
    (see generation/api/serializers.py)."""

    prompt: str
    tier: str | None = None
    model: str | None = None
    fallback: str | None = None
    webhook_url: str | None = None
    metadata: dict = field(default_factory=dict)
    # The most the caller accepts to pay for this request (decimal string, the plan's currency).
    max_cost: str | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()


# --- Submit ---------------------------------------------------------------------------------
def _idempotent_match(organization: Organization, key: str, request_hash: str) -> Job | None:
    existing = Job.objects.for_org(organization).filter(idempotency_key=key).first()
    if existing is not None and existing.request_hash != request_hash:
        raise IdempotencyConflict(param="Idempotency-Key")
    return existing


def job_plan(*, job: Job) -> RoutePlan:
    """The candidate routes for a job (recomputed at execution: health and the catalog move)."""
    organization = job.organization
    return route_plan(
        params=GenerationParams.from_json(job.params),
        livemode=job.livemode,
        allowed_tiers=organization_limits(organization=organization).allowed_tiers,
        fallback_policy=job.fallback_policy,
        auto_migrate_models=organization.auto_migrate_models,
        model=job.requested_model or None,
        tier=job.tier,
        batch=job.batch_id is not None,
    )


def request_plan(*, organization: Organization, api_key: ApiKey, request: GenerationRequest) -> RoutePlan:
    """Check a request against the catalog and the organization's tiers (raises InvalidRequest and
    friends); reserves nothing. Batches run it on every item before accepting any."""
    return route_plan(
        params=request,
        livemode=api_key.mode == ApiKey.Mode.LIVE,
        allowed_tiers=organization_limits(organization=organization).allowed_tiers,
        fallback_policy=request.fallback or organization.fallback_policy,
        auto_migrate_models=organization.auto_migrate_models,
        model=request.model,
        tier=request.tier,
    )


_PENDING = "file_pending"  # stands in for a file id while only the count of inputs matters


def request_with_inputs(
    *,
    organization: Organization,
    api_key: ApiKey,
    request: GenerationRequest,
    images: Sequence[str | Upload] | None = None,
    mask: str | Upload | None = None,
    images_param: str = "images",
    mask_param: str = "mask",
) -> GenerationRequest:
    """The request with its input images and mask (by default those it carries, as sent: ids,
    URLs, base64) resolved to stored files of this organization (generation.files.services).
    The catalog is asked first, with the inputs only counted, so a model that takes no (or
    fewer) images, or no mask, is a 400 before anything is fetched or stored; then each file is
    checked against every candidate route's limits."""
    if images is None:
        images, mask = list(request.images), request.mask
    if mask is not None and not images:
        raise InvalidRequest("A mask needs an image to apply to.", param=mask_param)
    if not images:
        return replace(request, images=(), mask=None)
    probe = replace(
        request, images=tuple(_PENDING for _ in images), mask=_PENDING if mask is not None else None
    )
    try:
        plan = request_plan(organization=organization, api_key=api_key, request=probe)
    except InvalidRequest as error:
        if error.param in ("images", "mask"):
            error.param = images_param if error.param == "images" else mask_param
        raise
    limits = InputLimits.strictest(plan.primary)
    resolved = []
    for index, spec in enumerate(images):
        param = f"{images_param}[{index}]"
        file = input_resolve(organization=organization, spec=spec, param=param)
        inputs_check(file=file, limits=limits, param=param)
        resolved.append(file.public_id)
    mask_id = None
    if mask is not None:
        mask_file = input_resolve(organization=organization, spec=mask, param=mask_param)
        inputs_check(file=mask_file, limits=limits, param=mask_param)
        mask_id = mask_file.public_id
    return replace(request, images=tuple(resolved), mask=mask_id)


def worst_case_unit_price(
    *, organization: Organization, plan: RoutePlan, fallback_policy: str, edit: bool = False
) -> Decimal:
    """The highest unit price any image of this request could be billed at: the requested tier's
    under fallback "allow" (a fallback is billed at the requested price), else the highest price of
    the tiers that may serve it; at the plan's edit prices for a request with input images."""
    prices = organization.plan
    price_for = prices.edit_price_for if edit else prices.price_for
    if fallback_policy == Organization.Fallback.ALLOW:
        return price_for(plan.tier)
    tiers = {plan.tier} | {route.tier for route in plan.fallback}
    return max(price_for(tier) for tier in tiers)


def job_submit(
    *,
    organization: Organization,
    api_key: ApiKey,
    request: GenerationRequest,
    idempotency_key: str | None = None,
    public_id: str | None = None,
    batch: Batch | None = None,
    custom_id: str = "",
) -> tuple[Job, bool]:
    """Admit (active tenant, payment state), validate against the routes, reserve quota and
    concurrency, insert the job, ring the doorbell on commit. Returns (job, created); an
    idempotent replay returns the original job.
    `public_id` lets a caller register interest in the job before it exists (see JobWaiter).
    `batch`/`custom_id` mark a batch item (unique per batch: an item is never submitted twice)."""
    generation_admit(organization=organization, api_key=api_key)
    request_hash = request.fingerprint()
    if idempotency_key:
        existing = _idempotent_match(organization, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    livemode = api_key.mode == ApiKey.Mode.LIVE
    fallback_policy = request.fallback or organization.fallback_policy
    plan = request_plan(organization=organization, api_key=api_key, request=request)
    params = request.to_json()
    if plan.notice:
        params["model_notice"] = plan.notice
    unit_price = (
        worst_case_unit_price(
            organization=organization, plan=plan, fallback_policy=fallback_policy, edit=request.is_edit
        )
        if livemode
        else Decimal("0")  # test keys always use the sandbox, never billed
    )
    if request.max_cost is not None and unit_price * request.count > Decimal(request.max_cost):
        raise MaxCostExceeded(
            f"This request may cost up to {unit_price * request.count} {organization.plan.currency} "
            f"({request.count} x {unit_price}), above its max_cost of {request.max_cost}.",
            param="max_cost",
        )
    public_id = public_id or new_job_id()
    try:
        with transaction.atomic():
            # Lock order (the release takes the same): quota month, key month, then the organization.
            if livemode:
                period = live_reserve(
                    organization=organization,
                    api_key=api_key,
                    job_public_id=public_id,
                    images=request.count,
                    unit_price=unit_price,
                )
            else:
                period = None
                test_images_reserve(organization=organization, images=request.count)
            concurrency_acquire(organization=organization)
            job = Job.objects.create(
                public_id=public_id,
                organization=organization,
                api_key=api_key,
                livemode=livemode,
                tier=plan.tier,
                requested_model=request.model or "",
                prompt=request.prompt,
                count=request.count,
                params=params,
                fallback_policy=fallback_policy,
                metadata=request.metadata,
                webhook_url=request.webhook_url or "",
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                quota_period=period,
                enqueued_at=timezone.now(),
                batch=batch,
                custom_id=custom_id,
            )
            job_inputs_attach(job=job, images=request.images, mask=request.mask)
            transaction.on_commit(partial(events.job_queued, public_id=job.public_id))
    except IntegrityError:
        if idempotency_key:  # a concurrent request with the same key won the insert
            existing = _idempotent_match(organization, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        raise
    return job, True


# --- Execute --------------------------------------------------------------------------------
def _lease() -> timedelta:
    return timedelta(seconds=settings.GENERATION_LEASE_SECONDS)


def job_claim(*, public_id: str, owner: str) -> bool:
    """Take the job for `owner` if nobody holds a live lease on it. False when it is finished,
    canceled, or running elsewhere (a duplicate or late doorbell: do nothing)."""
    now = timezone.now()
    claimable = Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, lease_expires_at__lt=now)
    updated = Job.objects.filter(
        claimable, public_id=public_id, attempts__lt=settings.GENERATION_MAX_ATTEMPTS
    ).update(
        status=Job.Status.RUNNING,
        lease_owner=owner,
        lease_expires_at=now + _lease(),
        attempts=F("attempts") + 1,
        started_at=Coalesce(F("started_at"), now),
    )
    return bool(updated)


def job_claim_due(*, owner: str, limit: int) -> list[str]:
    """The public ids of `jobs_claim_due` (see there)."""
    return [job.public_id for job in jobs_claim_due(owner=owner, limit=limit)]


def jobs_claim_due(*, owner: str, limit: int) -> list[Job]:
    """Claim up to `limit` claimable jobs (queued, or running on an expired lease), oldest first, for
    `owner`, and return them loaded as `job_load` does (one SELECT for the batch, in the claim's
    transaction, instead of one per job after it). The runner calls this on its own poll and
    doorbell, so execution never depends on a broker message (or a worker pool a dead process can
    wedge, django-q2 #23). PostgreSQL: the rows are locked with SKIP LOCKED, so concurrent runners
    split the queue without waiting on each other; SQLite: the IMMEDIATE transaction makes the
    claim single-writer."""
    if limit < 1:
        return []
    now = timezone.now()
    if connection.vendor == "postgresql":
        return _claim_due_postgresql(owner=owner, limit=limit, now=now)
    claimable = Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, lease_expires_at__lt=now)
    with transaction.atomic():
        pks = list(
            Job.objects.filter(claimable, attempts__lt=settings.GENERATION_MAX_ATTEMPTS)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not pks:
            return []
        Job.objects.filter(claimable, pk__in=pks).update(
            status=Job.Status.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + _lease(),
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), now),
        )
        return list(
            Job.objects.select_related("organization__plan")
            .filter(pk__in=pks, status=Job.Status.RUNNING, lease_owner=owner)
            .order_by("pk")
        )


def _claim_due_sql() -> str:
    job = connection.ops.quote_name(Job._meta.db_table)
    return (
        f"UPDATE {job} SET status = %s, lease_owner = %s, lease_expires_at = %s, "  # noqa: S608 - our table
        "attempts = attempts + 1, started_at = COALESCE(started_at, %s) "
        f"WHERE id IN (SELECT id FROM {job} "
        "WHERE (status = %s OR (status = %s AND lease_expires_at < %s)) AND attempts < %s "
        "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
        "RETURNING *"
    )


def _claim_due_postgresql(*, owner: str, limit: int, now) -> list[Job]:
    """The same claim as one statement in autocommit (the queue pattern: the subquery locks up to
    `limit` claimable rows, skipping those another runner holds, and the UPDATE returns them), so
    a claim that finds nothing costs one round trip, and one that finds jobs two (their
    organizations and plans, one SELECT for the batch)."""
    running, queued = Job.Status.RUNNING, Job.Status.QUEUED
    params = [
        running,
        owner,
        now + _lease(),
        now,
        queued,
        running,
        now,
        settings.GENERATION_MAX_ATTEMPTS,
        limit,
    ]
    jobs = sorted(Job.objects.raw(_claim_due_sql(), params), key=lambda job: job.pk)
    if jobs:
        organizations = Organization.objects.select_related("plan").in_bulk(
            {job.organization_id for job in jobs}
        )
        for job in jobs:  # each job its own instance, as select_related would give
            job.organization = copy.copy(organizations[job.organization_id])
    return jobs


def job_load(*, public_id: str) -> Job:
    return Job.objects.select_related("organization__plan").get(public_id=public_id)


def job_prepare(*, job: Job) -> tuple[RoutePlan, ProviderRequest]:
    """`job_plan` and `job_provider_request` together: one hop to a runner database thread."""
    return job_plan(job=job), job_provider_request(job=job)


def job_provider_request(*, job: Job) -> ProviderRequest:
    """What the providers get: the job's parameters and prompt, and the bytes of its input files
    read from our store (raises InputMissing when one was deleted before the job ran)."""
    params = GenerationParams.from_json(job.params)
    images, mask = job_inputs_load(job=job) if params.images else ((), None)
    return ProviderRequest.of(
        prompt=job.prompt,
        params=params,
        request_id=job.public_id,
        tenant=str(job.organization_id),
        input_images=images,
        input_mask=mask,
    )


def job_renew_leases(*, public_ids: list[str], owner: str) -> set[str]:
    """Extend our leases; returns the ids we still hold (others were canceled or taken over)."""
    if not public_ids:
        return set()
    held = Job.objects.filter(public_id__in=public_ids, status=Job.Status.RUNNING, lease_owner=owner)
    alive = set(held.values_list("public_id", flat=True))
    if alive:
        Job.objects.filter(public_id__in=alive, lease_owner=owner).update(
            lease_expires_at=timezone.now() + _lease()
        )
    return alive


def jobs_no_longer_held(*, public_ids: list[str], owner: str) -> list[str]:
    """Of the jobs `owner` runs, those it no longer holds (canceled, or taken over): one indexed
    read the runner makes every second, so a cancel lands even if its Redis message was lost."""
    if not public_ids:
        return []
    held = set(
        Job.objects.filter(
            public_id__in=public_ids, status=Job.Status.RUNNING, lease_owner=owner
        ).values_list("public_id", flat=True)
    )
    return [public_id for public_id in public_ids if public_id not in held]


@dataclass
class DeliveredImage:
    """One candidate, stored (or filtered), ready to be recorded."""

    index: int
    public_id: str
    storage_path: str
    width: int | None
    height: int | None
    mime_type: str
    size_bytes: int
    filtered: bool
    filter_reason: str
    served_tier: str
    model: str
    route: str
    is_sandbox: bool


class LeaseLost(Exception):
    """The job is no longer ours (canceled, or the lease expired and another worker took it)."""


def _release(job: Job, *, delivered: int, amount: Decimal = Decimal("0")) -> None:
    if job.livemode and job.quota_period is not None:
        quota_release(
            organization_id=job.organization_id, images=job.count - delivered, period_start=job.quota_period
        )
    if job.livemode:
        spend_settle(job_public_id=job.public_id, images=delivered, amount=amount)
    concurrency_release(organization_id=job.organization_id)


def _finished(job: Job, images: list[Image], **fields) -> None:
    """Reflect a terminal UPDATE on the in-memory job and announce it, inside the terminal
    transaction, with the finished job's document (waiters then need not read it back)."""
    for name, value in fields.items():
        setattr(job, name, value)
    events.job_finished(job=job, document=job_document(job, images))


@transaction.atomic
def job_succeed(
    *,
    job: Job,
    owner: str,
    images: list[DeliveredImage],
    fallback_reason: str,
    attempts_log: list[dict],
    upstream_cost: Decimal,
    error_code: str = "",
    error_message: str = "",
    service_tier: str = "",
) -> None:
    """Record the images and their usage and finish the job, all or nothing. `service_tier`: the
    Google tier that served it (drives `upstream_cost`; the customer's price does not change)."""
    now = timezone.now()
    delivered = [image for image in images if not image.filtered]
    plan = job.organization.plan
    price = plan.edit_price_for if job.params.get("images") else plan.price_for  # edits may cost more
    records = []
    amount = Decimal("0")
    for image in delivered:
        billed_tier = job.tier if job.fallback_policy == "allow" else image.served_tier
        unit_price = price(billed_tier) if (job.livemode and not image.is_sandbox) else Decimal("0")
        amount += unit_price
        records.append(
            UsageRecord(
                organization_id=job.organization_id,
                api_key_id=job.api_key_id,
                job_public_id=job.public_id,
                image_public_id=image.public_id,
                livemode=job.livemode,
                requested_tier=job.tier,
                served_tier=image.served_tier,
                billed_tier=billed_tier,
                model=image.model,
                route=image.route,
                currency=plan.currency,
                unit_price=unit_price,
                amount=unit_price,
                upstream_cost=upstream_cost / len(delivered),
                created_at=now,
            )
        )
    first = images[0] if images else None
    fields = dict(
        status=Job.Status.SUCCEEDED,
        finished_at=now,
        served_tier=first.served_tier if first else "",
        served_model=first.model if first else "",
        route=first.route if first else "",
        fallback_reason=fallback_reason,
        attempts_log=attempts_log,
        images_delivered=len(delivered),
        amount=amount,
        currency=plan.currency,
        upstream_cost=upstream_cost,
        service_tier=service_tier,
        error_code=error_code,
        error_message=error_message,
        lease_owner="",
        lease_expires_at=None,
    )
    announce = True
    if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=owner).update(**fields):
        # Canceled while the upstream was answering, and still ours (the slot and reservation are
        # held until the worker stops): what the upstream delivered is delivered and billed on the
        # canceled job, never paid by us and thrown away. Its terminal event was sent at cancel.
        late = {k: v for k, v in fields.items() if k not in ("status", "finished_at", "error_code")}
        if not Job.objects.filter(pk=job.pk, status=Job.Status.CANCELED, lease_owner=owner).update(**late):
            raise LeaseLost(job.public_id)
        announce = False
    rows = [
        Image(
            public_id=image.public_id,
            job_id=job.pk,
            organization_id=job.organization_id,
            index=image.index,
            storage_path=image.storage_path,
            width=image.width,
            height=image.height,
            mime_type=image.mime_type,
            size_bytes=image.size_bytes,
            filtered=image.filtered,
            filter_reason=image.filter_reason,
        )
        for image in images
    ]
    Image.objects.bulk_create(rows)
    UsageRecord.objects.bulk_create(records)
    if announce:
        _finished(job, rows, **fields)
    # Last: the per-organization rows are updated by every submit and finish and stay locked until
    # COMMIT, so nothing else should run between their UPDATE and the COMMIT.
    _release(job, delivered=len(delivered), amount=amount)


@transaction.atomic
def job_fail(
    *,
    job: Job,
    owner: str | None,
    code: str,
    message: str,
    attempts_log: list[dict] | None = None,
    upstream_cost: Decimal = Decimal("0"),
) -> bool:
    """Finish as failed (nothing billed, everything released). `owner=None` is the reaper, which
    may only fail a job nobody holds (queued, or running on an expired lease)."""
    if owner:
        claimed = Q(status=Job.Status.RUNNING, lease_owner=owner)
    else:
        claimed = Q(status=Job.Status.QUEUED) | Q(
            status=Job.Status.RUNNING, lease_expires_at__lt=timezone.now()
        )
    fields = dict(
        status=Job.Status.FAILED,
        finished_at=timezone.now(),
        error_code=code,
        error_message=message[:2000],
        attempts_log=attempts_log if attempts_log is not None else job.attempts_log,
        upstream_cost=upstream_cost,
        lease_owner="",
        lease_expires_at=None,
    )
    updated = Job.objects.filter(claimed, pk=job.pk).update(**fields)
    if updated:
        _finished(job, [], **fields)
        _release(job, delivered=0)
    return bool(updated)


# Transcodes running at once in this process. A tenant sending 4K webp jobs at its limit would
# otherwise keep every job thread (and core) busy encoding while other tenants' jobs wait to record.
_transcoding = threading.BoundedSemaphore(settings.GENERATION_TRANSCODE_CONCURRENCY)


def _store_images(job: Job, outcome: Outcome) -> list[DeliveredImage]:
    """Store every delivered image under the organization's prefix, transcoded to the requested
    format; filtered candidates are kept as rows without files (shown, never billed)."""
    wanted = job.params.get("output_format", "png")
    quality = job.params.get("compression_quality")
    prefix = f"images/{job.organization.public_id}/{job.public_id}"
    stored: list[DeliveredImage] = []
    for index, routed in enumerate(outcome.images[: job.count]):
        image, route = routed.image, routed.route
        public_id = new_public_id("img")
        common = partial(
            DeliveredImage,
            index=index,
            public_id=public_id,
            served_tier=route.tier,
            model=route.model_id,
            route=route.label,
            is_sandbox=route.is_sandbox,
        )
        if image.filtered or not image.data:
            stored.append(
                common(
                    storage_path="",
                    width=None,
                    height=None,
                    mime_type="",
                    size_bytes=0,
                    filtered=True,
                    filter_reason=image.filter_reason or "filtered by the upstream safety system",
                )
            )
            continue
        data, mime = image.data, image.mime_type or "image/png"
        if mime != MIME_TYPES[wanted]:
            with _transcoding:  # CPU-heavy (a 4K webp takes seconds): bounded per process
                data = image_transcode(data, output_format=wanted, quality=quality)
            mime = MIME_TYPES[wanted]
        width, height = image_dimensions(data)
        path = image_store(path_prefix=prefix, image_public_id=public_id, data=data, mime_type=mime)
        stored.append(
            common(
                storage_path=path,
                width=width,
                height=height,
                mime_type=mime,
                size_bytes=len(data),
                filtered=False,
                filter_reason="",
            )
        )
    return stored


# --- Complete -------------------------------------------------------------------------------
def job_complete(*, job: Job, owner: str, outcome: Outcome) -> bool:
    """Record what the router brought back for a job `owner` holds: the images stored and billed
    (a partial result says what is missing), or the failure with its customer-facing message.
    If the job stopped being ours meanwhile (canceled, lease taken over), the files just stored
    are deleted again and nothing is recorded. Returns whether anything was recorded."""
    attempts = [attempt.as_dict() for attempt in outcome.attempts]
    cost = outcome.upstream_cost.quantize(Decimal("0.000001"))
    if not outcome.images:
        error = outcome.error
        rejected = isinstance(error, UpstreamBadRequest)
        return job_fail(
            job=job,
            owner=owner,
            code="upstream_rejected" if rejected else "upstream_unavailable",
            message=(
                f"The upstream rejected the request: {error.message}"
                if rejected and error is not None
                else "No upstream route could generate the images"
                + (f" (last error: {error.code})." if error else ".")
            ),
            attempts_log=attempts,
            upstream_cost=cost,
        )
    stored = _store_images(job, outcome)
    error_code = error_message = ""
    if len(outcome.images) < job.count:
        error_code = "partial_result"
        error_message = (
            f"{len(outcome.images)} of {job.count} images were generated; the rest failed"
            + (f" ({outcome.error.code})." if outcome.error else ".")
            + " Only delivered images are billed."
        )
    for attempt in range(RECORD_ATTEMPTS):
        try:
            job_succeed(
                job=job,
                owner=owner,
                images=stored,
                fallback_reason=outcome.fallback_reason,
                attempts_log=attempts,
                upstream_cost=cost,
                service_tier=outcome.service_tier or "",
                error_code=error_code,
                error_message=error_message,
            )
            return True
        except LeaseLost:
            _discard_unrecorded(job, stored)
            return False
        except (OperationalError, InterfaceError):
            # The database is restarting, or the COMMIT's answer was lost (it may have committed).
            # Retry the record with the same image ids: a commit that did happen makes the retry a
            # LeaseLost, and the re-read then keeps the files. The lease is renewed meanwhile by the
            # runner's own thread, so nobody re-runs (and pays for) the job.
            if attempt + 1 >= RECORD_ATTEMPTS:
                raise
            connection.close()
            time.sleep(min(RECORD_BACKOFF_MAX, 0.25 * 2**attempt))
    return False


RECORD_ATTEMPTS = 8
RECORD_BACKOFF_MAX = 4.0


def _discard_unrecorded(job: Job, stored: list[DeliveredImage]) -> None:
    """The job stopped being ours. Re-read before deleting anything: after an ambiguous COMMIT the
    job may be succeeded *with these very images*, recorded and billed; only files no image row
    refers to are deleted."""
    paths = [image.storage_path for image in stored if image.storage_path]
    recorded = set(Image.objects.filter(storage_path__in=paths).values_list("storage_path", flat=True))
    orphans = [path for path in paths if path not in recorded]
    if orphans:
        logger.warning(
            "job %s: lease lost before finishing; discarding %d image(s)", job.public_id, len(orphans)
        )
    for path in orphans:
        image_delete(path)


# --- Cancel ---------------------------------------------------------------------------------
@transaction.atomic
def job_cancel(*, organization: Organization, public_id: str) -> Job:
    job = Job.objects.for_org(organization).filter(public_id=public_id).first()
    if job is None:
        raise NotFound(f"No generation {public_id}.", param="id")
    job.organization = organization
    now = timezone.now()
    queued = dict(status=Job.Status.CANCELED, finished_at=now, lease_owner="", lease_expires_at=None)
    if Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(**queued):
        _release(job, delivered=0)
        _finished(job, [], **queued)
        return job
    # Running: canceled now for the customer, but the worker keeps the lease, the slot and the
    # reservation until it has aborted the upstream call (`job_cancel_settle`), so a submit/cancel
    # loop cannot run more upstream calls than the concurrency limit. The runner hears of it at once.
    running = dict(status=Job.Status.CANCELED, finished_at=now)
    if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(**running):
        job.refresh_from_db()
        raise JobNotCancelable(f"Generation {public_id} already {job.status}.")
    transaction.on_commit(partial(events.job_cancel_requested, public_id=job.public_id))
    _finished(job, [], **running)
    return job


@transaction.atomic
def job_cancel_settle(*, job: Job, owner: str | None) -> bool:
    """The worker of a canceled running job stopped (aborted its upstream call): give back its slot
    and reservation, once. `owner=None` is the reaper, for a worker that died (lease expired)."""
    held = Job.objects.filter(pk=job.pk, status=Job.Status.CANCELED).exclude(lease_owner="")
    held = held.filter(lease_owner=owner) if owner else held.filter(lease_expires_at__lt=timezone.now())
    if not held.update(lease_owner="", lease_expires_at=None):
        return False
    _release(job, delivered=0)
    return True


# --- Reaper ---------------------------------------------------------------------------------
def job_reap(*, now=None) -> dict[str, int]:
    """Find jobs whose doorbell or worker was lost and ring again; fail those out of time or tries.

    Safe to run anywhere, any number of times concurrently: every change is a conditional UPDATE,
    and a re-rung doorbell for a job someone still holds is a no-op at claim time.
    """
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0}
    deadline = now - timedelta(seconds=settings.GENERATION_JOB_DEADLINE_SECONDS)
    stale_enqueue = now - timedelta(seconds=settings.GENERATION_REENQUEUE_AFTER_SECONDS)
    lost = Q(status=Job.Status.QUEUED) | Q(status=Job.Status.RUNNING, lease_expires_at__lt=now)

    for job in Job.objects.filter(lost, created_at__lt=deadline).select_related("organization"):
        if job_fail(job=job, owner=None, code="timeout", message="The job could not be completed in time."):
            counts["failed"] += 1
    exhausted = Q(
        status=Job.Status.RUNNING, lease_expires_at__lt=now, attempts__gte=settings.GENERATION_MAX_ATTEMPTS
    )
    for job in Job.objects.filter(exhausted).select_related("organization"):
        if job_fail(job=job, owner=None, code="worker_lost", message="The job's workers stopped repeatedly."):
            counts["failed"] += 1

    abandoned = Q(status=Job.Status.CANCELED, lease_expires_at__lt=now) & ~Q(lease_owner="")
    for job in Job.objects.filter(abandoned).select_related("organization")[:500]:
        if job_cancel_settle(job=job, owner=None):
            counts["settled"] = counts.get("settled", 0) + 1

    candidates = Job.objects.filter(lost, enqueued_at__lt=stale_enqueue).values_list("pk", "public_id")[:500]
    for pk, public_id in candidates:
        if Job.objects.filter(lost, pk=pk, enqueued_at__lt=stale_enqueue).update(enqueued_at=now):
            events.job_queued(public_id=public_id)
            counts["requeued"] += 1
    if counts["requeued"] or counts["failed"] or counts.get("settled"):
        logger.warning("job reaper: %s", counts)
    return counts
