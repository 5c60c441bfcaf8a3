"""`make bench`: Imagegate's own cost on the production profile, against the fake upstream, in one run.

Starts the fake Google upstream, then the app as production runs it (gunicorn web + django-q2
qcluster; PostgreSQL + Redis when reachable on 127.0.0.1, else SQLite), and measures, for the
native path (`POST /v1/generations?wait=60`, URLs) and the OpenAI path (`POST
/v1/images/generations`, `b64_json`):

1. latency added at 1 client (sequential requests, upstream answering at once): p50/p99 over the
   upstream's own answer measured straight against the fake, and CPU per request; n=4 as well;
2. with the upstream at 1,500 ms: the upstream alone at 128 clients (what it allows), then each
   path at 128 clients: images/s, errors, end-to-end latency, CPU per delivered image;
3. CPU summed over every process that does the work, from /proc: the gunicorn tree, the qcluster
   tree, the PostgreSQL backends of the bench database plus the server's background writers, and
   redis-server (the last two are shared with anything else on the machine, so they err high);
   the fake upstream separately (it is the baseline, not us);
4. peak memory of our processes (RSS summed, and PSS, which counts shared pages once), and PSS at
   the start and the end of each load phase (growth);
5. jobs not finished after the run (lost).

Figures are printed and written to var/bench/<timestamp>/result.json. Nothing here asserts:
benchmarks measure, tests check behaviour. Everything listens on 127.0.0.1 only. Shorter runs:
`BENCH_ARGS="--one-client-requests 20 --throughput-seconds 15"`; `--py-spy` records flame data of
web and worker under load into the run's folder (needs `pip install py-spy`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
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
                # One organization with 128 clients that all wait for their images, by design:
                # the per-process/per-organization caps on parked waits would answer 202/429.
                "WAIT_MAX_PARKED_PER_PROCESS": "1000",
                "WAIT_MAX_PARKED_PER_ORGANIZATION": "1000",
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
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode() + body)
        try:
            status_line = await reader.readuntil(b"\r\n")
            raw_headers = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer = None
            raise
        length = 0
        for line in raw_headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await reader.readexactly(length)
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


# --- the two request paths and the services' CPU ----------------------------------------------
NATIVE = {
    "path": "/v1/generations?wait=60",
    "body": lambda prompt, n: {"prompt": prompt, "count": n},
    "ok": b'"status":"succeeded"',
}
OPENAI = {
    "path": "/v1/images/generations",
    "body": lambda prompt, n: {"prompt": prompt, "n": n},
    "ok": b'"b64_json"',
}
PATHS = {"native": NATIVE, "openai": OPENAI}


async def post_json(conn: Connection, path: str, payload: dict, key: str) -> tuple[int, bytes]:
    if path.startswith("/v1beta/"):  # straight to the fake upstream
        headers = {"x-goog-api-key": "bench-upstream-key", "Content-Type": "application/json"}
    else:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return await conn.post(path, json.dumps(payload).encode(), headers)


async def sequential(port: int, spec: dict, key: str, requests: int, n: int = 1) -> list:
    """One client, one request after the other: the latency one request sees, nothing queued."""
    conn = Connection("127.0.0.1", port)
    results: list[tuple[float, bool, int | str]] = []
    for i in range(requests):
        started = time.perf_counter()
        try:
            status, payload = await post_json(conn, spec["path"], spec["body"](f"one client {i}", n), key)
            results.append((time.perf_counter() - started, status == 200 and spec["ok"] in payload, status))
        except (OSError, asyncio.IncompleteReadError) as exc:
            results.append((time.perf_counter() - started, False, type(exc).__name__))
    return results


async def closed(port: int, spec: dict, key: str, clients: int, duration: float) -> tuple[list, float]:
    results: list = []
    stop_at = time.perf_counter() + duration

    async def loop(worker: int):
        conn, i = Connection("127.0.0.1", port), 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                body = spec["body"](f"load {worker}-{i}", 1)
                status, payload = await post_json(conn, spec["path"], body, key)
                ok = status == 200 and spec["ok"] in payload
                results.append((time.perf_counter() - started, ok, status))
            except (OSError, asyncio.IncompleteReadError) as exc:
                results.append((time.perf_counter() - started, False, type(exc).__name__))
                conn = Connection("127.0.0.1", port)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(clients)))
    return results, time.perf_counter() - started


UPSTREAM_BODY = {
    "contents": [{"role": "user", "parts": [{"text": "baseline"}]}],
    "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "1:1"}},
}
UPSTREAM: dict = {
    "path": "/v1beta/models/gemini-3.1-flash-image:generateContent",
    "body": lambda prompt, n: UPSTREAM_BODY,
    "ok": b'"inlineData"',
}


def set_fake_latency(port: int, ms: float) -> None:
    async def go():
        status, _ = await Connection("127.0.0.1", port).post(
            "/_fake/config", json.dumps({"latency_ms": ms}).encode(), {"Content-Type": "application/json"}
        )
        if status != 200:
            raise SystemExit(f"fake upstream refused latency {ms}: HTTP {status}")

    asyncio.run(go())


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class ServiceCpu:
    """CPU of PostgreSQL and Redis spent for us. PostgreSQL: the backends connected to the bench
    database (sampled while it runs: pooled connections come and go) plus the server's own
    background processes (WAL writer, checkpointer, ...). Redis: the whole redis-server. Both are
    shared with whatever else uses them on this machine, so these figures can only err high."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.enabled = stack.args.profile == "production"
        self.backend_cpu: dict[int, float] = {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        if self.enabled:
            import psycopg

            self.conn = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
            self.my_backend = self.conn.info.backend_pid
            self.thread.start()

    def _backends(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [BENCH_DB, self.my_backend]
        ).fetchall()
        return [row[0] for row in rows]

    def _sample(self) -> None:
        while not self.stop_flag.wait(0.25):
            try:
                for pid in self._backends():
                    cpu = cpu_seconds([pid])
                    if cpu:
                        self.backend_cpu[pid] = cpu
            except Exception:  # noqa: BLE001, S112 - a sample lost is a sample lost
                continue

    def snapshot(self) -> dict[str, float]:
        if not self.enabled:
            return {"postgres": 0.0, "redis": 0.0}
        for pid in self._backends():
            cpu = cpu_seconds([pid])
            if cpu:
                self.backend_cpu[pid] = cpu
        postgres_aux = [pid for pid in _pids_named("postgres") if pid not in self.backend_cpu]
        # Auxiliary processes only: other databases' backends are not ours.
        aux = [pid for pid in postgres_aux if _is_aux_postgres(pid)]
        return {
            "postgres": sum(self.backend_cpu.values()) + cpu_seconds(aux),
            "redis": cpu_seconds([pid for pid in _pids_named("redis-server") if _listens_6379(pid)]),
        }

    def close(self) -> None:
        self.stop_flag.set()
        if self.enabled:
            self.thread.join(1)
            self.conn.close()


def _listens_6379(pid: int) -> bool:
    """The shared Redis, not one a test started on another port."""
    try:
        return ":6379" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _is_aux_postgres(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False
    return any(word in cmdline for word in ("checkpointer", "background writer", "walwriter", "autovacuum"))


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size: shared pages (gunicorn's forked workers) counted once in total."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class Meter:
    """CPU of every process that does the work, by group, between two points in time."""

    def __init__(self, stack: Stack, services: ServiceCpu):
        self.stack, self.services = stack, services

    def read(self) -> dict[str, float]:
        procs = self.stack.procs
        values = {name: cpu_seconds(process_tree([procs[name].pid])) for name in ("web", "worker")}
        values.update(self.services.snapshot())
        values["fake_upstream"] = cpu_seconds(process_tree([procs["fake_upstream"].pid]))
        return values

    @staticmethod
    def per_image(before: dict, after: dict, images: int) -> dict[str, float]:
        out = {name: round((after[name] - before[name]) * 1000 / max(1, images), 2) for name in after}
        out["total_ours"] = round(sum(v for k, v in out.items() if k != "fake_upstream"), 2)
        return out


def one_client_phase(stack: Stack, meter: Meter, spec: dict, key: str, requests: int, baseline: float, n=1):
    cpu0 = meter.read()
    results = asyncio.run(sequential(stack.web_port, spec, key, requests, n))
    cpu1 = meter.read()
    ok = [t * 1000 for t, good, _ in results if good]
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "images_per_request": n,
        "added_ms_p50": round(pct(ok, 0.5) - baseline, 1),
        "added_ms_p99": round(pct(ok, 0.99) - baseline, 1),
        "cpu_ms_per_request": Meter.per_image(cpu0, cpu1, len(ok)),
        "errors": _errors(results),
    }


def load_phase(stack: Stack, meter: Meter, sampler, spec: dict, key: str, clients: int, seconds: float):
    sampler.reset()
    cpu0 = meter.read()
    results, elapsed = asyncio.run(closed(stack.web_port, spec, key, clients, seconds))
    cpu1 = meter.read()
    ok = [t * 1000 for t, good, _ in results if good]
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(results),
        "succeeded": len(ok),
        "images_per_s": round(len(ok) / elapsed, 1),
        "latency_ms_p50": round(pct(ok, 0.5), 1),
        "latency_ms_p99": round(pct(ok, 0.99), 1),
        "cpu_ms_per_image": Meter.per_image(cpu0, cpu1, len(ok)),
        "peak_rss_mb": round(sampler.peak / 2**20, 1),
        "peak_pss_mb": round(sampler.peak_pss / 2**20, 1),
        "pss_mb_over_phase": sampler.quartiles_mb(),
        "pss_mb_web_worker_first_last": sampler.first_last_by_root_mb(),
        "errors": _errors(results),
    }


def _errors(results: list) -> dict:
    errors: dict = {}
    for _, ok, status in results:
        if not ok:
            errors[str(status)] = errors.get(str(status), 0) + 1
    return errors


class PhaseSampler(MemorySampler):
    """Peak RSS (sum, counts shared pages once per process) and PSS (shared pages split) of our
    processes, plus the PSS at the start and the end of a phase, to see growth."""

    def __init__(self, roots: list[int]):
        super().__init__(roots)
        self.reset()

    def reset(self) -> None:
        self.peak = self.peak_pss = self.first_pss = self.last_pss = 0
        self.series: list[int] = []
        self.series_by_root: list[list[int]] = []

    def quartiles_mb(self) -> list[float]:
        """PSS at 0, 25, 50, 75 and 100% of the phase: flat means no growth."""
        if not self.series:
            return []
        last = len(self.series) - 1
        return [round(self.series[round(last * q)] / 2**20, 1) for q in (0, 0.25, 0.5, 0.75, 1)]

    def first_last_by_root_mb(self) -> list[list[float]]:
        """[[web first, web last], [worker first, worker last]] PSS in MB."""
        if not self.series_by_root:
            return []
        first, last = self.series_by_root[0], self.series_by_root[-1]
        return [[round(a / 2**20, 1), round(b / 2**20, 1)] for a, b in zip(first, last, strict=True)]

    def run(self):
        while not self.stop_flag.wait(1.0):
            pids = process_tree(self.roots)
            self.peak = max(self.peak, rss_bytes(pids))
            self.last_pss = pss_bytes(pids)
            self.series.append(self.last_pss)
            self.series_by_root.append([pss_bytes(process_tree([root])) for root in self.roots])
            self.first_pss = self.first_pss or self.last_pss
            self.peak_pss = max(self.peak_pss, self.last_pss)


def upstream_load(port: int, clients: int, seconds: float) -> tuple[list, float]:
    async def go():
        results: list = []
        stop_at = time.perf_counter() + seconds

        async def loop():
            conn = Connection("127.0.0.1", port)
            headers = {"x-goog-api-key": "bench-upstream-key", "Content-Type": "application/json"}
            body = json.dumps(UPSTREAM_BODY).encode()
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    status, _payload = await conn.post(UPSTREAM["path"], body, headers)
                    results.append((time.perf_counter() - started, status == 200, status))
                except (OSError, asyncio.IncompleteReadError) as exc:
                    results.append((time.perf_counter() - started, False, type(exc).__name__))
                    conn = Connection("127.0.0.1", port)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return results, time.perf_counter() - started

    return asyncio.run(go())


def main() -> None:
    parser = stack_arguments(__doc__, rate=10, web_threads=96)
    parser.add_argument("--paths", default="native,openai", help="comma-separated: native, openai")
    parser.add_argument("--one-client-requests", type=int, default=60)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--idle-seconds", type=float, default=5, help="CPU of web and worker doing nothing")
    parser.add_argument("--throughput-seconds", type=float, default=40)
    parser.add_argument("--n4-requests", type=int, default=20, help="n=4 requests at 1 client (0: skip)")
    parser.add_argument("--py-spy", action="store_true", help="record web and worker with py-spy under load")
    parser.add_argument("--anchor", action="store_true", help="LiteLLM beside us (anchor.py)")
    args = parse_stack_arguments(parser)
    if args.anchor:  # `make bench-anchor`: LiteLLM in its own venv (tests/bench/anchor.py)
        sys.path.insert(0, str(ROOT))
        from tests.bench import anchor

        if not anchor.installed():
            raise SystemExit("no LiteLLM venv: `python tests/bench/anchor.py install` (or make bench-anchor)")
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]

    workdir = ROOT / "var" / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    stack = Stack(args, workdir)
    print(f"profile: {args.profile}; logs and results in {workdir}", flush=True)
    key = stack.prepare()
    result: dict = {"profile": args.profile, "upstream_latency_ms": args.upstream_ms, "paths": {}}
    services = sampler = None
    try:
        stack.up()
        services = ServiceCpu(stack)
        meter = Meter(stack, services)
        sampler = PhaseSampler([stack.procs["web"].pid, stack.procs["worker"].pid])
        sampler.start()
        # 1. One client, upstream answering at once: what we add to one request.
        set_fake_latency(stack.fake_port, 0)
        for name in paths:  # warm-up: connections, caches, threads, both paths
            asyncio.run(sequential(stack.web_port, PATHS[name], key, 5))
        base = asyncio.run(sequential(stack.fake_port, UPSTREAM, key, args.one_client_requests))
        baseline_ms = pct([t * 1000 for t, ok, _ in base if ok], 0.5)
        result["upstream_only"] = {"one_client_p50_ms": round(baseline_ms, 2)}
        idle0 = meter.read()
        time.sleep(args.idle_seconds)
        idle1 = meter.read()
        result["idle_cpu_ms_per_s"] = {
            name: round((idle1[name] - idle0[name]) * 1000 / args.idle_seconds, 1)
            for name in ("web", "worker")
        }
        print(f"  idle CPU       : {result['idle_cpu_ms_per_s']} ms/s", flush=True)
        for name in paths:
            spy = PySpy(stack, workdir, f"{name}-1client", 10) if args.py_spy else None
            phase = one_client_phase(stack, meter, PATHS[name], key, args.one_client_requests, baseline_ms)
            if spy:
                spy.wait()
            result["paths"][name] = {"one_client": phase}
            print(f"  {name:6} 1 client : {phase}", flush=True)
            if args.n4_requests:
                n4 = one_client_phase(stack, meter, PATHS[name], key, args.n4_requests, baseline_ms, n=4)
                result["paths"][name]["one_client_n4"] = n4
                print(f"  {name:6} n=4      : {n4}", flush=True)
        # 2. 128 clients, upstream at 1.5 s: the upstream alone, then each path.
        set_fake_latency(stack.fake_port, args.upstream_ms)
        cpu0 = meter.read()
        up, up_elapsed = upstream_load(stack.fake_port, args.clients, min(20.0, args.throughput_seconds))
        cpu1 = meter.read()
        up_ok = sum(1 for _, ok, _ in up if ok)
        result["upstream_only"].update(
            {
                "errors": _errors(up),
                "images_per_s": round(up_ok / up_elapsed, 1),
                "cpu_ms_per_image": round(
                    (cpu1["fake_upstream"] - cpu0["fake_upstream"]) * 1000 / max(1, up_ok), 2
                ),
            }
        )
        print(f"  upstream alone : {result['upstream_only']}", flush=True)
        for name in paths:
            spy = PySpy(stack, workdir, f"{name}-load", args.throughput_seconds) if args.py_spy else None
            phase = load_phase(stack, meter, sampler, PATHS[name], key, args.clients, args.throughput_seconds)
            if spy:
                spy.wait()
            result["paths"][name]["load"] = phase
            print(f"  {name:6} load     : {phase}", flush=True)
        time.sleep(2)
        counts = job_counts(stack)
        if args.anchor:  # LiteLLM after ours, same fake (never idling beside ours)
            result["litellm"] = anchor.measure(stack, args, result)
    finally:
        if sampler:
            sampler.stop_flag.set()
        if services:
            services.close()
        stack.down()

    result["jobs_by_status"] = counts
    result["jobs_not_finished"] = sum(v for k, v in counts.items() if k in ("queued", "running"))
    result["config"] = {
        "web_processes": args.web_processes,
        "web_threads": args.web_threads,
        "workers": args.workers,
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    print("\n" + "\n".join(report_lines(result, args)))
    if args.anchor:
        print("\n" + "\n".join(anchor.report_lines(result, args)))


class PySpy:
    """py-spy flame data (raw folded stacks) of every gunicorn and qcluster process, one file per
    process, for `seconds`; stopped with SIGINT (py-spy then writes what it has) if it overruns."""

    def __init__(self, stack: Stack, workdir: Path, label: str, seconds: float):
        spy = str(Path(PYTHON).parent / "py-spy")
        self.procs = []
        for group in ("web", "worker"):
            for pid in process_tree([stack.procs[group].pid]):
                out = workdir / f"py-spy-{label}-{group}-{pid}.txt"
                argv = [spy, "record", "--pid", str(pid), "--nonblocking", "--duration", str(int(seconds))]
                argv += ["--rate", "50", "--format", "raw", "--output", str(out)]
                self.procs.append(
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )

    def wait(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def report_lines(result: dict, args) -> list[str]:
    up = result["upstream_only"]
    lines = [
        f"Imagegate benchmark ({args.profile} profile; fake upstream; {args.clients} clients at"
        f" {args.upstream_ms:.0f} ms per image; CPU = web + worker + PostgreSQL + Redis)",
        f"  upstream alone        : 1 client p50 {up['one_client_p50_ms']} ms (0 ms upstream, 2 MB body);"
        f" {up['images_per_s']} images/s at {args.clients} clients,"
        f" the fake's CPU {up['cpu_ms_per_image']} ms/image",
    ]
    idle = result["idle_cpu_ms_per_s"]
    lines.append(f"  idle CPU              : web {idle['web']} ms/s, worker {idle['worker']} ms/s")
    for name, data in result["paths"].items():
        one, load = data["one_client"], data["load"]
        cpu = load["cpu_ms_per_image"]
        lines += [
            f"  [{name}]",
            f"    added @ 1 client    : p50 {one['added_ms_p50']} ms, p99 {one['added_ms_p99']} ms"
            f" ({one['succeeded']}/{one['requests']} ok),"
            f" CPU {one['cpu_ms_per_request']['total_ours']} ms/request",
        ]
        if "one_client_n4" in data:
            n4 = data["one_client_n4"]
            n1_cpu = one["cpu_ms_per_request"]["total_ours"]
            ratio = n4["cpu_ms_per_request"]["total_ours"] / max(0.01, n1_cpu)
            lines.append(
                f"    n=4 @ 1 client      : added p50 {n4['added_ms_p50']} ms,"
                f" CPU {n4['cpu_ms_per_request']['total_ours']} ms/request ({ratio:.2f}x n=1)"
            )
        lines += [
            f"    throughput          : {load['images_per_s']} images/s"
            f" ({load['succeeded']}/{load['requests']} ok, errors {load['errors'] or 'none'}),"
            f" latency p50 {load['latency_ms_p50']} ms p99 {load['latency_ms_p99']} ms",
            f"    CPU per image       : {cpu['total_ours']} ms (web {cpu['web']}, worker {cpu['worker']},"
            f" PostgreSQL {cpu['postgres']}, Redis {cpu['redis']}; fake upstream {cpu['fake_upstream']})",
            f"    memory              : peak RSS {load['peak_rss_mb']} MB, peak PSS {load['peak_pss_mb']} MB,"
            f" PSS at 0/25/50/75/100% of the phase {load['pss_mb_over_phase']} MB",
        ]
    lines.append(
        f"  jobs by status        : {result['jobs_by_status']} (not finished: {result['jobs_not_finished']})"
    )
    return lines


if __name__ == "__main__":
    main()
