"""`make chaos`: fault injection on the production profile (README "Reliability", docs/reliability.md).

    python -m tests.chaos.run                    # every scenario, full load
    python -m tests.chaos.run --short            # CI: fewer jobs per scenario
    python -m tests.chaos.run --scenario redis   # one scenario (kill, redis, postgres, upstream)

Each scenario brings up its own stack (tests/chaos/stack.py: private PostgreSQL and redis-server on
free ports, the fake upstream, gunicorn and qcluster as platform/ runs them), submits a few hundred
jobs from two loaded tenants while a bystander tenant makes `?wait=30` calls, injects its fault,
waits for every job to end and prints: jobs submitted, succeeded, failed (by code), executed more
than once, images delivered, usage records, quota left, client errors by status, and the
bystander's p95 before and during the fault. It exits non-zero when an invariant breaks: a 500, a
job not finished, an image billed twice or delivered unbilled, a slot or reservation leaked, a
recorded image whose file is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psycopg

from tests.chaos.stack import ChaosStack

TERMINAL = ("succeeded", "failed", "canceled")
# --short (CI) keeps every scenario and invariant but shortens the faults that are only long for
# the sake of more samples (main() sets it).
SHORT = False


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


class Load:
    """Loaded tenants submit jobs (202, no wait) at a steady rate; a bystander waits for its own.
    A client retries 503 and connection errors after Retry-After with the same Idempotency-Key,
    as a well-behaved SDK does; every status seen is counted."""

    def __init__(self, stack: ChaosStack, *, jobs: int, rate: float, count: int = 1):
        self.stack, self.jobs, self.rate, self.count = stack, jobs, rate, count
        self.base = f"http://127.0.0.1:{stack.web_port}"
        self.statuses: Counter = Counter()
        self.retry_after_missing = 0
        self.submitted: list[str] = []
        self.bystander: list[tuple[float, float, int]] = []  # (start unix time, seconds, status)
        self.bystander_jobs: dict[str, tuple[float, float]] = {}  # job id -> (start, seconds)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.unavailable_at: list[float] = []

    def _post(self, client: httpx.Client, tenant: str, body: dict, wait: int = 0) -> httpx.Response | None:
        key = uuid.uuid4().hex
        headers = {"Authorization": f"Bearer {self.stack.keys[tenant]}", "Idempotency-Key": key}
        url = "/v1/generations" + (f"?wait={wait}" if wait else "")
        for _ in range(60):
            try:
                response = client.post(url, json=body, headers=headers, timeout=wait + 15)
            except httpx.HTTPError:
                with self.lock:
                    self.statuses["connection_error"] += 1
                time.sleep(0.5)
                continue
            with self.lock:
                self.statuses[response.status_code] += 1
                if response.status_code == 503:
                    self.unavailable_at.append(time.time())
                    if "Retry-After" not in response.headers:
                        self.retry_after_missing += 1
            if response.status_code in (429, 503):
                time.sleep(min(5.0, float(response.headers.get("Retry-After", "1"))))
                continue
            return response
        return None

    def _submitter(self, tenant: str, share: int, interval: float) -> None:
        with httpx.Client(base_url=self.base) as client:
            for i in range(share):
                started = time.monotonic()
                response = self._post(client, tenant, {"prompt": f"chaos {tenant} {i}", "count": self.count})
                if response is not None and response.status_code in (200, 202):
                    with self.lock:
                        self.submitted.append(response.json()["id"])
                time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def _bystander(self) -> None:
        with httpx.Client(base_url=self.base) as client:
            while not self.stop.is_set():
                started = time.time()
                response = self._post(client, "bystander", {"prompt": "bystander"}, wait=30)
                elapsed = time.time() - started
                status = response.status_code if response is not None else 0
                with self.lock:
                    self.bystander.append((started, elapsed, status))
                    if response is not None and status in (200, 202):
                        self.submitted.append(response.json()["id"])
                        self.bystander_jobs[response.json()["id"]] = (started, elapsed)
                time.sleep(0.2)

    def run(self) -> threading.Thread:
        share = self.jobs // 2
        interval = 2.0 / self.rate
        threads = [
            threading.Thread(target=self._submitter, args=(t, share, interval)) for t in ("alpha", "beta")
        ]
        bystander = threading.Thread(target=self._bystander, daemon=True)
        bystander.start()
        for thread in threads:
            thread.start()

        def join() -> None:
            for thread in threads:
                thread.join()

        joiner = threading.Thread(target=join)
        joiner.start()
        return joiner


def _db(stack: ChaosStack):
    return psycopg.connect(f"postgresql://postgres@127.0.0.1:{stack.pg_port}/imagegate", autocommit=True)


def wait_terminal(stack: ChaosStack, ids: list[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    open_jobs = len(ids)
    while time.monotonic() < deadline:
        try:
            with _db(stack) as conn:
                open_jobs = conn.execute(
                    "SELECT count(*) FROM generation_job "
                    "WHERE status NOT IN ('succeeded', 'failed', 'canceled')"
                ).fetchone()[0]
        except psycopg.Error:
            open_jobs = -1
        if open_jobs == 0:
            return 0
        time.sleep(1)
    return open_jobs


def report(name: str, stack: ChaosStack, load: Load, fault_window: tuple[float, float], notes: dict) -> dict:
    with _db(stack) as conn:
        states = dict(conn.execute("SELECT status, count(*) FROM generation_job GROUP BY status").fetchall())
        failed = dict(
            conn.execute(
                "SELECT error_code, count(*) FROM generation_job WHERE status='failed' GROUP BY error_code"
            ).fetchall()
        )
        more_than_once = conn.execute("SELECT count(*) FROM generation_job WHERE attempts > 1").fetchone()[0]
        delivered = conn.execute("SELECT coalesce(sum(images_delivered),0) FROM generation_job").fetchone()[0]
        usage = conn.execute("SELECT count(*) FROM billing_usagerecord").fetchone()[0]
        duplicate_usage = conn.execute(
            "SELECT count(*) FROM (SELECT image_public_id FROM billing_usagerecord "
            "GROUP BY image_public_id HAVING count(*) > 1) d"
        ).fetchone()[0]
        images = conn.execute("SELECT storage_path FROM generation_image WHERE storage_path <> ''").fetchall()
        in_flight = conn.execute(
            "SELECT coalesce(sum(jobs_in_flight),0) FROM tenants_organization"
        ).fetchone()[0]
        reserved = conn.execute(
            "SELECT coalesce(sum(images_reserved),0) FROM tenants_quotaperiod"
        ).fetchone()[0]
        quota = conn.execute(
            "SELECT o.name, 1000000 - coalesce(q.images_reserved, 0) FROM tenants_organization o "
            "LEFT JOIN tenants_quotaperiod q ON q.organization_id = o.id ORDER BY o.name"
        ).fetchall()
        held = conn.execute(
            "SELECT count(*) FROM generation_job WHERE status='canceled' AND lease_owner <> ''"
        ).fetchone()[0]
    media = Path(stack.env["IMAGEGATE_VAR_DIR"]) / "media"
    missing_files = sum(1 for (path,) in images if not (media / path).exists())
    start, end = fault_window
    # Baseline: calls that *ended* before the fault began (after warm-up). A call parked just before
    # it and answered during it belongs to the fault (counted so, it once made the redis and
    # postgres baselines read 10.0 s and 6.6 s). During: every call that overlapped the fault.
    baseline = [s for t, s, code in load.bystander[2:] if t + s < start and code == 200]
    during = [s for t, s, code in load.bystander if t + s >= start and t <= end + 30 and code == 200]
    unavailable_span = (max(load.unavailable_at) - min(load.unavailable_at)) if load.unavailable_at else 0.0
    result = {
        "scenario": name,
        "jobs_submitted": len(load.submitted),
        "jobs_by_state": states,
        "succeeded": states.get("succeeded", 0),
        "failed_by_code": failed,
        "executed_more_than_once": more_than_once,
        "images_delivered": int(delivered),
        "usage_records": usage,
        "usage_records_duplicated": duplicate_usage,
        "quota_left": {tenant: int(left) for tenant, left in quota},
        "client_statuses": {str(k): v for k, v in sorted(load.statuses.items(), key=str)},
        "503_without_retry_after": load.retry_after_missing,
        "503_span_seconds": round(unavailable_span, 1),
        "bystander_p95_baseline_s": round(pct(baseline, 0.95), 3),
        "bystander_p95_during_s": round(pct(during, 0.95), 3),
        "bystander_requests": len(load.bystander),
        "slots_still_held": int(in_flight),
        "canceled_jobs_still_holding": held,
        "recorded_images_without_file": missing_files,
        "bystander_time_p95_s": bystander_breakdown(stack, load, start, end),
        **notes,
    }
    total_reserved = int(reserved)
    problems = []
    if load.statuses.get(500):
        problems.append(f"{load.statuses[500]} responses were 500")
    if load.retry_after_missing:
        problems.append("a 503 without Retry-After")
    if sum(states.get(s, 0) for s in TERMINAL) != sum(states.values()):
        problems.append("jobs not finished")
    if int(delivered) != usage or duplicate_usage:
        problems.append("images delivered != usage records (billed twice or unbilled)")
    if in_flight:
        problems.append(f"{in_flight} concurrency slots leaked")
    if total_reserved != int(delivered):
        problems.append(f"quota reserved {total_reserved} != images delivered {delivered}")
    if missing_files:
        problems.append(f"{missing_files} recorded images lost their file")
    result["problems"] = problems
    result["targets_missed"] = []
    return result


def bystander_breakdown(stack: ChaosStack, load: Load, start: float, end: float) -> dict:
    """Where the bystander's time went, p95 of each part, before and during the fault: waiting to
    be claimed (created -> started), the upstream calls (attempts' ms), the rest of the run (waiting
    for an upstream slot, loading, transcoding, storing, recording: started -> finished minus
    upstream), and the web side: the request until its job row
    was inserted (auth, limits, the submit transaction), and from the finish to the client's answer
    (the notification reaching the parked request, the response)."""
    with _db(stack) as conn:
        rows = conn.execute(
            "SELECT public_id, extract(epoch FROM started_at - created_at),"
            " extract(epoch FROM finished_at - started_at), extract(epoch FROM created_at),"
            " extract(epoch FROM finished_at), attempts_log FROM generation_job"
            " WHERE public_id = ANY(%s) AND status = 'succeeded'",
            [list(load.bystander_jobs)],
        ).fetchall()
    parts: dict[str, dict[str, list[float]]] = {"before": {}, "during": {}}
    for public_id, queued, ran, created, finished, log in rows:
        t, seconds = load.bystander_jobs[public_id]
        phase = "before" if t + seconds < start else "during" if t <= end + 30 else None
        if phase is None or queued is None or ran is None:
            continue
        upstream = sum(attempt.get("ms", 0) for attempt in log) / 1000
        for name, value in (
            ("claim_wait", float(queued)),
            ("upstream", upstream),
            ("run_other", float(ran) - upstream),
            ("web_until_job_row", float(created) - t),
            ("web_after_finish", t + seconds - float(finished)),
        ):
            parts[phase].setdefault(name, []).append(value)
    return {
        phase: {name: round(pct(values, 0.95), 3) for name, values in names.items()}
        for phase, names in parts.items()
    }


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- scenarios -------------------------------------------------------------------------------
def scenario_kill(stack: ChaosStack, load: Load) -> dict:
    """SIGKILL, one at a time: every qcluster worker, the monitor, the pusher, the sentinel, and a
    gunicorn worker. After each, a bystander job must succeed within 60 s."""
    time.sleep(8)
    kids = stack.worker_children()
    roles = {f"worker-{i}": pid for i, pid in enumerate(kids[: stack.workers])}
    roles["monitor"], roles["pusher"] = kids[stack.workers], kids[stack.workers + 1]
    recovery: dict[str, float] = {}
    for role in [*roles, "sentinel", "web-worker"]:
        if role == "sentinel":
            pid = stack.sentinel()
        elif role == "web-worker":
            pid = stack.web_workers()[0]
        else:
            pid = roles[role]
            # a respawned process takes the role of the one killed before it
            current = stack.worker_children()
            if pid not in current:
                pid = current[0] if role.startswith("worker") else current[-1]
        killed_at = time.time()
        _kill(pid)
        print(f"  SIGKILL {role} (pid {pid})", flush=True)
        recovery[role] = _time_to_next_bystander_success(load, killed_at, 60)
    return {"recovery_seconds": recovery, "max_recovery_seconds": max(recovery.values())}


def _time_to_next_bystander_success(load: Load, since: float, timeout: float) -> float:
    deadline = time.time() + timeout + 30
    while time.time() < deadline:
        with load.lock:
            done = [t + s for t, s, code in load.bystander if t >= since and code == 200]
        if done:
            return round(min(done) - since, 1)
        time.sleep(0.5)
    return float("inf")


def scenario_redis(stack: ChaosStack, load: Load) -> dict:
    time.sleep(8)
    down = 15 if SHORT else 30
    stack.redis_stop()
    print("  redis-server stopped", flush=True)
    time.sleep(down)
    stack.redis_start()
    print("  redis-server started", flush=True)
    return {"redis_down_seconds": down}


def scenario_postgres(stack: ChaosStack, load: Load) -> dict:
    time.sleep(8)
    started = time.time()
    stack.pg_stop("fast")
    print("  PostgreSQL stopped", flush=True)
    time.sleep(3)
    stack.pg_start()
    print(f"  PostgreSQL started ({time.time() - started:.1f} s down)", flush=True)
    return {"postgres_down_seconds": round(time.time() - started, 1)}


def prepare_upstream(stack: ChaosStack) -> None:
    """A second route for the fast tier, on its own fake upstream that answers 30% 5xx/429, 10%
    wrong-shaped 200s and 5% truncated 200s; the first route stays healthy."""
    stack.fake_upstream(
        "fake_upstream_2",
        stack.fake2_port,
        "--error-rate",
        "0.3",
        "--faults",
        "wrong_shape:0.1,truncated:0.05",
    )
    stack.wait_port(stack.fake2_port)
    stack.manage(
        "shell",
        "-c",
        "from generation.models import ProviderAccount, Route;"
        "healthy = Route.objects.filter(account__name='gemini-api', tier='fast').first();"
        "account = ProviderAccount.objects.get(name='gemini-api');"
        "account.pk = None; account.name = 'gemini-faulty';"
        f"account.base_url = 'http://127.0.0.1:{stack.fake2_port}'; account.save();"
        "Route.objects.create(tier=healthy.tier, position=healthy.position, account=account,"
        " model=healthy.model, options=healthy.options);"
        # The faulty route comes first, so traffic reaches it and has to fail over.
        "Route.objects.filter(pk=healthy.pk).update(position=healthy.position + 1)",
    )


def scenario_upstream(stack: ChaosStack, load: Load) -> dict:
    time.sleep(8)
    return {}


def hostile_checks(stack: ChaosStack, result: dict) -> dict:
    """No lease expired (no job was claimed twice), no upstream image answer went unbilled, and the
    bystander's p95 stayed within 1.5x of its baseline."""
    with _db(stack) as conn:
        recorded = conn.execute("SELECT count(*) FROM generation_image").fetchone()[0]
    checks = {"image_rows_recorded": recorded}
    if result["executed_more_than_once"]:
        result["problems"].append("a lease expired: a job was claimed twice")
    baseline, during = result["bystander_p95_baseline_s"], result["bystander_p95_during_s"]
    checks["bystander_p95_ratio"] = round(during / baseline, 2) if baseline else None
    if baseline and during > 1.5 * baseline:
        # A latency target, not an invariant, in the short (CI) form: its p95 of ~40-60 calls on a
        # shared machine is a measurement, and CI asserts behaviour only. The full run enforces it.
        missed = f"bystander p95 {during} s > 1.5 x baseline {baseline} s"
        result["problems" if not SHORT else "targets_missed"].append(missed)
    return checks


