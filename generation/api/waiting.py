"""Submitting a job and waiting for it: the synchronous path shared by `POST /v1/generations?wait=`
and the compatibility APIs (generation/compat/), so every route runs through `job_submit` with the
same limits and billing. The waiter is registered before the job exists, so its completion cannot
slip past it; a job that outlives the wait keeps running and is billed only if it delivers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

from django.conf import settings

from generation.documents import job_document
from generation.jobs.notifications import JobWaiter, job_wait, job_waiter
from generation.jobs.selectors import job_get, job_is_finished
from generation.jobs.services import GenerationRequest, job_submit
from generation.models import Job, new_job_id
from tenants.errors import InvalidRequest, RateLimited
from tenants.models import ApiKey, Organization

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key_of(request) -> str | None:
    """The request's `Idempotency-Key` header (same key + same body = same job), validated."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters.", param="Idempotency-Key")
    return key


class _ParkedWaits:
    """A parked wait holds a web thread for up to a minute without an upstream slot. Capped per
    process (the threads left for everyone else) and per organization in this process (one tenant
    cannot take them all); past the cap, the native API answers at once (202 + Location) and the
    compat APIs refuse in their protocol's shape, before anything is submitted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_org: dict[int, int] = {}

    @contextmanager
    def slot(self, organization_id: int) -> Iterator[bool]:
        with self._lock:
            taken = (
                self.total < settings.WAIT_MAX_PARKED_PER_PROCESS
                and self.by_org.get(organization_id, 0) < settings.WAIT_MAX_PARKED_PER_ORGANIZATION
            )
            if taken:
                self.total += 1
                self.by_org[organization_id] = self.by_org.get(organization_id, 0) + 1
        try:
            yield taken
        finally:
            if taken:
                with self._lock:
                    self.total -= 1
                    left = self.by_org[organization_id] - 1
                    if left:
                        self.by_org[organization_id] = left
                    else:
                        del self.by_org[organization_id]


parked_waits = _ParkedWaits()


class TooManyWaits(RateLimited):
    default_message = (
        "Too many requests of this organization are waiting for their images right now. "
        "Retry after the time in the Retry-After header, or submit without waiting and poll."
    )


def job_document_of(job: Job) -> dict:
    return job_document(job, list(job.images.all()))


def job_wait_document(*, job: Job, timeout: float, waiter: JobWaiter | None = None) -> dict:
    """The job's document as soon as it finishes, or as it is after `timeout` seconds. A document
    pushed by the worker is used as is; otherwise the job is read back."""
    is_done = partial(job_is_finished, job_pk=job.pk)
    if waiter is None:
        with parked_waits.slot(job.organization_id) as parked:
            if not parked:  # over the cap: answer with the job as it is now
                return job_document_of(job_get(organization=job.organization, public_id=job.public_id))
            result = job_wait(public_id=job.public_id, timeout=timeout, is_done=is_done)
    else:
        result = waiter.wait(timeout=timeout, is_done=is_done)
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
    must_wait: bool = False,
) -> dict:
    """Submit a generation; with `wait` (seconds), answer as soon as it finishes or when the wait
    is over, whichever comes first. Returns the job's document (see job_document). Past the cap
    on parked waits the wait is dropped (202), or, with `must_wait` (the compat APIs, which have no
    202), TooManyWaits is raised before anything is submitted."""
    with parked_waits.slot(organization.pk) if wait else nullcontext(False) as parked:
        if wait and not parked:
            if must_wait:
                raise TooManyWaits(retry_after=settings.SERVICE_UNAVAILABLE_RETRY_AFTER_SECONDS)
            wait = None
        return _submit(organization, api_key, request, wait, idempotency_key)


def _submit(organization, api_key, request, wait, idempotency_key) -> dict:
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
