"""Stored images and their signed, expiring URLs.

Images go through Django's storage API: the filesystem by default, any S3-compatible store when
django-storages is configured (then the store's own presigned URLs are used). Filesystem images
are served by `ImageFileView` behind an HMAC signature over (image id, expiry), so a URL can be
embedded without the API key and stops working after the tenant's TTL.
"""

from __future__ import annotations

import hmac
import io
import time

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils.crypto import salted_hmac
from PIL import Image as PILImage

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_SALT = "imagegate.generation.image-url"


def image_dimensions(data: bytes) -> tuple[int, int]:
    """Reads only the header: cheap even for a 4K image."""
    with PILImage.open(io.BytesIO(data)) as img:
        return img.size


def image_transcode(data: bytes, *, output_format: str, quality: int | None) -> bytes:
    """Re-encode when the upstream could not emit the requested format (e.g. webp)."""
    with PILImage.open(io.BytesIO(data)) as opened:
        out = io.BytesIO()
        img: PILImage.Image = opened
        if output_format == "jpeg" and img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        options = {"quality": quality or 90} if output_format in ("jpeg", "webp") else {"compress_level": 6}
        img.save(out, format=_PIL_FORMATS[output_format], **options)
        return out.getvalue()


def image_store(*, path_prefix: str, image_public_id: str, data: bytes, mime_type: str) -> str:
    name = f"{path_prefix}/{image_public_id}.{EXTENSIONS.get(mime_type, 'bin')}"
    return default_storage.save(name, ContentFile(data))


def image_delete(path: str) -> None:
    if path:
        default_storage.delete(path)


def _signature(public_id: str, expires: int, secret: str | None = None) -> str:
    return salted_hmac(_SALT, f"{public_id}:{expires}", secret=secret, algorithm="sha256").hexdigest()


def image_url(*, public_id: str, storage_path: str, ttl_seconds: int, now: float | None = None) -> str:
    if hasattr(default_storage, "bucket_name"):  # S3-compatible: the store signs its own URL
        return default_storage.url(storage_path, expire=ttl_seconds)  # type: ignore[call-arg]  # S3Storage.url
    expires = int((now or time.time()) + ttl_seconds)
    ext = storage_path.rsplit(".", 1)[-1]
    signature = _signature(public_id, expires)
    return f"{settings.PUBLIC_BASE_URL}/files/{public_id}.{ext}?expires={expires}&signature={signature}"


def image_url_expiry(
    *, public_id: str, expires: str | None, signature: str | None, now: float | None = None
) -> int | None:
    """When a signed URL stops working (unix seconds), or None if it is invalid or expired.

    URLs are signed with SECRET_KEY; during a key rotation those signed with a key now listed in
    SECRET_KEY_FALLBACKS keep working until they expire. The signature is compared as ASCII bytes:
    `compare_digest` refuses non-ASCII str (a TypeError, i.e. a 500, for `?signature=é`)."""
    try:
        expires_at = int(expires or "")
    except (TypeError, ValueError):
        return None
    if expires_at < (now or time.time()):
        return None
    if not isinstance(signature, str) or not signature.isascii():
        return None
    given = signature.encode()
    for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        if hmac.compare_digest(_signature(public_id, expires_at, secret).encode(), given):
            return expires_at
    return None


def image_url_valid(*, public_id: str, expires: str, signature: str, now: float | None = None) -> bool:
    return image_url_expiry(public_id=public_id, expires=expires, signature=signature, now=now) is not None


def image_open(storage_path: str):
    return default_storage.open(storage_path, "rb")
