"""The sandbox provider: real images rendered locally with Pillow, no network, no cost.

Invariants: output has the route's exact pixel size for (resolution, aspect ratio); the same
(seed, prompt, parameters) renders byte-identical images (seed None derives one from the prompt);
rendering runs in a worker thread so the event loop is never blocked. With input images, the
first one fills the canvas (inside the mask's white areas the gradient shows instead, as an edit
would change only those), the others are drawn as thumbnails along the bottom, and the prompt is
written over them: the result visibly uses its inputs.

Route options: `latency_ms` (sleep before answering, default 0) and `failure_rate` (0..1, chance
that a call raises UpstreamServerError). Test hooks in the prompt:
  `[filtered]`  the last image of the request comes back filtered ("sandbox: filtered on request")
  `[fail]`      the call raises UpstreamServerError
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

from generation.engine.providers.base import (
    ProviderImage,
    ProviderRequest,
    ProviderResult,
    Target,
    UpstreamBadRequest,
    UpstreamServerError,
)

FILTERED_HOOK = "[filtered]"
FAIL_HOOK = "[fail]"
FILTER_REASON = "sandbox: filtered on request"
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DEFAULT_QUALITY = 90


async def generate(client: object, target: Target, request: ProviderRequest) -> ProviderResult:
    """Same signature as the HTTP providers; `client` is unused."""
    latency_ms = float(target.options.get("latency_ms") or 0)
    if latency_ms > 0:
        await asyncio.sleep(latency_ms / 1000)
    if FAIL_HOOK in request.prompt:
        raise UpstreamServerError("sandbox: failure requested by the prompt", http_status=500)
    failure_rate = float(target.options.get("failure_rate") or 0)
    if failure_rate > 0 and random.random() < failure_rate:
        raise UpstreamServerError("sandbox: simulated failure (failure_rate)", http_status=500)

    try:
        width, height = target.dimensions[request.resolution][request.aspect_ratio]
    except KeyError:
        raise UpstreamBadRequest(
            f"sandbox: no size for {request.resolution} {request.aspect_ratio} on {target.model}"
        ) from None
    if request.output_format not in MIME_TYPES:
        raise UpstreamBadRequest(f"sandbox: unsupported output format {request.output_format!r}")

    render_count = request.count - 1 if FILTERED_HOOK in request.prompt else request.count
    rendered = await asyncio.gather(
        *(asyncio.to_thread(render, request, int(width), int(height), index) for index in range(render_count))
    )
    mime_type = MIME_TYPES[request.output_format]
    images = [ProviderImage(data=data, mime_type=mime_type) for data in rendered]
    if render_count < request.count:
        images.append(ProviderImage(data=None, mime_type=None, filtered=True, filter_reason=FILTER_REASON))
    return ProviderResult(images=images, upstream_calls=1)


def render(request: ProviderRequest, width: int, height: int, index: int) -> bytes:
    """Blocking: one encoded image. Everything random comes from a hash of the inputs."""
    seed = request.seed if request.seed is not None else _prompt_seed(request.prompt)
    digest = hashlib.sha256(
        f"{seed}|{index}|{request.prompt}|{request.aspect_ratio}|{request.resolution}".encode()
    ).digest()
    top, bottom = tuple(digest[0:3]), tuple(digest[3:6])
    # A 1x2 image scaled up is a smooth vertical gradient at C speed, even at 4K.
    image = Image.new("RGB", (1, 2))
    image.putdata([top, bottom])
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    if request.input_images:
        image = _composite_inputs(request, image)

    draw = ImageDraw.Draw(image)
    font_size = max(12, min(width, height) // 16)
    font = ImageFont.load_default(size=font_size)
    chars_per_line = max(8, int(width * 0.9 / (font_size * 0.55)))
    lines = textwrap.wrap(request.prompt, chars_per_line)[:12] or [""]
    lines.append(f"seed {seed} · #{index + 1} · {width}x{height}")
    ink = (255, 255, 255) if sum(top) + sum(bottom) < 3 * 255 else (0, 0, 0)
    margin = width // 20
    outline = (0, 0, 0) if ink == (255, 255, 255) else (255, 255, 255)
    draw.multiline_text(
        (margin, margin),
        "\n".join(lines),
        font=font,
        fill=ink,
        spacing=font_size // 3,
        stroke_width=max(1, font_size // 12) if request.input_images else 0,
        stroke_fill=outline,
    )

    buffer = io.BytesIO()
    quality = request.compression_quality if request.compression_quality is not None else DEFAULT_QUALITY
    if request.output_format == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    elif request.output_format == "webp":
        image.save(buffer, "WEBP", quality=quality)
    else:
        image.save(buffer, "PNG", compress_level=1)  # speed over size: it is a sandbox
    return buffer.getvalue()


def _composite_inputs(request: ProviderRequest, canvas: Image.Image) -> Image.Image:
    """The first input fills the canvas (cropped to its ratio); the mask's white areas show the
    generated gradient instead; later inputs become thumbnails in a strip along the bottom."""
    width, height = canvas.size
    with Image.open(io.BytesIO(request.input_images[0].data)) as first:
        base = ImageOps.fit(first.convert("RGB"), (width, height), Image.Resampling.BILINEAR)
    if request.input_mask is not None:
        with Image.open(io.BytesIO(request.input_mask.data)) as mask_file:
            mask = mask_file.convert("L").resize((width, height), Image.Resampling.BILINEAR)
        base = Image.composite(canvas, base, mask)
    others = request.input_images[1:]
    if others:
        side = max(16, min(height // 5, width // max(1, len(others)) - 8))
        x = width // 40
        for other in others:
            with Image.open(io.BytesIO(other.data)) as thumb_file:
                thumb = ImageOps.fit(thumb_file.convert("RGB"), (side, side), Image.Resampling.BILINEAR)
            base.paste(thumb, (x, height - side - height // 40))
            x += side + 8
    return base


def _prompt_seed(prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
