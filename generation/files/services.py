"""Input images: uploaded files (`POST /v1/files`) and images sent inline with a request (an https
URL or base64), all stored the same way, as `InputFile` rows scoped to the organization.

Invariants:
- What we store is never what was sent: the content type is sniffed from the bytes (PNG, JPEG,
  WEBP; anything else is a 400 naming the field), the pixels are decoded and re-encoded by Pillow
  (EXIF, GPS and other metadata dropped; EXIF orientation applied first), within FILES_MAX_BYTES
  and FILES_MAX_PIXELS. Each model's own limits (catalog "inputs") are checked when a request
  uses the file (`inputs_check`).
- Inputs are resolved at submit time: a URL is fetched once, in the request, through
  engine/outbound.py (checked, pinned, bounded). The worker then reads only our own store, so a
  tenant's URL never runs on a worker, a retry or failover sees the very same bytes, and a URL
  that fails is a 400 to the caller instead of a failed job later.
- Retention: files expire after FILES_RETENTION_SECONDS; `files_expire` (scheduled) deletes
  them, except files a queued or running job still needs (kept until it finishes).
"""

from __future__ import annotations

import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import timedelta

import pybase64
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from PIL import Image as PILImage
from PIL import ImageOps

from generation.engine.catalog import InputLimits
from generation.engine.outbound import outbound_fetch
from generation.engine.providers.base import InputImage
from generation.engine.storage import image_delete, image_open, image_store
from generation.errors import FileInUse, InputMissing
from generation.models import InputFile, Job, JobInput
from tenants.errors import InvalidRequest, NotFound
from tenants.models import Organization

SNIFFED = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]*)?(;[\w=-]+)*;base64,", re.IGNORECASE)
_URLSAFE = str.maketrans("-_", "+/")
FILE_ID = re.compile(r"^file_[A-Za-z0-9]{4,36}$")


@dataclass(frozen=True)
class Upload:
    """Bytes received in a multipart field (POST /v1/files, OpenAI's edits), with their name."""

    data: bytes
    filename: str = ""


