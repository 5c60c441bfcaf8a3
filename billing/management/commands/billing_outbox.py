"""`manage.py billing_outbox`: run the meter-event outbox as its own process, every `--interval`
seconds (fixed rate), until SIGTERM or SIGINT. The django-q2 schedule (every minute) is enough for
the engine's rate; this is for deployments that want usage at Stripe sooner, or more claimers
(any number of these processes may run at once: claims are exclusive)."""

import json
import signal
import threading
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from billing.outbox import usage_outbox_process
from billing.reconciliation import usage_reconcile


class Command(BaseCommand):
    help = "Report usage to Stripe every --interval seconds (or once with --once)."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=60.0, help="Seconds between run starts.")
        parser.add_argument("--once", action="store_true", help="One run, then exit.")
        parser.add_argument(
            "--reconcile-every", type=float, default=0.0, help="Also reconcile every N seconds (0: never)."
        )

    def handle(self, *args, interval: float, once: bool, reconcile_every: float, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        next_run = time.monotonic()
        next_reconcile = time.monotonic() + reconcile_every if reconcile_every else None
        while not stop.is_set():
            close_old_connections()
            result = usage_outbox_process()
            if result.claimed or result.aggregated:
                self.stdout.write(json.dumps(result.as_dict()))
                self.stdout.flush()
            if next_reconcile is not None and time.monotonic() >= next_reconcile:
                self.stdout.write(json.dumps({"reconcile": usage_reconcile().as_dict()}))
                next_reconcile += reconcile_every
            if once:
                return
            next_run += interval
            stop.wait(max(0.0, next_run - time.monotonic()))
