"""Batches: many generation requests accepted at once, run as ordinary jobs a few at a time.

Invariants:
- Every item is validated (the native API's serializer, then the catalog) before anything is
  created: a batch is accepted whole or not at all.
- Items become jobs only through `job_submit` (same quota, limits, billing), fed in submission
  order by `batch_feed`, which keeps at most the batch's share of the organization's concurrent-job
  limit queued or running, so interactive requests keep the rest of the slots.
- The feeder's cursor (`next_index`) advances in the transaction that inserts the item's job, and
  (batch, custom_id) is unique: a feeder that dies mid-way is re-driven and submits nothing twice.
- An item refused at feed time (monthly quota used up, a model retired since) becomes a failed job
  carrying the error code: every item ends with exactly one terminal job, nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from generation import events
from generation.documents import batch_document, batch_item_document, job_document
from generation.errors import JobNotCancelable
from generation.files.services import FILE_ID, file_get
from generation.jobs.services import GenerationRequest, job_cancel, job_submit
from generation.models import Batch, Job
from generation.pagination import newest_first_page
from tenants.admission import generation_admit
from tenants.errors import (
    Conflict,
    ImagegateError,
    InvalidRequest,
    NotFound,
    PaymentRequired,
    RateLimited,
    TenantSuspended,
)
from tenants.models import ApiKey, Organization
from tenants.parsers import json_parse
from tenants.selectors import organization_limits

logger = logging.getLogger(__name__)

FEEDER_LEASE_SECONDS = 30
ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)
CUSTOM_ID_MAX = 64


# --- Input ------------------------------------------------------------------------------------
def batch_items_parse_jsonl(*, text: str) -> list:
    """One {"custom_id", "body"} object per non-empty line."""
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        # The API's one JSON reader: depth-bounded, no NUL anywhere (custom_id and keys included).
        items.append(json_parse(line, param=f"line {number}"))
    return items


def batch_inputs_check(*, organization: Organization, request: GenerationRequest) -> None:
    """Batch items name their input images by file id only (upload them once with POST
    /v1/files): items are fed minutes later, and a URL fetched or base64 stored per item would
    be a thousand copies. The files must exist now; one that expires before its item is fed
    fails that item (not found)."""
    for index, spec in enumerate(request.images):
        param = f"images[{index}]"
        if not FILE_ID.match(spec):
            raise InvalidRequest(
                f"{param}: batch items take file ids (upload with POST /v1/files).", param=param
            )
        file_get(organization=organization, public_id=spec, param=param)
    if request.mask is not None:
        if not FILE_ID.match(request.mask):
            raise InvalidRequest(
                "mask: batch items take file ids (upload with POST /v1/files).", param="mask"
            )
        file_get(organization=organization, public_id=request.mask, param="mask")


# --- Create, cancel ---------------------------------------------------------------------------
def batch_create(
    *, organization: Organization, api_key: ApiKey, items: list[dict], webhook_url: str | None = None
) -> Batch:
    """Store a batch of validated items (generation/api/batches.py validates each one as POST
    /v1/generations would, before this is called) and start feeding it after commit."""
    from generation.engine.outbound import outbound_url_check

    if webhook_url is not None:
        if not isinstance(webhook_url, str):
            raise InvalidRequest("webhook_url must be a string.", param="webhook_url")
        outbound_url_check(url=webhook_url, param="webhook_url")
    with transaction.atomic():
        batch = Batch.objects.create(
            organization=organization,
            api_key=api_key,
            requests=items,
            total=len(items),
            webhook_url=webhook_url or "",
        )
        transaction.on_commit(partial(batch_feed, batch_pk=batch.pk))
    return batch


def batch_get(*, organization: Organization, public_id: str) -> Batch:
    batch = Batch.objects.for_org(organization).filter(public_id=public_id).defer("requests").first()
    if batch is None:
        raise NotFound(f"No batch {public_id}.", param="id")
    return batch


def batch_list(
    *, organization: Organization, cursor: str | None = None, limit: int = 20
) -> tuple[list[Batch], bool]:
    batches = Batch.objects.for_org(organization).defer("requests")
    return newest_first_page(batches, cursor=cursor, limit=limit)


def batch_cancel(*, organization: Organization, public_id: str) -> Batch:
    """Stop feeding, cancel the queued items; running ones finish (and are billed) normally."""
    batch = batch_get(organization=organization, public_id=public_id)
    updated = Batch.objects.filter(pk=batch.pk, status=Batch.Status.IN_PROGRESS).update(
        status=Batch.Status.CANCELING, cancelled_at=timezone.now()
    )
    if not updated:
        raise Conflict(f"Batch {public_id} is already {batch.status}.")
    queued = Job.objects.filter(batch=batch, status=Job.Status.QUEUED).values_list("public_id", flat=True)
    for job_public_id in list(queued):
        with contextlib.suppress(JobNotCancelable):  # it finished meanwhile
            job_cancel(organization=organization, public_id=job_public_id)
    batch_complete_if_done(batch_pk=batch.pk)
    batch.refresh_from_db()
    return batch


# --- Feeding ----------------------------------------------------------------------------------
def batch_share(*, organization: Organization) -> int:
    """How many of this organization's concurrent jobs one batch may hold."""
    limit = organization_limits(organization=organization).max_concurrent_jobs
    return max(1, math.floor(limit * settings.BATCH_CONCURRENCY_SHARE))