def image_sniff(data: bytes) -> str | None:
    """The content type the bytes really are (never the name or header the client sent)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class _Normalized:
    data: bytes
    mime_type: str
    width: int
    height: int


def image_normalize(*, data: bytes, param: str) -> _Normalized:
    """Sniff, bound, decode and re-encode an input image (drops EXIF and other metadata)."""
    if len(data) > settings.FILES_MAX_BYTES:
        raise InvalidRequest(
            f"{param}: the image is {len(data)} bytes; the limit is {settings.FILES_MAX_BYTES}.", param=param
        )
    mime = image_sniff(data)
    if mime is None:
        raise InvalidRequest(f"{param}: not a PNG, JPEG or WEBP image.", param=param)
    try:
        with PILImage.open(io.BytesIO(data), formats=[SNIFFED[mime]]) as img:
            width, height = img.size  # header only: refuse a decompression bomb before decoding
            if width * height > settings.FILES_MAX_PIXELS:
                raise InvalidRequest(
                    f"{param}: {width}x{height} is more than {settings.FILES_MAX_PIXELS} pixels.", param=param
                )
            img.load()
            image = ImageOps.exif_transpose(img)  # keep the orientation the EXIF we drop described
            out = io.BytesIO()
            if mime == "image/jpeg":
                image = image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")
                image.save(out, "JPEG", quality=95, icc_profile=img.info.get("icc_profile"))
            elif mime == "image/webp":
                image.save(out, "WEBP", quality=95, icc_profile=img.info.get("icc_profile"))
            else:
                image.save(out, "PNG", compress_level=1, icc_profile=img.info.get("icc_profile"))
            width, height = image.size
    except InvalidRequest:
        raise
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError):
        raise InvalidRequest(f"{param}: the image data is corrupt or truncated.", param=param) from None
    return _Normalized(data=out.getvalue(), mime_type=mime, width=width, height=height)


def _expiry():
    return timezone.now() + timedelta(seconds=settings.FILES_RETENTION_SECONDS)


def file_create(
    *,
    organization: Organization,
    data: bytes,
    param: str,
    source: str,
    filename: str = "",
    source_url: str = "",
) -> InputFile:
    """Store one input image. Inline inputs (URL, base64) with bytes this organization already
    sent are the same file again (its retention renewed), so a retried request names the same
    file ids and keeps its idempotency fingerprint."""
    digest = hashlib.sha256(data).hexdigest()
    if source != InputFile.Source.UPLOAD:
        existing = (
            InputFile.objects.for_org(organization)
            .filter(sha256=digest, source=source, expires_at__gt=timezone.now())
            .first()
        )
        if existing is not None:
            InputFile.objects.filter(pk=existing.pk).update(expires_at=_expiry())
            return existing
    normalized = image_normalize(data=data, param=param)
    file = InputFile(
        organization=organization,
        source=source,
        filename=filename[:200],
        source_url=source_url[:2000],
        mime_type=normalized.mime_type,
        width=normalized.width,
        height=normalized.height,
        size_bytes=len(normalized.data),
        sha256=digest,
        expires_at=_expiry(),
    )
    file.storage_path = image_store(
        path_prefix=f"inputs/{organization.public_id}",
        image_public_id=file.public_id,
        data=normalized.data,
        mime_type=normalized.mime_type,
    )
    file.save()
    return file


def file_upload(*, organization: Organization, upload: Upload, param: str = "file") -> InputFile:
    return file_create(
        organization=organization,
        data=upload.data,
        param=param,
        source=InputFile.Source.UPLOAD,
        filename=upload.filename,
    )


def file_get(*, organization: Organization, public_id: str, param: str = "id") -> InputFile:
    """This organization's unexpired file; anything else (another tenant's) is a 404."""
    file = (
        InputFile.objects.for_org(organization)
        .filter(public_id=public_id, expires_at__gt=timezone.now())
        .first()
    )
    if file is None:
        raise NotFound(f"No file {public_id}.", param=param)
    return file


def _in_use(file_ids: list[int]) -> set[int]:
    unfinished = JobInput.objects.filter(file_id__in=file_ids).exclude(job__status__in=Job.TERMINAL)
    return set(unfinished.values_list("file_id", flat=True))


@transaction.atomic
def file_delete(*, organization: Organization, public_id: str) -> None:
    file = file_get(organization=organization, public_id=public_id)
    if _in_use([file.pk]):
        raise FileInUse(f"File {public_id} is an input of a generation that has not finished yet.")
    file.delete()
    transaction.on_commit(lambda: image_delete(file.storage_path))


def files_expire(*, now=None, limit: int = 1000) -> int:
    """Delete expired files (rows, then their bytes), except those an unfinished job needs."""
    now = now or timezone.now()
    expired = list(InputFile.objects.filter(expires_at__lte=now).values_list("pk", "storage_path")[:limit])
    keep = _in_use([pk for pk, _ in expired])
    doomed = [(pk, path) for pk, path in expired if pk not in keep]
    InputFile.objects.filter(pk__in=[pk for pk, _ in doomed], expires_at__lte=now).delete()
    for _, path in doomed:
        image_delete(path)
    return len(doomed)


def _base64_bytes(spec: str, param: str) -> bytes:
    match = _DATA_URL.match(spec)
    payload = spec[match.end() :] if match else spec
    # The common case (standard alphabet, no line breaks) decodes in one C pass; only otherwise
    # are whitespace dropped and Google's URL-safe alphabet (`-`, `_`) and missing padding mended.
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        pass
    payload = re.sub(r"\s+", "", payload).translate(_URLSAFE)
    payload += "=" * (-len(payload) % 4)
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{param}: expected a file id (file_…), an https URL or base64 image data.", param=param
        ) from None


def input_resolve(*, organization: Organization, spec: str | Upload, param: str) -> InputFile:
    """One input as a stored file: a file id of this organization, an https URL (fetched now,
    through the SSRF-safe path), base64 data (a `data:` URL or bare), or uploaded bytes."""
    if isinstance(spec, Upload):
        return file_create(
            organization=organization,
            data=spec.data,
            param=param,
            source=InputFile.Source.INLINE,
            filename=spec.filename,
        )
    spec = spec.strip()
    if FILE_ID.match(spec):
        return file_get(organization=organization, public_id=spec, param=param)
    if spec.lower().startswith(("https://", "http://")):
        fetched = outbound_fetch(
            url=spec,
            param=param,
            max_bytes=settings.FILES_MAX_BYTES,
            timeout=settings.FILES_FETCH_TIMEOUT_SECONDS,
            max_redirects=settings.FILES_FETCH_MAX_REDIRECTS,
            allow_private=settings.FILES_ALLOW_PRIVATE_URLS,
        )
        return file_create(
            organization=organization,
            data=fetched.content,
            param=param,
            source=InputFile.Source.URL,
            source_url=spec,
        )
    return file_create(
        organization=organization,
        data=_base64_bytes(spec, param),
        param=param,
        source=InputFile.Source.INLINE,
    )


def inputs_check(*, file: InputFile, limits: InputLimits, param: str) -> None:
    """The file within what every candidate route's model accepts."""
    if limits.mime_types and file.mime_type not in limits.mime_types:
        raise InvalidRequest(
            f"{param}: {file.mime_type} is not accepted by this model ({', '.join(limits.mime_types)}).",
            param=param,
        )
    if limits.max_bytes and file.size_bytes > limits.max_bytes:
        raise InvalidRequest(
            f"{param}: the image is {file.size_bytes} bytes; this model takes at most {limits.max_bytes}.",
            param=param,
        )
    if limits.max_pixels and file.width * file.height > limits.max_pixels:
        raise InvalidRequest(
            f"{param}: {file.width}x{file.height} is more than this model's {limits.max_pixels} pixels.",
            param=param,
        )


