"""`make bench` (second part): does a big batch slow down the same tenant's interactive requests?

Same stack as tests/bench/run.py (fake upstream, gunicorn, qcluster; PostgreSQL + Redis when
reachable). The tenant has the Pro plan's 32 concurrent jobs, so a batch may hold 16
(BATCH_CONCURRENCY_SHARE=0.5). Measures `POST /v1/generations?wait=60` latency (p50, p95) at an
open-loop rate, first alone, then while a 1,000-item batch runs, and reports both with their ratio
plus the batch's progress. It measures; it asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.run import (
    ROOT,
    Stack,
    open_loop,
    parse_stack_arguments,
    pct,
    stack_arguments,
)


async def request(port: int, path: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    """One request on its own connection (GET without a body, else POST with JSON)."""
    data = json.dumps(body).encode() if body is not None else b""
    method = "GET" if body is None else "POST"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(data)}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + data)
    raw = await reader.read()
    writer.close()
    head_part, _, payload = raw.partition(b"\r\n\r\n")
    try:
        return int(head_part.split()[1]), json.loads(payload)
    except ValueError:
        return int(head_part.split()[1]), {}


def summary(results: list) -> dict:
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
    }


def main() -> None:
    parser = stack_arguments(__doc__, rate=4, web_threads=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parse_stack_arguments(parser)

    workdir = ROOT / "var" / "bench" / ("batch-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    workdir.mkdir(parents=True)
    stack = Stack(args, workdir)
    print(f"profile: {args.profile}; logs and results in {workdir}")
    key = stack.prepare()
    # The plan's real concurrency (run.py lifts it for throughput): the batch's share is what we test.
    stack.manage(
        "shell",
        "-c",
        "from tenants.models import Organization;"
        "Organization.objects.filter(name='Bench').update(max_concurrent_jobs_override=32)",
    )
    port, path = stack.web_port, "/v1/generations?wait=60"
    try:
        stack.up()
        asyncio.run(open_loop("127.0.0.1", port, path, key, 2, 2))  # warm-up
        alone = asyncio.run(open_loop("127.0.0.1", port, path, key, args.rate, args.seconds))

        items = [
            {"custom_id": f"bench-{i}", "body": {"prompt": f"batch bench {i}"}}
            for i in range(args.batch_size)
        ]
        status, batch = asyncio.run(request(port, "/v1/batches", key, {"requests": items}))
        if status != 201:
            raise SystemExit(f"batch refused: {status} {batch}")
        time.sleep(3)  # let the batch reach its share
        started = time.monotonic()
        with_batch = asyncio.run(open_loop("127.0.0.1", port, path, key, args.rate, args.seconds))
        elapsed = time.monotonic() - started
        _, progress = asyncio.run(request(port, f"/v1/batches/{batch['id']}", key))
        asyncio.run(request(port, f"/v1/batches/{batch['id']}/cancel", key, {}))
    finally:
        stack.down()

    a, b = summary(alone), summary(with_batch)
    counts = progress.get("counts", {})
    result = {
        "profile": args.profile,
        "upstream_latency_ms": args.upstream_ms,
        "interactive_rate_per_s": args.rate,
        "interactive_alone": a,
        "interactive_with_batch": b,
        "p95_ratio": round(b["p95_ms"] / a["p95_ms"], 2) if a["p95_ms"] else None,
        "batch_size": args.batch_size,
        "batch_counts_at_end": counts,
        "batch_items_per_s": round((counts.get("succeeded", 0) + counts.get("failed", 0)) / (elapsed + 3), 1),
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2))

    def line(label: str, phase: dict) -> str:
        return (
            f"  {label:<23}: p50 {phase['p50_ms']} ms, p95 {phase['p95_ms']} ms"
            f" ({phase['succeeded']}/{phase['requests']} ok; errors: {phase['errors'] or 'none'})"
        )

    print(
        f"\nBatch fairness ({args.profile}; upstream {args.upstream_ms:.0f} ms;"
        f" {args.rate:g} interactive req/s)\n"
        + line("interactive alone", a)
        + "\n"
        + line("interactive with batch", b)
        + f"\n  p95 ratio              : {result['p95_ratio']}x"
        + f"\n  batch progress         : {counts} ({result['batch_items_per_s']} items/s)"
    )


if __name__ == "__main__":
    main()