def _refuse_item(batch: Batch, body: dict, custom_id: str, error: ImagegateError) -> None:
    """The item could not be submitted (quota used up, model gone): record it as a failed job,
    with nothing reserved or billed, so it is accounted for and reported."""
    now = timezone.now()
    job = Job.objects.create(
        organization_id=batch.organization_id,
        api_key_id=batch.api_key_id,
        livemode=batch.api_key.mode == ApiKey.Mode.LIVE if batch.api_key else False,
        status=Job.Status.FAILED,
        tier=body.get("tier", ""),
        requested_model=body.get("model", ""),
        prompt=body["prompt"],
        count=body.get("count", 1),
        params={key: body.get(key) for key in ("aspect_ratio", "resolution", "output_format")},
        fallback_policy=body.get("fallback") or batch.organization.fallback_policy,
        metadata=body.get("metadata", {}),
        error_code=error.code,
        error_message=error.message[:2000],
        finished_at=now,
        batch=batch,
        custom_id=custom_id,
        webhook_url=body.get("webhook_url", ""),
    )
    events.job_finished(job=job, document=job_document(job, []))


def _feeding_paused(batch: Batch) -> bool:
    """A suspended organization (or a live one blocked for payment) gets no new jobs; its pending
    items wait, and resume when it is reinstated (job_submit would refuse them anyway). A revoked
    or expired key stops its batches at once: no item is submitted (and billed) on it any more."""
    key = batch.api_key
    if (
        key is None
        or key.revoked_at is not None
        or (key.expires_at is not None and key.expires_at <= timezone.now())
    ):
        return True
    try:
        generation_admit(organization=batch.organization, api_key=key)
    except (TenantSuspended, PaymentRequired):
        return True
    return False


def _batch_item(batch_pk: int, index: int) -> dict:
    """One stored request, extracted by the database (a JSON path), not the whole list."""
    return Batch.objects.filter(pk=batch_pk).values_list(f"requests__{index}", flat=True).get()


def batch_feed(*, batch_pk: int) -> int:
    """Top the batch up to its share of concurrent jobs; returns how many items were submitted.
    Safe to call from anywhere at any time: one feeder holds the batch at once (a lease)."""
    now = timezone.now()
    lease = Q(feeder_lease_until__isnull=True) | Q(feeder_lease_until__lt=now)
    if not Batch.objects.filter(lease, pk=batch_pk, status=Batch.Status.IN_PROGRESS).update(
        feeder_lease_until=now + timedelta(seconds=FEEDER_LEASE_SECONDS)
    ):
        return 0
    submitted = 0
    try:
        # The request list can be megabytes: it is never loaded here, only the item being fed.
        batch = (
            Batch.objects.select_related("organization__plan", "api_key").defer("requests").get(pk=batch_pk)
        )
        share = batch_share(organization=batch.organization)
        active = Job.objects.filter(batch=batch, status__in=ACTIVE).count()
        if active >= share or _feeding_paused(batch):
            return 0
        while active < share and batch.next_index < batch.total and batch.api_key is not None:
            index = batch.next_index
            item = _batch_item(batch_pk, index)
            request = GenerationRequest(**item["body"])
            try:
                with transaction.atomic():
                    advanced = Batch.objects.filter(
                        pk=batch.pk, next_index=index, status=Batch.Status.IN_PROGRESS
                    ).update(next_index=index + 1, started_at=batch.started_at or timezone.now())
                    if not advanced:
                        break  # canceled meanwhile
                    job_submit(
                        organization=batch.organization,
                        api_key=batch.api_key,
                        request=request,
                        batch=batch,
                        custom_id=item["custom_id"],
                    )
            except RateLimited:
                break  # the organization's slots are all taken (interactive traffic): next tick
            except ImagegateError as exc:
                with transaction.atomic():
                    if not Batch.objects.filter(
                        pk=batch.pk, next_index=index, status=Batch.Status.IN_PROGRESS
                    ).update(next_index=index + 1, started_at=batch.started_at or timezone.now()):
                        break
                    _refuse_item(batch, item["body"], item["custom_id"], exc)
                active -= 1  # it is already finished
            batch.next_index = index + 1
            batch.started_at = batch.started_at or timezone.now()
            active += 1
            submitted += 1
    finally:
        Batch.objects.filter(pk=batch_pk).update(feeder_lease_until=None)
    batch_complete_if_done(batch_pk=batch_pk)
    return submitted


