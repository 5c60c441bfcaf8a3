"""The JSON documents of the API's resources: jobs (with their images), batches (with their item
counts) and webhook endpoints and deliveries, each built in exactly one place.

A job's document is plain JSON-able data with image storage paths; `job_render` turns it into the
public resource with fresh signed URLs. The worker builds it from the rows it just wrote and pushes
it to the waiting request, and webhook deliveries store it, so it never needs reading back. The
OpenAPI schema (generation.api.serializers) is tested against these field lists
(generation/tests/test_documents.py): a key returned here and missing there fails the suite.
"""

from __future__ import annotations

from django.db.models import Count

from generation.engine.storage import image_url
from generation.models import Batch, InputFile, Job, WebhookDelivery, WebhookEndpoint


def _iso(value) -> str | None:
    """UTC timestamps as ISO 8601 with a Z, as DRF renders them."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def job_document(job: Job, images: list) -> dict:
    """Everything the Job resource shows, as plain JSON-able data (image storage paths instead of
    URLs). Built from database rows, or by the worker from what it just wrote, and pushed to the
    waiting request (generation.jobs.notifications), which then answers without querying again."""
    params = job.params
    succeeded = job.status == Job.Status.SUCCEEDED
    created = job.created_at
    finished = job.finished_at
    return {
        "id": job.public_id,
        "object": "generation",
        "status": job.status,
        "livemode": job.livemode,
        "tier": job.tier,
        "served_tier": job.served_tier or None,
        "model": job.served_model or job.requested_model or None,
        "route": job.route or None,
        "fallback_reason": job.fallback_reason or None,
        "prompt": job.prompt,
        "count": job.count,
        "aspect_ratio": params.get("aspect_ratio"),
        "resolution": params.get("resolution"),
        "output_format": params.get("output_format"),
        "compression_quality": params.get("compression_quality"),
        "seed": params.get("seed"),
        "negative_prompt": params.get("negative_prompt"),
        "safety_level": params.get("safety_level"),
        "person_generation": params.get("person_generation"),
        # Input files by id (GET /v1/files/{id}); the bytes are never part of the document.
        "input_images": list(params.get("images") or []),
        "mask": params.get("mask"),
        "fallback": job.fallback_policy,
        "notice": params.get("model_notice"),
        "images": [
            {
                "id": image.public_id,
                "storage_path": image.storage_path,
                "width": image.width,
                "height": image.height,
                "mime_type": image.mime_type or None,
                "filtered": image.filtered,
                "filter_reason": image.filter_reason or None,
            }
            for image in (images if succeeded else [])
        ],
        "usage": {"images": job.images_delivered, "amount": f"{job.amount:.4f}", "currency": job.currency},
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "attempts": job.attempts,
        "created_at": _iso(created),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(finished),
        "latency_ms": int((finished - created).total_seconds() * 1000) if finished and created else None,
        "metadata": job.metadata,
        "webhook_url": job.webhook_url or None,
        "image_url_ttl_seconds": job.organization.image_url_ttl_seconds,
    }


def job_render(document: dict) -> dict:
    """The public Job resource: the document with fresh signed image URLs (expiring after the TTL)."""
    rendered = dict(document)
    ttl = rendered.pop("image_url_ttl_seconds")
    rendered["images"] = [
        {
            "id": image["id"],
            "url": None
            if image["filtered"]
            else image_url(public_id=image["id"], storage_path=image["storage_path"], ttl_seconds=ttl),
            **{k: image[k] for k in ("width", "height", "mime_type", "filtered", "filter_reason")},
        }
        for image in document["images"]
    ]
    return rendered


def batch_counts(*, batch: Batch) -> dict[str, int]:
    """Items by state; they always add up to `total`. Items not fed yet count as queued (or as
    canceled once the batch is canceled); a succeeded job whose every image was filtered counts
    as filtered."""
    by_status = dict(
        Job.objects.filter(batch=batch)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    filtered = Job.objects.filter(batch=batch, status=Job.Status.SUCCEEDED, images_delivered=0).count()
    unfed = batch.total - sum(by_status.values())
    never_fed = batch.status in (Batch.Status.CANCELING, Batch.Status.CANCELED)
    return {
        "total": batch.total,
        "queued": by_status.get(Job.Status.QUEUED, 0) + (0 if never_fed else unfed),
        "running": by_status.get(Job.Status.RUNNING, 0),
        "succeeded": by_status.get(Job.Status.SUCCEEDED, 0) - filtered,
        "failed": by_status.get(Job.Status.FAILED, 0),
        "filtered": filtered,
        "canceled": by_status.get(Job.Status.CANCELED, 0) + (unfed if never_fed else 0),
    }


def batch_document(batch: Batch) -> dict:
    return {
        "id": batch.public_id,
        "object": "batch",
        "status": batch.status,
        "counts": batch_counts(batch=batch),
        "webhook_url": batch.webhook_url or None,
        "created_at": _iso(batch.created_at),
        "started_at": _iso(batch.started_at),
        "canceled_at": _iso(batch.cancelled_at),
        "finished_at": _iso(batch.finished_at),
    }


def _item_status(batch: Batch, job: Job | None) -> str:
    if job is not None:
        return job.status
    if batch.status in (Batch.Status.CANCELING, Batch.Status.CANCELED):
        return Job.Status.CANCELED
    return Job.Status.QUEUED  # not fed yet: counted as queued too, with no generation


def batch_item_document(batch: Batch, index: int, custom_id: str, job: Job | None) -> dict:
    return {
        "index": index,
        "custom_id": custom_id,
        "status": _item_status(batch, job),
        "generation": job_render(job_document(job, list(job.images.all()))) if job is not None else None,
    }


def file_document(file: InputFile) -> dict:
    """An input file (POST /v1/files, or an image sent inline with a request)."""
    return {
        "id": file.public_id,
        "object": "file",
        "purpose": "input_image",
        "source": file.source,
        "filename": file.filename or None,
        "mime_type": file.mime_type,
        "width": file.width,
        "height": file.height,
        "bytes": file.size_bytes,
        "created_at": _iso(file.created_at),
        "expires_at": _iso(file.expires_at),
    }


def webhook_endpoint_document(endpoint: WebhookEndpoint, *, show_secret: bool) -> dict:
    # The signing secret is shown to the tenant (they need it to verify), as Stripe does, but only
    # to keys that may change the endpoint: a read-only key could otherwise forge deliveries.
    return {
        "object": "webhook_endpoint",
        "url": endpoint.url or None,
        "enabled": endpoint.enabled,
        "secret": endpoint.secret if show_secret else None,
        "created_at": _iso(endpoint.created_at),
        "updated_at": _iso(endpoint.updated_at),
    }


def webhook_delivery_document(delivery: WebhookDelivery) -> dict:
    return {
        "id": delivery.public_id,
        "object": "webhook_delivery",
        "event": delivery.event,
        "object_id": delivery.object_id,
        "url": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error or None,
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "delivered_at": _iso(delivery.delivered_at),
        "created_at": _iso(delivery.created_at),
    }
