"""/metrics: Prometheus text for local and allowed scrapers, a plain 404 for everyone else."""

from django.test import Client

from generation.models import Job
from generation.tests.test_jobs import submit


def test_metrics_from_localhost_show_requests_jobs_and_queue_age(alice):
    submit(alice)
    alice.client().get("/v1/generations")
    response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'imagegate_jobs{state="queued"} 1.0' in text
    assert "imagegate_oldest_due_job_age_seconds" in text
    assert 'imagegate_http_requests_total{method="GET",route="v1/generations",status="200"}' in text
    assert "imagegate_database_up 1.0" in text
    assert "imagegate_redis_degraded" in text and "imagegate_billing_outbox_lag_seconds" in text
    assert Job.objects.count() == 1


def test_metrics_are_404_to_other_addresses_and_through_the_proxy(settings):
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 404
    proxied = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.get("/metrics").status_code == 404
    settings.METRICS_ALLOWED_IPS = ["203.0.113.9"]
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 200