def batch_complete_if_done(*, batch_pk: int) -> bool:
    """Finish the batch once every item has a terminal job (or was never fed, if canceled)."""
    batch = Batch.objects.filter(pk=batch_pk).defer("requests").first()
    if batch is None or batch.is_terminal:
        return False
    if batch.status == Batch.Status.IN_PROGRESS and batch.next_index < batch.total:
        return False
    if Job.objects.filter(batch_id=batch_pk, status__in=ACTIVE).exists():
        return False
    final = Batch.Status.COMPLETED if batch.status == Batch.Status.IN_PROGRESS else Batch.Status.CANCELED
    with transaction.atomic():
        if not Batch.objects.filter(pk=batch_pk, status=batch.status).update(
            status=final, finished_at=timezone.now()
        ):
            return False
        batch.refresh_from_db()
        events.batch_finished(batch=batch, document=batch_document(batch))
    return True


def batch_job_finished(*, job: Job, document: dict) -> None:
    """`events.job_finished` subscriber: once a batch item's job has finished (after commit), its
    freed slot goes to the next item. A failure here is logged: the runner's periodic feeder pass
    (`batch_feed_all`) re-drives the batch."""
    if job.batch_id is not None:
        transaction.on_commit(partial(_item_finished, job.public_id, job.batch_id))


def _item_finished(job_public_id: str, batch_pk: int) -> None:
    try:
        if not batch_feed(batch_pk=batch_pk):
            batch_complete_if_done(batch_pk=batch_pk)
    except Exception:  # the job is finished; the runner's feeder pass re-drives
        logger.exception("job %s: batch hook failed", job_public_id)


def batch_feed_all() -> int:
    """The feeder's periodic pass (every worker's runner): tops up every open batch and completes
    the finished ones; this is what re-drives a batch whose feeder died."""
    pks = list(
        Batch.objects.filter(status__in=[Batch.Status.IN_PROGRESS, Batch.Status.CANCELING])
        .order_by("pk")
        .values_list("pk", flat=True)[:200]
    )
    fed = 0
    for pk in pks:
        try:
            fed += batch_feed(batch_pk=pk)
            batch_complete_if_done(batch_pk=pk)
        except Exception:  # one broken batch must not stall the others
            logger.exception("batch %s: feeding failed", pk)
    return fed


# --- Reading ----------------------------------------------------------------------------------
def batch_items(
    *,
    organization: Organization,
    public_id: str,
    cursor: int = 0,
    limit: int = 50,
    requests: list[dict] | None = None,
) -> tuple[Batch, list[tuple[int, str, Job | None]], int | None]:
    """A page of items in submission order: (batch, [(index, custom_id, job or None)], next cursor)."""
    batch = batch_get(organization=organization, public_id=public_id)
    page = (requests if requests is not None else batch.requests)[cursor : cursor + limit]
    custom_ids = [item["custom_id"] for item in page]
    jobs = {
        job.custom_id: job
        for job in Job.objects.filter(batch=batch, custom_id__in=custom_ids)
        .select_related("organization")
        .prefetch_related("images")
    }
    rows = [
        (cursor + offset, item["custom_id"], jobs.get(item["custom_id"])) for offset, item in enumerate(page)
    ]
    next_cursor = cursor + limit if cursor + limit < batch.total else None
    return batch, rows, next_cursor


def batch_results_lines(*, organization: Organization, public_id: str) -> Iterator[str]:
    """The results file: one JSON line per item, in submission order, with fresh signed image URLs."""
    batch = batch_get(organization=organization, public_id=public_id)
    requests = batch.requests  # loaded once for every page
    cursor: int | None = 0
    while cursor is not None:
        _, rows, cursor = batch_items(
            organization=organization, public_id=public_id, cursor=cursor, limit=200, requests=requests
        )
        for index, custom_id, job in rows:
            document = batch_item_document(batch, index, custom_id, job)
            generation = document["generation"] or {}
            line = {
                "custom_id": custom_id,
                "status": document["status"],
                "generation_id": generation.get("id"),
                "error": generation.get("error"),
                "images": [
                    {key: image[key] for key in ("id", "url", "width", "height", "mime_type", "filtered")}
                    for image in generation.get("images", [])
                ],
            }
            yield json.dumps(line, separators=(",", ":")) + "\n"
