"""Tenant webhooks: the organization's endpoint and secret, signed deliveries, retries, SSRF guard.

Invariants: a delivery row is created in the transaction-commit hook of the job or batch that
finished, then sent by a sender thread of that process (generation.worker.tasks: a slow receiver never
holds a job loop); a scheduled django-q2 task re-drives every due delivery, so a dead process
loses nothing. A sender takes a delivery by a conditional UPDATE that pushes its
`next_attempt_at` into the future (a lease), so one delivery is never sent twice concurrently.
URLs are checked at save time and again right before each send, and the request goes to the very
address that was checked (DNS can change between the two).

Receivers verify a delivery like this (the secret is `whsec_…` from GET /v1/webhook):

    import hashlib, hmac, time

    def verify(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
        parts = dict(item.split("=", 1) for item in header.split(","))
        signed = f"{parts['t']}.".encode() + body
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(parts["t"])) <= tolerance
        return fresh and hmac.compare_digest(expected, parts["v1"])

(`header` is the `Imagegate-Signature` value, `body` the raw request body bytes.) Deliveries may
arrive more than once (a timeout after the receiver answered); dedupe on `Imagegate-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from datetime import datetime, timedelta
from functools import partial

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from generation import events
from generation.engine.outbound import outbound_pin, outbound_url_check
from generation.models import Batch, Job, WebhookDelivery, WebhookEndpoint
from generation.pagination import newest_first_page
from tenants.errors import Conflict, InvalidRequest, NotFound
from tenants.models import Organization

logger = logging.getLogger(__name__)

# Seconds before retry n (after attempt n failed); then every 6 h until the retry window closes.
BACKOFF_SECONDS = [30, 120, 600, 3600, 3 * 3600]
BACKOFF_CAP_SECONDS = 6 * 3600
SEND_LEASE_SECONDS = 60
REDRIVE_BATCH = 100
EVENT_GENERATION_COMPLETED = "generation.completed"
EVENT_BATCH_COMPLETED = "batch.completed"
EVENT_SPEND_THRESHOLD = "spend.threshold_reached"
USER_AGENT = "Imagegate-Webhooks/1"


# --- The organization's endpoint --------------------------------------------------------------
def webhook_endpoint_get(*, organization: Organization) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(organization=organization).first()


def _endpoint_ensure(organization: Organization) -> WebhookEndpoint:
    endpoint, _ = WebhookEndpoint.objects.get_or_create(
        organization=organization, defaults={"url": "", "enabled": False}
    )
    return endpoint


def webhook_endpoint_set(*, organization: Organization, url: str, enabled: bool = True) -> WebhookEndpoint:
    """Set (or replace) the organization's webhook URL; the secret is created once and kept."""
    outbound_url_check(url=url)
    endpoint = _endpoint_ensure(organization)
    endpoint.url = url
    endpoint.enabled = enabled
    endpoint.save(update_fields=["url", "enabled", "updated_at"])
    return endpoint


def webhook_endpoint_delete(*, organization: Organization) -> None:
    """Stop sending to the organization's URL. The secret stays (per-request URLs still use it)."""
    updated = (
        WebhookEndpoint.objects.filter(organization=organization)
        .exclude(url="")
        .update(url="", enabled=False, updated_at=timezone.now())
    )
    if not updated:
        raise NotFound("No webhook endpoint is set.", param="url")


def webhook_secret_rotate(*, organization: Organization) -> WebhookEndpoint:
    """A new signing secret, effective for every delivery sent from now on."""
    from generation.models import new_webhook_secret

    endpoint = _endpoint_ensure(organization)
    endpoint.secret = new_webhook_secret()
    endpoint.save(update_fields=["secret", "updated_at"])
    return endpoint


def webhook_deliveries(
    *, organization: Organization, status: str | None = None, cursor: str | None = None, limit: int = 20
) -> tuple[list[WebhookDelivery], bool]:
    """The delivery log, newest first; (page, has_more). `cursor` is the last id of the previous page."""
    deliveries = WebhookDelivery.objects.for_org(organization)
    if status:
        deliveries = deliveries.filter(status=status)
    return newest_first_page(deliveries, cursor=cursor, limit=limit)


