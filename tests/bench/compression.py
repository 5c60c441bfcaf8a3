"""`make bench` (part 2): what response compression costs and buys for our payloads on this machine.

The OpenAI/Google SDKs send `Accept-Encoding: gzip, deflate`. Our compat responses carry the images
inline as base64 (1 image ≈ 2 MB of JSON). For each payload and each choice (identity, gzip level 1,
gzip level 6 = Django's GZipMiddleware), this measures:

- the server's CPU ms to compress one response (median of repeats, `time.process_time`),
- the client's CPU ms to decompress it,
- the bytes on the wire and the saving,
- the latency of a full request over loopback to a threaded HTTP server on 127.0.0.1 that
  compresses per request (median), and the transfer time the saved bytes are worth at 100 Mbit/s
  and 1 Gbit/s (computed: bytes * 8 / bandwidth).

Payloads: an OpenAI `images.generate` response with 1 and with 4 photo-like 1024x1024 PNGs (noise on a
gradient: real model output compresses about as badly), the same with the sandbox's flat images,
and a 100-item generation list (plain JSON, no images) for contrast. Nothing asserts; figures are
printed and written to var/bench/compression-<time>.json.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import statistics
import sys
import threading
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
REPEATS = int(os.environ.get("BENCH_COMPRESSION_REPEATS", "7"))


def photo_like_png(seed: int) -> bytes:
    """1024x1024 PNG whose pixels carry noise, like a photograph (≈ 2 MB, like a 1K photo from Gemini)."""
    gradient = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    image = Image.blend(gradient, noise, 0.1)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def sandbox_png(index: int) -> bytes:
    from generation.engine.providers.base import ProviderRequest
    from generation.engine.providers.sandbox import render

    request = ProviderRequest(prompt="a lighthouse at dusk", count=1, aspect_ratio="1:1", resolution="1K")
    return render(request, 1024, 1024, index)


def openai_body(images: list[bytes]) -> bytes:
    data = [{"b64_json": base64.b64encode(image).decode()} for image in images]
    return json.dumps(
        {"created": 1795462978, "data": data, "output_format": "png", "size": "1024x1024"}
    ).encode()


def list_body() -> bytes:
    job = {
        "id": "gen_01jd5m3w7r8k9x2c4v6b8n0q1z",
        "object": "generation",
        "status": "succeeded",
        "tier": "fast",
        "served_tier": "fast",
        "model": "gemini-3.1-flash-image",
        "prompt": "a lighthouse at dusk, watercolor, soft light",
        "count": 1,
        "aspect_ratio": "16:9",
        "resolution": "1K",
        "output_format": "png",
        "images": [
            {
                "id": "img_01jd5m3w7r8k9x2c4v6b8n0q2a",
                "url": "https://api.example.com/files/img_01jd5m3w7r8k9x2c4v6b8n0q2a.png?expires=1795466578"
                "&signature=9f2c4e7a1b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
                "width": 1376,
                "height": 768,
                "mime_type": "image/png",
                "filtered": False,
                "filter_reason": None,
            }
        ],
        "usage": {"images": 1, "amount": "0.0400", "currency": "usd"},
        "created_at": "2026-11-24T14:30:00.123456Z",
        "latency_ms": 4120,
        "metadata": {},
    }
    return json.dumps({"object": "list", "data": [job] * 100, "has_more": True}).encode()


def cpu_ms(fn: Callable[..., T], *args) -> tuple[float, T]:
    timings: list[float] = []
    for _ in range(REPEATS):
        start = time.process_time()
        result = fn(*args)
        timings.append((time.process_time() - start) * 1000)
    return statistics.median(timings), result  # REPEATS >= 1: assigned


def encode(body: bytes, level: int | None) -> bytes:
    return body if level is None else gzip.compress(body, compresslevel=level, mtime=0)


class _Handler(BaseHTTPRequestHandler):
    payloads: dict[str, bytes] = {}

    def do_GET(self):  # http.server's naming
        name, _, level = self.path.strip("/").partition("/")
        body = self.payloads[name]
        compressed = level != "identity"
        data = encode(body, int(level)) if compressed else body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def loopback_latency_ms(port: int, name: str, level: str) -> float:
    timings = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        client.get(f"/{name}/{level}").read()  # warm the connection
        for _ in range(REPEATS):
            start = time.perf_counter()
            response = client.get(f"/{name}/{level}", headers={"Accept-Encoding": "gzip, deflate"})
            response.read()  # httpx decompresses: the client's cost is in the latency
            timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()

    photos = [photo_like_png(i) for i in range(4)]
    flats = [sandbox_png(i) for i in range(4)]
    payloads: dict[str, bytes] = {
        "photo-1": openai_body(photos[:1]),
        "photo-4": openai_body(photos),
        "sandbox-1": openai_body(flats[:1]),
        "sandbox-4": openai_body(flats),
        "list-100": list_body(),
    }
    _Handler.payloads = payloads
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    results = []
    for name, body in payloads.items():
        for label, level in (("identity", None), ("gzip-1", 1), ("gzip-6", 6)):
            compress_ms, data = cpu_ms(encode, body, level)
            decompress_ms = cpu_ms(zlib.decompress, data, 31)[0] if level is not None else 0.0
            saved = len(body) - len(data)
            row = {
                "payload": name,
                "encoding": label,
                "bytes": len(data),
                "saved_pct": round(100 * saved / len(body), 1),
                "server_cpu_ms": round(compress_ms, 2),
                "client_cpu_ms": round(decompress_ms, 2),
                "loopback_latency_ms": round(
                    loopback_latency_ms(port, name, "identity" if level is None else str(level)), 2
                ),
                "saved_ms_at_100mbit": round(saved * 8 / 100e6 * 1000, 1),
                "saved_ms_at_1gbit": round(saved * 8 / 1e9 * 1000, 1),
            }
            results.append(row)
    server.shutdown()

    header = f"{'payload':<10} {'encoding':<9} {'bytes':>10} {'saved':>6} {'srv cpu':>8} {'cli cpu':>8} "
    header += f"{'loopback':>9} {'@100Mb':>7} {'@1Gb':>6}"
    print(header)
    for r in results:
        print(
            f"{r['payload']:<10} {r['encoding']:<9} {r['bytes']:>10,} {r['saved_pct']:>5}% "
            f"{r['server_cpu_ms']:>6.1f}ms {r['client_cpu_ms']:>6.1f}ms {r['loopback_latency_ms']:>7.1f}ms "
            f"{r['saved_ms_at_100mbit']:>5.0f}ms {r['saved_ms_at_1gbit']:>4.0f}ms"
        )
    out = ROOT / "var" / "bench" / f"compression-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeats": REPEATS, "results": results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