def upstream_failovers(stack: ChaosStack) -> dict:
    with _db(stack) as conn:
        rows = conn.execute("SELECT attempts_log FROM generation_job WHERE status = 'succeeded'").fetchall()
    failed_attempts = sum(1 for (log,) in rows for attempt in log if not attempt.get("ok"))
    rescued = sum(1 for (log,) in rows if any(not attempt.get("ok") for attempt in log))
    return {"failed_upstream_attempts": failed_attempts, "jobs_rescued_by_retry_or_failover": rescued}


class _Trickler(threading.Thread):
    """A webhook receiver that answers one header byte every 9 s, forever."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import socket

        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.connections = 0

    def run(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    @staticmethod
    def _trickle(connection) -> None:
        with connection:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
                time.sleep(9)
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return


def scenario_hostile(stack: ChaosStack, load: Load) -> dict:
    """Tenant beta turns hostile for 45 s (30 s with --short): 200 parked waits of 4-image 4K webp
    jobs at its limit, prompts the upstream refuses, a submit/cancel loop, and a webhook receiver
    that trickles."""
    time.sleep(8)
    trickler = _Trickler()
    trickler.start()
    key = stack.keys["beta"]
    headers = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{stack.web_port}"
    httpx.put(f"{base}/v1/webhook", json={"url": trickler.url}, headers=headers, timeout=10)
    stop = threading.Event()
    counts: Counter = Counter()
    lock = threading.Lock()

    def count(what: str) -> None:
        with lock:
            counts[what] += 1

    heavy = {"prompt": "hostile 4k", "count": 4, "resolution": "4K", "output_format": "webp"}

    def parked_waits() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=90) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/generations?wait=60", json=heavy)
                    count(f"wait_{response.status_code}")
                    if response.status_code >= 500 and response.status_code != 503:
                        load.statuses[response.status_code] += 1
                    if response.status_code == 429:
                        time.sleep(float(response.headers.get("Retry-After", "1")))
                except httpx.HTTPError:
                    count("wait_connection_error")

    def failing_prompts() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/generations?wait=20", json={"prompt": "[block-prompt] no"})
                count(f"blocked_{response.status_code}")
                time.sleep(0.2)

    def submit_cancel() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/generations", json={"prompt": "cancel me", "count": 4})
                if response.status_code == 202:
                    job = response.json()["id"]
                    time.sleep(0.3)  # the upstream call is under way
                    cancel = client.post(f"/v1/generations/{job}/cancel")
                    count(f"cancel_{cancel.status_code}")
                else:
                    count(f"cancel_submit_{response.status_code}")
                    time.sleep(0.5)

    threads = [threading.Thread(target=parked_waits, daemon=True) for _ in range(200)]
    threads += [threading.Thread(target=failing_prompts, daemon=True) for _ in range(4)]
    threads += [threading.Thread(target=submit_cancel, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(30 if SHORT else 45)
    stop.set()
    for thread in threads:
        thread.join(timeout=95)
    with _db(stack) as conn:
        canceled_billed = conn.execute(
            "SELECT count(*) FROM generation_job WHERE status = 'canceled' AND images_delivered > 0"
        ).fetchone()[0]
    try:
        upstream = httpx.get(f"http://127.0.0.1:{stack.fake_port}/_fake/stats", timeout=60).json()
    except httpx.HTTPError:
        upstream = {}
    return {
        "hostile_requests": dict(counts),
        "webhook_connections_to_trickler": trickler.connections,
        "upstream_answers_by_status": upstream.get("statuses", {}),
        "canceled_jobs_delivered_and_billed": canceled_billed,
    }


SCENARIOS = {
    "kill": scenario_kill,
    "redis": scenario_redis,
    "postgres": scenario_postgres,
    "upstream": scenario_upstream,
    "hostile": scenario_hostile,
}


def prepare_hostile(stack: ChaosStack) -> None:
    """The hostile tenant is a Pro tenant at its own limits: the plan's 600 requests a minute and
    4 concurrent jobs (16 4K images in flight)."""
    stack.manage(
        "shell",
        "-c",
        "from tenants.models import Organization;"
        "Organization.objects.filter(name='beta').update(max_concurrent_jobs_override=4,"
        " requests_per_minute_override=None)",
    )


PREPARE = {"upstream": prepare_upstream, "hostile": prepare_hostile}


def run_scenario(name: str, *, jobs: int, rate: float, keep: bool, snapshot: Path | None = None) -> dict:
    """One scenario on a fresh stack; once more on new ports if the stack could not start (a port
    chosen free was taken by another process before ours bound it)."""
    try:
        return _run_scenario(name, jobs=jobs, rate=rate, keep=keep, snapshot=snapshot)
    except SystemExit as exc:
        print(f"  stack did not start ({exc}); retrying on new ports", flush=True)
        return _run_scenario(name, jobs=jobs, rate=rate, keep=keep, snapshot=snapshot)


def _run_scenario(name: str, *, jobs: int, rate: float, keep: bool, snapshot: Path | None) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
    stack = ChaosStack(workdir)
    print(f"scenario {name}: stack in {workdir}", flush=True)
    try:
        stack.pg_init()
        stack.redis_start()
        stack.prepare(snapshot)
        if name in PREPARE:
            PREPARE[name](stack)
        stack.up()
        load = Load(stack, jobs=jobs, rate=rate)
        joiner = load.run()
        fault_start = time.time() + 8
        cpu_before = stack.cpu_seconds()
        notes = SCENARIOS[name](stack, load)
        fault_end = time.time()
        cpu_after = stack.cpu_seconds()
        # Cores each part of the stack kept busy while the scenario ran (machine: everything,
        # including PostgreSQL, this load generator and whatever else shares the box).
        notes["cores_busy"] = {
            part: round((cpu_after[part] - cpu_before.get(part, 0.0)) / (fault_end - fault_start + 8), 2)
            for part in cpu_after
        }
        joiner.join()
        time.sleep(5)  # the bystander's last calls after the fault
        load.stop.set()
        left = wait_terminal(stack, load.submitted, 180)
        result = report(name, stack, load, (fault_start, fault_end), notes)
        if left:
            result["problems"].append(f"{left} jobs still open after 180 s")
        if name == "upstream":
            result.update(upstream_failovers(stack))
            if result["failed_by_code"]:
                result["problems"].append("client-visible failures while the healthy route had capacity")
            if not result["failed_upstream_attempts"]:  # the fault must have been exercised
                result["problems"].append("no call reached the faulty route")
        if name == "kill" and result.get("max_recovery_seconds", 0) > 60:
            result["problems"].append("service did not continue within 60 s")
        if name == "hostile":
            result.update(hostile_checks(stack, result))
        if name == "postgres" and result["503_span_seconds"] > 15:
            result["problems"].append("503s for more than a few seconds")
        return result
    finally:
        stack.down()
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--short", action="store_true", help="CI: 120 jobs per scenario instead of 300")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory (logs)")
    args = parser.parse_args()
    global SHORT
    SHORT = args.short
    jobs, rate = (120, 6.0) if args.short else (300, 6.0)
    results = []
    started = time.monotonic()
    prepared = Path(tempfile.mkdtemp(prefix="chaos-prepared-"))
    try:
        for name in args.scenario or list(SCENARIOS):
            result = run_scenario(name, jobs=jobs, rate=rate, keep=args.keep, snapshot=prepared / "db.dump")
            results.append(result)
            print(json.dumps(result, indent=2), flush=True)
    finally:
        import shutil

        shutil.rmtree(prepared, ignore_errors=True)
    print(f"chaos: {len(results)} scenario(s) in {time.monotonic() - started:.0f} s", flush=True)
    out = Path("var") / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result-{int(time.time())}.json").write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["problems"]]
    for r in results:
        verdict = "FAIL " + "; ".join(r["problems"]) if r["problems"] else "ok"
        if r.get("targets_missed"):
            verdict += " (target missed, reported only with --short: " + "; ".join(r["targets_missed"]) + ")"
        print(f"{r['scenario']}: {verdict}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