def webhook_delivery_get(*, organization: Organization, public_id: str) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.for_org(organization).filter(public_id=public_id).first()
    if delivery is None:
        raise NotFound(f"No webhook delivery {public_id}.", param="id")
    return delivery


def webhook_delivery_retry(*, organization: Organization, public_id: str) -> WebhookDelivery:
    """Send a failed delivery once more, now (past its retry window, one attempt: if that fails too,
    it is failed again)."""
    delivery = webhook_delivery_get(organization=organization, public_id=public_id)
    updated = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.FAILED).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now()
    )
    if not updated:
        raise Conflict(f"Webhook delivery {public_id} is {delivery.status}; only failed ones are retried.")
    transaction.on_commit(partial(webhook_delivery_enqueue, delivery.public_id))
    delivery.refresh_from_db()
    return delivery


# --- Events -----------------------------------------------------------------------------------
def _target(organization_id: int, request_url: str) -> tuple[str, WebhookEndpoint | None]:
    endpoint = WebhookEndpoint.objects.filter(organization_id=organization_id).first()
    if request_url:
        return request_url, endpoint
    if endpoint is not None and endpoint.enabled and endpoint.url:
        return endpoint.url, endpoint
    return "", endpoint


def webhook_event_create(
    *, organization_id: int, event: str, object_id: str, payload: dict, url: str
) -> WebhookDelivery:
    """Record one delivery (sent after commit). A per-request URL needs a signing secret, so the
    organization's endpoint row is created (without a URL) if it has none yet."""
    WebhookEndpoint.objects.get_or_create(
        organization_id=organization_id, defaults={"url": "", "enabled": False}
    )
    delivery = WebhookDelivery.objects.create(
        organization_id=organization_id,
        event=event,
        object_id=object_id,
        url=url,
        payload=payload,
        next_attempt_at=timezone.now(),
    )
    transaction.on_commit(partial(webhook_delivery_enqueue, delivery.public_id))
    return delivery


def _object_finished(obj: Job | Batch, *, event: str, document: dict) -> WebhookDelivery | None:
    url, _ = _target(obj.organization_id, obj.webhook_url)
    if not url:
        return None
    return webhook_event_create(
        organization_id=obj.organization_id, event=event, object_id=obj.public_id, payload=document, url=url
    )


def webhook_job_finished(*, job: Job, document: dict) -> WebhookDelivery | None:
    """`events.job_finished` subscriber (inside the terminal transaction): record the delivery of
    the job's document to the request's or the organization's URL, so the delivery exists if and
    only if the job finished. One query when there is no webhook."""
    return _object_finished(job, event=EVENT_GENERATION_COMPLETED, document=document)


def webhook_batch_finished(*, batch: Batch, document: dict) -> WebhookDelivery | None:
    """`events.batch_finished` subscriber (inside the batch's terminal transaction)."""
    return _object_finished(batch, event=EVENT_BATCH_COMPLETED, document=document)


def webhook_spend_threshold(*, organization: Organization, alert) -> WebhookDelivery | None:
    """A spend threshold of the organization's monthly cap was reached (a tenants.limits hook,
    called once per threshold per month in the transaction that records it): tell the
    organization's webhook URL, if it has one."""
    url, _ = _target(organization.pk, "")
    if not url:
        return None
    payload = {
        "object": "spend_threshold",
        "organization": organization.public_id,
        "period_start": alert.period_start.isoformat(),
        "threshold_percent": alert.threshold,
        "spend": f"{alert.spend:.4f}",
        "monthly_cap": f"{alert.cap:.2f}",
        "currency": organization.plan.currency,
    }
    object_id = f"{alert.period_start:%Y-%m}-{alert.threshold}"
    return webhook_event_create(
        organization_id=organization.pk,
        event=EVENT_SPEND_THRESHOLD,
        object_id=object_id,
        payload=payload,
        url=url,
    )


