"""`make bench`: Imagegate's own overhead on the production profile, against the fake upstream.

Starts the fake Google upstream (1,500 ms per image by default), then the app as production runs
it (gunicorn web + django-q2 qcluster; PostgreSQL + Redis when reachable on 127.0.0.1, else SQLite),
and measures, for `POST /v1/generations?wait=60` with one image:

1. latency added over the upstream's own (p50, p99) at an open-loop 10 requests/s;
2. sustained images/s with 128 concurrent clients, errors, and jobs not finished (lost);
3. CPU-seconds per delivered image summed over every process of ours (web + worker; not the
   fake upstream, not this load generator), from /proc;
4. peak resident memory of all our processes together.

Figures are printed and written to var/bench/<timestamp>/result.json. Nothing here asserts:
benchmarks measure, tests check behaviour. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Engineers sharing one PostgreSQL/Redis run benches side by side: each picks its own database and db number.
BENCH_DB = os.environ.get("BENCH_DB_NAME", "imagegate_bench")
BENCH_REDIS_DB = os.environ.get("BENCH_REDIS_DB", "10")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- process accounting (/proc) ---------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        kids = []
        for task in tasks:
            text = (task / "children").read_text().split()
            kids += [int(k) for k in text]
        return kids
    except OSError:
        return []


def process_tree(roots: list[int]) -> list[int]:
    seen, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack += _children(pid)
    return seen


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            continue
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError):
            continue
    return total


class MemorySampler(threading.Thread):
    def __init__(self, roots: list[int]):
        super().__init__(daemon=True)
        self.roots, self.peak, self.stop_flag = roots, 0, threading.Event()

    def run(self):
        while not self.stop_flag.wait(0.5):
            self.peak = max(self.peak, rss_bytes(process_tree(self.roots)))


# --- the stack ------------------------------------------------------------------------------
class Stack:
    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.web_port, self.fake_port = free_port(), free_port()
        self.env = self._env()

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
        env.update(
            {
                "DEBUG": "0",
                "SECRET_KEY": "bench-" + "x" * 60,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "SECURE_SSL_REDIRECT": "0",
                "SESSION_COOKIE_SECURE": "0",
                "CSRF_COOKIE_SECURE": "0",
                "SECURE_HSTS_SECONDS": "0",
                "IMAGEGATE_VAR_DIR": str(self.workdir / "var"),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.web_port}",
                "GEMINI_API_KEY": "bench-upstream-key",
                "GEMINI_API_BASE": f"http://127.0.0.1:{self.fake_port}",
                "REDIS_PREFIX": f"bench-{os.getpid()}",
                "Q_CLUSTER_NAME": f"bench-{os.getpid()}",
                "LOG_LEVEL": "WARNING",
                "WEB_ACCESS_LOG": "0",
                "WEB_CONCURRENCY": str(self.args.web_processes),
                "WEB_THREADS": str(self.args.web_threads),
                "Q_WORKERS": str(self.args.workers),
            }
        )
        if self.args.profile == "production":
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"
            env["REDIS_URL"] = f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}"
        return env

    def manage(self, *argv: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def prepare(self) -> str:
        if self.args.profile == "production":
            import psycopg
            import redis

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {BENCH_DB}")
            redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        self.manage("migrate", "--noinput")
        self.manage("createcachetable")
        out = self.manage(
            "createtenant",
            "--name",
            "Bench",
            "--owner-email",
            "bench@example.com",
            "--plan",
            "pro",
            "--key-mode",
            "live",
        )
        key = re.search(r"(ig_live_\w+)", out).group(1)
        self.manage(
            "shell",
            "-c",
            "from tenants.models import Organization; from generation.models import ProviderAccount;"
            "Organization.objects.filter(name='Bench').update(requests_per_minute_override=1000000,"
            " max_concurrent_jobs_override=100000, monthly_images_override=100000000);"
            "ProviderAccount.objects.filter(name='gemini-api').update(max_concurrency=1024)",
        )
        return key

    def up(self) -> None:
        self.start(
            "fake_upstream",
            [
                PYTHON,
                "-m",
                "fakes.upstream",
                "--port",
                str(self.fake_port),
                "--latency-ms",
                str(self.args.upstream_ms),
                "--api-key",
                "bench-upstream-key",
            ],
        )
        self.start(
            "web",
            [
                str(Path(PYTHON).parent / "gunicorn"),
                "config.wsgi",
                "--config",
                "platform/gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.web_port}",
            ],
        )
        self.start("worker", [PYTHON, "manage.py", "qcluster"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if reachable("127.0.0.1", self.web_port) and reachable("127.0.0.1", self.fake_port):
                return
            time.sleep(0.2)
        raise SystemExit("the stack did not come up; see the logs in " + str(self.workdir))

    def ours(self) -> list[int]:
        return process_tree([self.procs["web"].pid, self.procs["worker"].pid])

    def down(self) -> None:
        for name in ("web", "worker", "fake_upstream"):
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# --- load -----------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client on raw asyncio streams: the load generator shares this
# 2-core machine with what it measures, so it must cost next to nothing (httpx's connection pool
# alone spends several ms of CPU per request at 128 connections).
class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            raw_headers = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer = None
            raise
        length = 0
        for line in raw_headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload


async def one_request(conn: Connection, path: str, key: str, results: list, prompt: str):
    started = time.perf_counter()
    body = json.dumps({"prompt": prompt, "count": 1}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        status, payload = await conn.post(path, body, headers)
        ok = status == 200 and b'"status":"succeeded"' in payload
        results.append((time.perf_counter() - started, ok, status))
    except (OSError, asyncio.IncompleteReadError) as exc:
        results.append((time.perf_counter() - started, False, type(exc).__name__))


async def open_loop(host: str, port: int, path: str, key: str, rate: float, duration: float) -> list:
    results: list = []
    idle: list[Connection] = []

    async def fire(i: int):
        conn = idle.pop() if idle else Connection(host, port)
        await one_request(conn, path, key, results, f"latency probe {i}")
        idle.append(conn)

    tasks, start = [], time.perf_counter()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(i)))
    await asyncio.gather(*tasks)
    return results


async def closed_loop(
    host: str, port: int, path: str, key: str, clients: int, duration: float
) -> tuple[list, float]:
    results: list = []
    stop_at = time.perf_counter() + duration

    async def loop(worker: int):
        conn, i = Connection(host, port), 0
        while time.perf_counter() < stop_at:
            await one_request(conn, path, key, results, f"throughput {worker}-{i}")
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(clients)))
    return results, time.perf_counter() - started


async def upstream_baseline(port: int, samples: int = 20) -> list[float]:
    """The upstream's own latency as a client sees it (sleep + sending ~2 MB of JSON), measured
    straight against the fake, so "added latency" counts only what Imagegate adds."""
    conn, times = Connection("127.0.0.1", port), []
    body = json.dumps(
        {
            "contents": [{"role": "user", "parts": [{"text": "baseline"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "1:1"}},
        }
    ).encode()
    headers = {"x-goog-api-key": "bench-upstream-key", "Content-Type": "application/json"}
    for _ in range(samples):
        started = time.perf_counter()
        status, _ = await conn.post("/v1beta/models/gemini-3.1-flash-image:generateContent", body, headers)
        if status == 200:
            times.append(time.perf_counter() - started)
    return times


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def job_counts(stack: Stack) -> dict:
    out = stack.manage(
        "shell",
        "-c",
        "import json; from django.db.models import Count; from generation.models import Job;"
        "print(json.dumps(dict(Job.objects.values_list('status').annotate(n=Count('id')))))",
    )
    return json.loads(out.strip().splitlines()[-1])


def stack_arguments(doc: str, *, rate: float, web_threads: int) -> argparse.ArgumentParser:
    """The options every benchmark of the running stack takes (profile, upstream, process counts)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["auto", "production", "sqlite"], default="auto")
    parser.add_argument("--upstream-ms", type=float, default=1500)
    parser.add_argument("--rate", type=float, default=rate)
    parser.add_argument("--web-processes", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=web_threads)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def parse_stack_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    if args.profile == "auto":
        args.profile = (
            "production" if reachable("127.0.0.1", 5432) and reachable("127.0.0.1", 6379) else "sqlite"
        )
    return args


