"""`GET /metrics`: Prometheus text for operators, open to 127.0.0.1/::1 and to METRICS_ALLOWED_IPS
only (everyone else gets the ordinary 404: the endpoint does not exist for them).

Request counters come from config/metrics.py (multiprocess-safe). Everything else is computed at
scrape time, so any web process answers for the whole deployment: jobs by state, the age of the
oldest claimable job, runners and jobs in flight (heartbeats of this machine), upstream calls by
route and outcome (the last five minutes of route statistics), open circuits (Redis), Redis and
database degraded mode, the webhook backlog and the billing outbox lag.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Min, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from billing.models import UsageRecord
from config.metrics import registry
from config.redis_client import redis_degraded
from generation.engine.health import circuits_open
from generation.jobs.liveness import heartbeats, oldest_due_job_age
from generation.models import Job, Route, RouteStatsMinute, WebhookDelivery

LOCAL = {"127.0.0.1", "::1"}


class _ScrapeTimeCollector:
    def collect(self):
        database_up = GaugeMetricFamily("imagegate_database_up", "1 when the database answered this scrape.")
        try:
            families = list(self._from_database())
            database_up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape during an outage reports the outage
            families = []
            database_up.add_metric([], 0)
        yield database_up
        yield from families
        degraded = GaugeMetricFamily(
            "imagegate_redis_degraded", "1 while this process uses its Redis fallbacks (Redis unreachable)."
        )
        degraded.add_metric([], 1 if redis_degraded() else 0)
        yield degraded
        beats = [
            b
            for b in heartbeats()
            if time.time() - b.get("beat_at", 0) <= settings.WORKER_HEALTH_STALE_SECONDS
        ]
        runners = GaugeMetricFamily(
            "imagegate_runners", "Job runners on this machine with a fresh heartbeat."
        )
        runners.add_metric([], len(beats))
        yield runners
        inflight = GaugeMetricFamily(
            "imagegate_runner_inflight_jobs", "Jobs executing in this machine's runners."
        )
        inflight.add_metric([], sum(b.get("inflight", 0) for b in beats))
        yield inflight
        image_bytes = GaugeMetricFamily(
            "imagegate_runner_inflight_image_bytes",
            "Decoded upstream image bytes this machine's runners hold before their job is recorded.",
        )
        image_bytes.add_metric([], sum(b.get("image_bytes", 0) for b in beats))
        yield image_bytes
        paused = GaugeMetricFamily(
            "imagegate_runner_claims_paused",
            "Runners on this machine claiming no new job: GENERATION_INFLIGHT_IMAGE_BYTES_MAX reached.",
        )
        paused.add_metric([], sum(1 for b in beats if b.get("claims_paused")))
        yield paused

    def _from_database(self):
        now = timezone.now()
        jobs = GaugeMetricFamily(
            "imagegate_jobs",
            "Jobs queued or running now, and finished in the last 5 minutes.",
            labels=["state"],
        )
        live = dict(
            Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
            .values_list("status")
            .annotate(n=Count("id"))
        )
        recent = dict(
            Job.objects.filter(finished_at__gte=now - timedelta(minutes=5))
            .values_list("status")
            .annotate(n=Count("id"))
        )
        for state in Job.Status.values:
            jobs.add_metric([state], live.get(state, 0) + recent.get(state, 0))
        yield jobs
        oldest = GaugeMetricFamily(
            "imagegate_oldest_due_job_age_seconds", "Age of the oldest claimable job (0 when none waits)."
        )
        oldest.add_metric([], oldest_due_job_age(now=now) or 0)
        yield oldest
        calls = GaugeMetricFamily(
            "imagegate_upstream_calls_5m",
            "Upstream calls in the last 5 minutes by route and outcome.",
            labels=["route", "outcome"],
        )
        labels = {
            route.pk: f"{route.account.name}/{route.model.model_id}"
            for route in Route.objects.select_related("account", "model")
        }
        stats = (
            RouteStatsMinute.objects.filter(minute__gte=now - timedelta(minutes=5))
            .values("route_id")
            .annotate(calls=Sum("calls"), errors=Sum("errors"))
        )
        for row in stats:
            label = labels.get(row["route_id"], str(row["route_id"]))
            calls.add_metric([label, "ok"], row["calls"] - row["errors"])
            calls.add_metric([label, "error"], row["errors"])
        yield calls
        circuit = GaugeMetricFamily(
            "imagegate_circuit_open", "1 when some worker has the route's circuit open.", labels=["route"]
        )
        opened = circuits_open(list(labels))
        for route_id, label in labels.items():
            circuit.add_metric([label], 1 if route_id in opened else 0)
        yield circuit
        backlog = GaugeMetricFamily("imagegate_webhook_backlog", "Webhook deliveries pending.")
        backlog.add_metric([], WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).count())
        yield backlog
        oldest_usage = UsageRecord.objects.filter(report_status=UsageRecord.ReportStatus.PENDING).aggregate(
            at=Min("created_at")
        )["at"]
        lag = GaugeMetricFamily(
            "imagegate_billing_outbox_lag_seconds", "Age of the oldest usage not yet reported."
        )
        lag.add_metric([], (now - oldest_usage).total_seconds() if oldest_usage else 0)
        yield lag


_scrape_time = CollectorRegistry(auto_describe=False)
_scrape_time.register(_ScrapeTimeCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    """Behind the reverse proxy every peer is 127.0.0.1: then the client is the first address of
    X-Forwarded-For (platform/nginx.conf sets it), and it must be allowed too."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    address = forwarded.split(",")[0].strip() if forwarded else request.META.get("REMOTE_ADDR", "")
    if address not in LOCAL and address not in settings.METRICS_ALLOWED_IPS:
        raise Http404
    return HttpResponse(
        generate_latest(registry()) + generate_latest(_scrape_time), content_type=CONTENT_TYPE_LATEST
    )