def job_inputs_attach(*, job: Job, images: tuple[str, ...], mask: str | None) -> None:
    """Record which files a job uses (inside job_submit's transaction). The files were resolved
    for this organization just before; one that vanished meanwhile is a 404 and no job."""
    wanted = [*images, *([mask] if mask else [])]
    if not wanted:
        return
    found = dict(
        InputFile.objects.for_org(job.organization)
        .filter(public_id__in=wanted, expires_at__gt=timezone.now())
        .values_list("public_id", "pk")
    )
    rows = []
    for role, ids in ((JobInput.Role.IMAGE, images), (JobInput.Role.MASK, (mask,) if mask else ())):
        for position, public_id in enumerate(ids):
            if public_id not in found:
                raise NotFound(
                    f"No file {public_id}.", param="mask" if role == "mask" else f"images[{position}]"
                )
            rows.append(
                JobInput(
                    job=job, file_id=found[public_id], file_public_id=public_id, role=role, position=position
                )
            )
    JobInput.objects.bulk_create(rows)


def _read(file: InputFile) -> InputImage:
    with image_open(file.storage_path) as handle:
        data = handle.read()
    return InputImage(data=data, mime_type=file.mime_type, width=file.width, height=file.height)


def mask_edit_area(mask: InputImage) -> InputImage:
    """A mask as providers take it: a black-and-white PNG, white where the image may change.
    We accept OpenAI's convention (fully transparent pixels mark the edit area) and, for a mask
    without transparency, white as the edit area."""
    with PILImage.open(io.BytesIO(mask.data)) as img:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            alpha = img.convert("RGBA").getchannel("A")
            area = alpha.point(lambda value: 255 if value == 0 else 0)
        else:
            area = img.convert("L").point(lambda value: 255 if value >= 128 else 0)
        out = io.BytesIO()
        area.convert("L").save(out, "PNG", compress_level=1)
    return InputImage(data=out.getvalue(), mime_type="image/png", width=mask.width, height=mask.height)


def job_inputs_load(*, job: Job) -> tuple[tuple[InputImage, ...], InputImage | None]:
    """The bytes of a job's input images and mask, from our store, in request order (worker)."""
    images: list[InputImage] = []
    mask: InputImage | None = None
    rows = list(JobInput.objects.filter(job=job).select_related("file"))
    if not rows:
        return (), None
    for row in sorted(rows, key=lambda r: (r.role != JobInput.Role.IMAGE, r.position)):
        if row.file is None:
            raise InputMissing(f"Input {row.file_public_id} was deleted before the generation ran.")
        try:
            loaded = _read(row.file)
        except OSError:
            raise InputMissing(f"Input {row.file_public_id} could not be read.") from None
        if row.role == JobInput.Role.MASK:
            mask = mask_edit_area(loaded)
        else:
            images.append(loaded)
    return tuple(images), mask