def main() -> None:
    parser = stack_arguments(__doc__, rate=10, web_threads=96)
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--throughput-seconds", type=float, default=60)
    args = parse_stack_arguments(parser)

    workdir = ROOT / "var" / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    stack = Stack(args, workdir)
    print(f"profile: {args.profile}; logs and results in {workdir}")
    key = stack.prepare()
    host, port, path = "127.0.0.1", stack.web_port, "/v1/generations?wait=60"
    sampler = None
    try:
        stack.up()
        asyncio.run(open_loop(host, port, path, key, 4, 2))  # warm-up: connections, caches, threads
        baseline_ms = pct(asyncio.run(upstream_baseline(stack.fake_port)), 0.5) * 1000
        sampler = MemorySampler([stack.procs["web"].pid, stack.procs["worker"].pid])
        sampler.start()

        cpu0 = cpu_seconds(stack.ours())
        latency = asyncio.run(open_loop(host, port, path, key, args.rate, args.latency_seconds))
        cpu1 = cpu_seconds(stack.ours())
        ok_latency = [t for t, ok, _ in latency if ok]
        added = [(t * 1000) - baseline_ms for t in ok_latency]

        cpu2 = cpu_seconds(stack.ours())
        split0 = {name: cpu_seconds(process_tree([stack.procs[name].pid])) for name in stack.procs}
        throughput, elapsed = asyncio.run(
            closed_loop(host, port, path, key, args.clients, args.throughput_seconds)
        )
        cpu3 = cpu_seconds(stack.ours())
        split1 = {name: cpu_seconds(process_tree([stack.procs[name].pid])) for name in stack.procs}
        time.sleep(2)
        counts = job_counts(stack)
    finally:
        if sampler:
            sampler.stop_flag.set()
        stack.down()

    ok_throughput = sum(1 for _, ok, _ in throughput if ok)
    errors: dict = {}
    for _, ok, status in latency + throughput:
        if not ok:
            errors[str(status)] = errors.get(str(status), 0) + 1
    delivered = len(ok_latency) + ok_throughput
    result = {
        "profile": args.profile,
        "upstream_latency_ms": args.upstream_ms,
        "upstream_measured_p50_ms": round(baseline_ms, 1),
        "latency_phase": {
            "rate_per_s": args.rate,
            "requests": len(latency),
            "succeeded": len(ok_latency),
            "added_ms_p50": round(pct(added, 0.5), 1),
            "added_ms_p99": round(pct(added, 0.99), 1),
            "added_ms_mean": round(statistics.fmean(added), 1) if added else None,
            "cpu_ms_per_image": round((cpu1 - cpu0) * 1000 / max(1, len(ok_latency)), 2),
        },
        "throughput_phase": {
            "clients": args.clients,
            "seconds": round(elapsed, 1),
            "requests": len(throughput),
            "succeeded": ok_throughput,
            "images_per_s": round(ok_throughput / elapsed, 1),
            "cpu_ms_per_image": round((cpu3 - cpu2) * 1000 / max(1, ok_throughput), 2),
            "latency_ms_p50": round(pct([t * 1000 for t, ok, _ in throughput if ok], 0.5), 1),
            "latency_ms_p99": round(pct([t * 1000 for t, ok, _ in throughput if ok], 0.99), 1),
            "cpu_ms_per_image_by_process": {
                name: round((split1[name] - split0[name]) * 1000 / max(1, ok_throughput), 2)
                for name in split1
            },
        },
        "errors": errors,
        "jobs_by_status": counts,
        "jobs_not_finished": sum(v for k, v in counts.items() if k in ("queued", "running")),
        "images_delivered": delivered,
        "peak_memory_mb_all_processes": round((sampler.peak if sampler else 0) / 2**20, 1),
        "config": {
            "web_processes": args.web_processes,
            "web_threads": args.web_threads,
            "workers": args.workers,
        },
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    lp, tp = result["latency_phase"], result["throughput_phase"]
    lines = [
        f"Imagegate benchmark ({args.profile} profile; fake upstream at {args.upstream_ms:.0f} ms per image,"
        f" {baseline_ms:.1f} ms p50 measured from a client including the 2 MB transfer)",
        f"  added latency @ {args.rate:g} req/s : p50 {lp['added_ms_p50']} ms, p99 {lp['added_ms_p99']} ms"
        f" ({lp['succeeded']}/{lp['requests']} ok)",
        f"  sustained throughput           : {tp['images_per_s']} images/s with {args.clients} clients"
        f" ({tp['succeeded']}/{tp['requests']} ok)",
        f"  end-to-end under load          : p50 {tp['latency_ms_p50']} ms, p99 {tp['latency_ms_p99']} ms",
        f"  CPU per delivered image        : {tp['cpu_ms_per_image']} ms under load,"
        f" {lp['cpu_ms_per_image']} ms at {args.rate:g} req/s",
        f"  CPU per image by process tree  : {tp['cpu_ms_per_image_by_process']}",
        f"  peak memory, all our processes : {result['peak_memory_mb_all_processes']} MB",
        f"  errors                         : {errors or 'none'}",
        f"  jobs by status                 : {counts} (not finished: {result['jobs_not_finished']})",
    ]
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
