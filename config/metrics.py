"""Request metrics for Prometheus, recorded by `MetricsMiddleware` in every web process.

With several gunicorn workers set PROMETHEUS_MULTIPROC_DIR (an empty directory, one per host; the
gunicorn config clears it at start): each process then writes its samples there and /metrics
aggregates them, whichever worker answers the scrape. Without it (a single process, tests) the
samples live in the process. Gauges about jobs, queues and dependencies are computed at scrape
time from the database and Redis (generation/api/metrics.py), so they need no multiprocess care.
"""

from __future__ import annotations

import os
import time

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

REQUESTS = Counter(
    "imagegate_http_requests_total",
    "HTTP requests answered, by route pattern and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "imagegate_http_request_duration_seconds",
    "Time to answer an HTTP request (a ?wait= request includes its wait), by route pattern.",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def registry() -> CollectorRegistry:
    """The registry to expose: every process's samples when multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        aggregated = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregated)
        return aggregated
    return DEFAULT_REGISTRY


class MetricsMiddleware:
    """Counts every response and its latency under the URL pattern it matched (never the raw path,
    whose ids would explode the label set)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else "unmatched"
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)
        return response
