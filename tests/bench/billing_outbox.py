"""`make bench` (billing part): does usage reach Stripe as fast as the engine produces it?

On the production profile (PostgreSQL; the benchmark recreates BENCH_DB_NAME, default
`imagegate_bench_billing`), against the fake Stripe (in this process, a real HTTP server on
127.0.0.1): usage records are inserted the way the engine writes them (one committed transaction per
delivered image) at the engine's sustained rate (`--rate`, default 80 images/s) across `--customers`
subscribed organizations and the three tiers, for `--minutes` (default 10), while the outbox runs in
its own processes (`manage.py billing_outbox`, `--outbox-processes`, each every `--interval` seconds,
started evenly staggered). Every second it samples the outbox lag (age of the oldest billable usage
Stripe has not confirmed). When generation stops it waits for the lag to reach zero, then compares
Stripe's totals with the ledger per customer and meter. Prints (and writes to
var/bench/<time>/billing_outbox.json) events/s sent, lag p50/max, and ledger vs Stripe totals.
It measures; it asserts nothing (the exit status is 1 only if the totals differ or the lag never
reached zero).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
BENCH_DB = os.environ.get("BENCH_DB_NAME", "imagegate_bench_billing")
BENCH_REDIS_DB = os.environ.get("BENCH_REDIS_DB", "10")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="How long usage is generated.")
    parser.add_argument("--rate", type=float, default=80.0, help="Images per second (engine: up to ~80).")
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--outbox-processes", type=int, default=2)
    parser.add_argument("--interval", type=float, default=60.0, help="Seconds between runs of one process.")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="Usage records already waiting when the outbox starts (headroom: how fast it drains them).",
    )
    return parser.parse_args()


def environment(stripe_base: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    env.update(
        {
            "DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "bench-" + "x" * 60,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "IMAGEGATE_VAR_DIR": str(workdir / "var"),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            "REDIS_URL": f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}",
            "REDIS_PREFIX": f"bench-billing-{os.getpid()}",
            "Q_CLUSTER_NAME": f"bench-billing-{os.getpid()}",
            "LOG_LEVEL": "WARNING",
            "STRIPE_SECRET_KEY": "sk_test_bench_billing",
            "STRIPE_API_BASE": stripe_base,
            "STRIPE_MAX_NETWORK_RETRIES": "0",
        }
    )
    return env


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


class LagSampler(threading.Thread):
    """Once a second: seconds since the oldest billable usage record Stripe has not confirmed."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def lag(self) -> float:
        from django.db.models import Min
        from django.utils import timezone

        from billing.models import UsageRecord

        oldest = UsageRecord.objects.filter(
            report_status=UsageRecord.ReportStatus.PENDING, livemode=True, amount__gt=0
        ).aggregate(oldest=Min("created_at"))["oldest"]
        return 0.0 if oldest is None else (timezone.now() - oldest).total_seconds()

    def run(self):
        from django.db import connection

        try:
            while not self.stop.wait(1.0):
                self.samples.append((time.monotonic(), self.lag()))
        finally:
            connection.close()


