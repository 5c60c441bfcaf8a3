"""`manage.py fake_upstream`: serve the fake Google image upstream (generation/fake_upstream.py)."""

from __future__ import annotations

import os

import uvicorn
from django.core.management.base import BaseCommand, CommandError, CommandParser

from generation.fake_upstream import FakeUpstream


class Command(BaseCommand):
    help = "Serve a fake Google image upstream (:predict, :generateContent, OAuth /token) with uvicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        # Loopback by default: the fake has no real authentication and must not face a network.
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--latency-ms", type=float, default=1500.0, help="delay before each image answer")
        parser.add_argument(
            "--jitter-ms", type=float, default=0.0, help="uniform +/- spread around the latency"
        )
        parser.add_argument(
            "--error-rate", type=float, default=0.0, help="share of calls answered 503/500/429"
        )
        parser.add_argument("--api-key", default=None, help="required x-goog-api-key (default: any key)")
        parser.add_argument("--workers", type=int, default=1, help="processes; each keeps its own state")

    def handle(self, *args, **options) -> None:
        if not 0.0 <= options["error_rate"] <= 1.0:
            raise CommandError("--error-rate must be between 0 and 1")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        self.stdout.write(
            f"Fake Google upstream on http://{options['host']}:{options['port']} "
            f"(latency {options['latency_ms']:g} ms ± {options['jitter_ms']:g}, "
            f"error rate {options['error_rate']:g}, "
            f"api key {'required' if options['api_key'] else 'not checked'}, {options['workers']} worker(s))"
        )
        server_options = {
            "host": options["host"],
            "port": options["port"],
            "log_level": "warning",
            "access_log": False,
            "lifespan": "on",
        }
        if options["workers"] == 1:
            app = FakeUpstream(
                latency_ms=options["latency_ms"],
                jitter_ms=options["jitter_ms"],
                error_rate=options["error_rate"],
                api_key=options["api_key"],
            )
            uvicorn.run(app, workers=1, **server_options)
            return
        # Worker processes import the app by name, so the knobs travel through the environment.
        os.environ.update(
            {
                "FAKE_UPSTREAM_LATENCY_MS": str(options["latency_ms"]),
                "FAKE_UPSTREAM_JITTER_MS": str(options["jitter_ms"]),
                "FAKE_UPSTREAM_ERROR_RATE": str(options["error_rate"]),
                "FAKE_UPSTREAM_API_KEY": options["api_key"] or "",
            }
        )
        uvicorn.run(
            "generation.fake_upstream:create_app_from_env",
            factory=True,
            workers=options["workers"],
            **server_options,
        )
