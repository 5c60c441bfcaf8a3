"""`make bench` (edits): what one 1 MB input image adds to a generation.

Same stack as tests/bench/run.py (fake Google upstream, gunicorn, qcluster; PostgreSQL + Redis
when reachable). At an open-loop rate it measures `POST /v1/generations?wait=60` with one image
out, first as a plain generation, then as an edit carrying one ~1 MB PNG (base64 in the JSON
body: the web decodes, sniffs, re-encodes it without metadata and stores it; the worker reads it
back and sends it upstream as an inlineData part). Each request's PNG differs, so no
deduplication flatters the figure. Reported: latency p50/p95 of each and the difference, and CPU
per delivered image of our processes (web + worker) for each and the difference. It measures;
it asserts nothing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.run import (
    ROOT,
    Connection,
    Stack,
    cpu_seconds,
    parse_stack_arguments,
    pct,
    process_tree,
    stack_arguments,
)


def input_png(seed: int, size: int = 590) -> bytes:
    """A ~1 MB PNG of noise (incompressible, like a photo's worth of bytes)."""
    from PIL import Image

    noise = random.Random(seed).randbytes(size * size * 3)
    image = Image.frombytes("RGB", (size, size), noise)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


async def fire(port: int, key: str, bodies: list[bytes], rate: float) -> list[tuple[float, bool, object]]:
    results: list = []
    idle: list[Connection] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def one(body: bytes):
        reused = bool(idle)
        conn = idle.pop() if idle else Connection("127.0.0.1", port)
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                status, payload = await conn.post("/v1/generations?wait=60", body, headers)
                ok = status == 200 and b'"succeeded"' in payload
                results.append((time.perf_counter() - started, ok, status))
                break
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn = Connection("127.0.0.1", port)
                # A kept-alive connection the server closed while idle: once more on a new one.
                if not (reused and attempt == 1):
                    results.append((time.perf_counter() - started, False, type(exc).__name__))
                    break
                started = time.perf_counter()
        idle.append(conn)

    tasks, start = [], time.perf_counter()
    for i, body in enumerate(bodies):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body)))
    await asyncio.gather(*tasks)
    return results


def phase(stack: Stack, key: str, bodies: list[bytes], rate: float) -> dict:
    ours = stack.ours()
    split0 = {name: cpu_seconds(process_tree([stack.procs[name].pid])) for name in ("web", "worker")}
    cpu0 = cpu_seconds(ours)
    results = asyncio.run(fire(stack.web_port, key, bodies, rate))
    cpu1 = cpu_seconds(stack.ours())
    split1 = {name: cpu_seconds(process_tree([stack.procs[name].pid])) for name in ("web", "worker")}
    ok = [t * 1000 for t, good, _ in results if good]
    errors: dict[str, int] = {}
    for _, good, status in results:
        if not good:
            errors[str(status)] = errors.get(str(status), 0) + 1
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "errors": errors,
        "p50_ms": round(pct(ok, 0.5), 1),
        "p95_ms": round(pct(ok, 0.95), 1),
        "cpu_ms_per_image": round((cpu1 - cpu0) * 1000 / max(1, len(ok)), 2),
        "cpu_ms_per_image_by_process": {
            name: round((split1[name] - split0[name]) * 1000 / max(1, len(ok)), 2) for name in split1
        },
    }


def main() -> None:
    parser = stack_arguments(__doc__, rate=4, web_threads=32)
    parser.add_argument("--seconds", type=float, default=20)
    args = parse_stack_arguments(parser)

    workdir = ROOT / "var" / "bench" / ("edits-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    workdir.mkdir(parents=True)
    stack = Stack(args, workdir)
    print(f"profile: {args.profile}; logs and results in {workdir}")
    key = stack.prepare()
    count = int(args.rate * args.seconds)
    plain = [json.dumps({"prompt": f"plain {i}", "count": 1}).encode() for i in range(count)]
    pngs = [input_png(i) for i in range(count)]
    edits = [
        json.dumps({"prompt": f"edit {i}", "count": 1, "images": [base64.b64encode(png).decode()]}).encode()
        for i, png in enumerate(pngs)
    ]
    try:
        stack.up()
        asyncio.run(fire(stack.web_port, key, plain[:4] + edits[:4], 4))  # warm-up
        plain_result = phase(stack, key, plain, args.rate)
        edit_result = phase(stack, key, edits, args.rate)
    finally:
        stack.down()
    result = {
        "profile": args.profile,
        "upstream_latency_ms": args.upstream_ms,
        "rate_per_s": args.rate,
        "input_png_bytes_mean": round(sum(map(len, pngs)) / len(pngs)),
        "plain": plain_result,
        "edit": edit_result,
        "added_by_input_ms_p50": round(edit_result["p50_ms"] - plain_result["p50_ms"], 1),
        "added_by_input_ms_p95": round(edit_result["p95_ms"] - plain_result["p95_ms"], 1),
        "added_cpu_ms_per_image": round(
            edit_result["cpu_ms_per_image"] - plain_result["cpu_ms_per_image"], 2
        ),
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nEdits ({args.profile} profile, upstream {args.upstream_ms:.0f} ms, {args.rate:g} req/s,"
        f" one {result['input_png_bytes_mean'] / 2**20:.2f} MB PNG in):\n"
        f"  plain generation : p50 {plain_result['p50_ms']} ms, p95 {plain_result['p95_ms']} ms,"
        f" CPU {plain_result['cpu_ms_per_image']} ms/image {plain_result['cpu_ms_per_image_by_process']}"
        f" ({plain_result['succeeded']}/{plain_result['requests']} ok)\n"
        f"  edit, 1 input    : p50 {edit_result['p50_ms']} ms, p95 {edit_result['p95_ms']} ms,"
        f" CPU {edit_result['cpu_ms_per_image']} ms/image {edit_result['cpu_ms_per_image_by_process']}"
        f" ({edit_result['succeeded']}/{edit_result['requests']} ok)\n"
        f"  added by the input: p50 +{result['added_by_input_ms_p50']} ms,"
        f" p95 +{result['added_by_input_ms_p95']} ms,"
        f" CPU +{result['added_cpu_ms_per_image']} ms per image"
    )


if __name__ == "__main__":
    main()