def main() -> int:
    args = arguments()
    from fakes.stripe_server import FakeStripe

    fake = FakeStripe()
    stripe_base = fake.start()
    workdir = ROOT / "var" / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    (workdir / "var").mkdir(parents=True, exist_ok=True)
    env = environment(stripe_base, workdir)
    os.environ.update(env)
    recreate_database()
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )

    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from billing.catalog import stripe_catalog_sync
    from billing.models import BillingMeter, MeterReport, UsageRecord
    from billing.tests.helpers import usage_record_create
    from tenants import services as tenant_services
    from tenants.models import Plan
    from tests.fake_stripe import activate_subscription

    stripe_catalog_sync()
    plan = Plan.objects.get(code="pro")
    organizations = []
    for number in range(args.customers):
        organization = tenant_services.organization_create(name=f"Bench billing {number}", plan=plan)
        activate_subscription(organization, plan)
        organizations.append(organization)
    customers = {org.pk: org.billing_account.stripe_customer_id for org in organizations}
    event_names = dict(BillingMeter.objects.values_list("tier", "event_name"))

    rng = random.Random(20261201)

    def new_record():
        return usage_record_create(
            organization=rng.choice(organizations),
            tier=rng.choices(["fast", "standard", "ultra"], weights=[6, 3, 1])[0],
            created_at=timezone.now(),
            save=False,
        )

    for start in range(0, args.backlog, 1000):
        UsageRecord.objects.bulk_create([new_record() for _ in range(min(1000, args.backlog - start))])

    outboxes: list[subprocess.Popen] = []
    outbox_started = time.monotonic()
    for number in range(args.outbox_processes):
        log = open(workdir / f"outbox-{number}.log", "wb")  # noqa: SIM115 - lives as long as the process
        outboxes.append(
            subprocess.Popen(
                [PYTHON, "manage.py", "billing_outbox", "--interval", str(args.interval)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        if number + 1 < args.outbox_processes:
            time.sleep(args.interval / args.outbox_processes)  # staggered, like evenly spread timers

    sampler = LagSampler()
    sampler.start()
    images = int(args.rate * args.minutes * 60)
    started = time.monotonic()
    behind = 0.0
    for index in range(images):
        due = started + index / args.rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            behind = max(behind, -wait)
        UsageRecord.objects.bulk_create(
            [new_record()]
        )  # one committed transaction per image, like the engine
    generated = time.monotonic() - started
    drain_deadline = time.monotonic() + args.drain_timeout
    while sampler.lag() > 0 and time.monotonic() < drain_deadline:
        time.sleep(1.0)
    drained_at = time.monotonic()
    final_lag = sampler.lag()
    sampler.stop.set()
    sampler.join()
    for process in outboxes:
        process.send_signal(signal.SIGTERM)
    for process in outboxes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    fake.wait_idle()

    ledger: Counter[tuple] = Counter()
    for organization_id, tier in UsageRecord.objects.filter(livemode=True, amount__gt=0).values_list(
        "organization_id", "billed_tier"
    ):
        ledger[(customers[organization_id], event_names[tier])] += 1
    stripe_totals = {key: int(value) for key, value in fake.usage_by_customer().items()}
    calls = fake.received("POST", "/v1/billing/meter_events")
    accepted = [call for call in calls if call.outcome == "accepted"]
    lags = [lag for _, lag in sampler.samples]
    duration = drained_at - started
    result = {
        "images": images + args.backlog,
        "backlog": args.backlog,
        "backlog_drain_s": round(drained_at - outbox_started, 1) if args.backlog and not images else None,
        "rate_target": args.rate,
        "rate_achieved": round(images / generated, 1) if images else 0.0,
        "generator_max_behind_s": round(behind, 3),
        "customers": args.customers,
        "outbox_processes": args.outbox_processes,
        "interval_s": args.interval,
        "generation_s": round(generated, 1),
        "drain_after_generation_s": round(drained_at - started - generated, 1),
        "meter_event_calls": len(calls),
        "meter_events_accepted": len(accepted),
        "events_per_s": round(len(accepted) / duration, 2),
        "images_reported_per_s": round(
            sum(int(c.params["payload"]["value"]) for c in accepted) / duration, 1
        ),
        "meter_reports": MeterReport.objects.count(),
        "lag_p50_s": round(pct(lags, 0.5), 1),
        "lag_p95_s": round(pct(lags, 0.95), 1),
        "lag_max_s": round(max(lags, default=0.0), 1),
        "lag_final_s": round(final_lag, 1),
        "ledger_images": sum(ledger.values()),
        "stripe_images": sum(stripe_totals.values()),
        "totals_match": dict(ledger) == stripe_totals,
        "mismatched_keys": sorted(
            f"{customer} {meter}: ledger {ledger.get((customer, meter), 0)}, "
            f"Stripe {stripe_totals.get((customer, meter), 0)}"
            for customer, meter in set(ledger) | set(stripe_totals)
            if ledger.get((customer, meter), 0) != stripe_totals.get((customer, meter), 0)
        ),
    }
    connection.close()
    fake.stop()
    (workdir / "billing_outbox.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    match = "equal per customer and meter" if result["totals_match"] else "DIFFERENT"
    print(
        f"\nbilling outbox: {result['events_per_s']} meter events/s carried "
        f"{result['images_reported_per_s']} images/s; lag p50 {result['lag_p50_s']} s, "
        f"max {result['lag_max_s']} s, final {result['lag_final_s']} s; ledger {result['ledger_images']} "
        f"vs Stripe {result['stripe_images']} images ({match})"
    )
    return 0 if result["totals_match"] and final_lag == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