# --- Sending ----------------------------------------------------------------------------------
def webhook_delivery_enqueue(public_id: str) -> None:
    """After commit: hand the delivery to whoever sends (the worker's sender threads subscribe)."""
    events.webhook_delivery_due(public_id=public_id)


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _backoff(attempts: int) -> float:
    base = BACKOFF_SECONDS[attempts - 1] if attempts <= len(BACKOFF_SECONDS) else BACKOFF_CAP_SECONDS
    return base * random.uniform(0.9, 1.2)  # jitter: receivers coming back are not stampeded


def _body(delivery: WebhookDelivery) -> bytes:
    payload = delivery.payload
    if delivery.event == EVENT_GENERATION_COMPLETED:
        from generation.documents import job_render

        payload = job_render(payload)  # fresh signed image URLs at every attempt
    return json.dumps(payload, separators=(",", ":")).encode()


def _post(*, url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST to the address that passed the check (not a second DNS lookup); returns the status."""
    pinned = outbound_pin(url=url)
    # No redirects (they could lead anywhere unchecked); the response body is never read, so a
    # receiver cannot make us buffer an arbitrary amount of data.
    with (
        httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False) as client,
        client.stream(
            "POST",
            pinned.target,
            content=body,
            headers={**headers, **pinned.headers},
            extensions=pinned.extensions,
        ) as response,
    ):
        return response.status_code


def webhook_delivery_send(*, public_id: str, now: datetime | None = None) -> bool | None:
    """Attempt one due delivery. True: delivered; False: failed (retry scheduled or given up);
    None: not due, or another sender holds it."""
    now = now or timezone.now()
    due = Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
    claimed = WebhookDelivery.objects.filter(due, public_id=public_id).update(
        next_attempt_at=now + timedelta(seconds=SEND_LEASE_SECONDS), attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.get(public_id=public_id)
    endpoint = WebhookEndpoint.objects.get(organization_id=delivery.organization_id)
    body = _body(delivery)
    timestamp = int(time.time())  # the receiver compares it with its own clock
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Imagegate-Event": delivery.event,
        "Imagegate-Delivery": delivery.public_id,
        "Imagegate-Signature": webhook_signature(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    status_code: int | None = None
    error = ""
    started = time.monotonic()
    try:
        status_code = _post(url=delivery.url, body=body, headers=headers)
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except InvalidRequest as exc:
        error = f"URL refused: {exc.message}"
    except httpx.TimeoutException:
        error = f"Timed out after {settings.WEBHOOK_TIMEOUT_SECONDS:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    logger.info(
        "webhook %s attempt %d: %s in %.0f ms",
        delivery.public_id,
        delivery.attempts,
        status_code or error,
        (time.monotonic() - started) * 1000,
    )
    fields: dict = {"last_status_code": status_code, "last_error": error}
    if not error:
        fields.update(
            status=WebhookDelivery.Status.SUCCEEDED, delivered_at=timezone.now(), next_attempt_at=None
        )
    else:
        retry_at = now + timedelta(seconds=_backoff(delivery.attempts))
        window_end = delivery.created_at + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        if retry_at > window_end:
            fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        else:
            fields.update(next_attempt_at=retry_at)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return not error


def webhook_deliveries_due(*, now: datetime | None = None, limit: int = REDRIVE_BATCH) -> list[str]:
    """Deliveries to send now: retries that are due, and first attempts whose sender was lost."""
    due = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now or timezone.now()
    )
    return list(due.order_by("next_attempt_at").values_list("public_id", flat=True)[:limit])


def webhook_deliveries_redrive(*, now: datetime | None = None) -> dict[str, int]:
    """Send every due delivery, one after the other, here and now."""
    now = now or timezone.now()
    counts = {"succeeded": 0, "failed": 0}
    for public_id in webhook_deliveries_due(now=now):
        result = webhook_delivery_send(public_id=public_id, now=now)
        if result is True:
            counts["succeeded"] += 1
        elif result is False:
            counts["failed"] += 1
    return counts
