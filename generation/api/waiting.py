"""Submitting a job and waiting for it: the synchronous path shared by `POST /v1/generations?wait=`
and the compatibility APIs (generation/compat/), so every route runs through `job_submit` with the
same limits and billing. The waiter is registered before the job exists, so its completion cannot
slip past it; a job that outlives the wait keeps running and is billed only if it delivers.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from functools import partial

from generation.documents import job_document
from generation.jobs.notifications import JobWaiter, job_wait, job_waiter
from generation.jobs.selectors import job_get, job_is_finished
from generation.jobs.services import GenerationRequest, job_submit
from generation.models import Job, new_job_id
from tenants.errors import InvalidRequest
from tenants.models import ApiKey, Organization

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key_of(request) -> str | None:
    """The request's `Idempotency-Key` header (same key + same body = same job), validated."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters.", param="Idempotency-Key")
    return key


def job_document_of(job: Job) -> dict:
    return job_document(job, list(job.images.all()))


def job_wait_document(*, job: Job, timeout: float, waiter: JobWaiter | None = None) -> dict:
    """The job's document as soon as it finishes, or as it is after `timeout` seconds. A document
    pushed by the worker is used as is; otherwise the job is read back."""
    is_done = partial(job_is_finished, job_pk=job.pk)
    if waiter is not None:
        result = waiter.wait(timeout=timeout, is_done=is_done)
    else:
        result = job_wait(public_id=job.public_id, timeout=timeout, is_done=is_done)
    if isinstance(result, dict):
        return result
    return job_document_of(job_get(organization=job.organization, public_id=job.public_id))


def job_submit_document(
    *,
    organization: Organization,
    api_key: ApiKey,
    request: GenerationRequest,
    wait: float | None = None,
    idempotency_key: str | None = None,
) -> dict:
    """Submit a generation; with `wait` (seconds), answer as soon as it finishes or when the wait
    is over, whichever comes first. Returns the job's document (see job_document)."""
    public_id = new_job_id()
    with job_waiter(public_id) if wait else nullcontext() as waiter:
        job, created = job_submit(
            organization=organization,
            api_key=api_key,
            request=request,
            idempotency_key=idempotency_key,
            public_id=public_id,
        )
        if wait:
            return job_wait_document(job=job, timeout=wait, waiter=waiter if created else None)
        if created:
            return job_document(job, [])  # just inserted: nothing to read back
        return job_document_of(job_get(organization=organization, public_id=job.public_id))
