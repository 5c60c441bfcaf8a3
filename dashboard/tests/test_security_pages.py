"""Dashboard-side hardening: CSP on every page, no 500 for odd query values, the operator page."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/keys/", "/usage/", "/jobs/", "/playground/", "/settings/"])
def test_pages_carry_a_strict_content_security_policy(web, alice, path):
    response = web(alice).get(path)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy


def test_templates_have_no_inline_script_or_style():
    """What lets the policy stay strict: scripts and styles live in static files only."""
    import pathlib
    import re

    for template in pathlib.Path("templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", text), template
        assert not re.search(r"\son[a-z]+=", text) and "style=" not in text and "<style" not in text, template


@pytest.mark.parametrize(
    "query",
    ["start=9999-12-01&end=9999-12-31", "start=9999-12-31&end=9999-12-31", "start=0001-01-01&end=0001-01-01"],
)
def test_the_usage_page_refuses_dates_it_cannot_compute(web, alice, query):
    response = web(alice).get(f"/usage/?{query}")
    assert response.status_code in (200, 400)
    if "9999" in query:
        assert response.status_code == 400 and b"on or before" in response.content


@pytest.mark.parametrize("cursor", ["%C2%B2", "9" * 5000, "-1", "abc"])
def test_odd_batch_page_cursors_are_ignored(web, alice, cursor):
    from generation.models import Batch

    batch = Batch.objects.create(organization=alice.organization, api_key=alice.key, requests=[], total=0)
    assert web(alice).get(f"/batches/{batch.public_id}/?cursor={cursor}").status_code == 200


def test_healthz_names_no_exception(monkeypatch, settings):
    from django.db import connection

    settings.READINESS_GRACE_SECONDS = 0  # report the first failure (the grace has its own tests)

    def broken(*args, **kwargs):
        raise ConnectionRefusedError("db.internal:5432 refused")

    monkeypatch.setattr(connection, "cursor", broken)
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "error"
    assert b"Refused" not in response.content and b"db.internal" not in response.content


def test_readiness_fails_only_after_the_grace_then_recovers(monkeypatch, settings):
    """A blip does not pull every web pod at once: 200 (reporting the error) until the database has
    failed for READINESS_GRACE_SECONDS, 503 after, 200 again at the first success."""
    from types import SimpleNamespace

    from django.db import connection

    from config import views

    settings.READINESS_GRACE_SECONDS = 10
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(views, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(views, "_database", views._DatabaseReadiness())
    real_cursor = connection.cursor
    database = SimpleNamespace(down=True)

    def cursor(*args, **kwargs):
        if database.down:
            raise ConnectionRefusedError("db.internal:5432 refused")
        return real_cursor(*args, **kwargs)

    monkeypatch.setattr(connection, "cursor", cursor)
    first = Client().get("/healthz")
    assert first.status_code == 200 and first.json()["checks"]["database"] == "error"
    clock.now += 9.9
    assert Client().get("/healthz").status_code == 200
    clock.now += 0.2
    assert Client().get("/healthz").status_code == 503
    database.down = False
    recovered = Client().get("/healthz")
    assert recovered.status_code == 200 and recovered.json()["checks"]["database"] == "ok"
    database.down = True
    assert Client().get("/healthz").status_code == 200  # the grace starts again


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/billing/checkout", {"plan": "pro\x00"}),
        ("/organizations/switch", {"organization": "org_\x00"}),
        ("/members/alice/role", {"role": "admin\x00"}),
    ],
)
def test_nul_in_dashboard_form_fields_is_a_400(web, alice, path, data):
    assert web(alice).post(path, data).status_code == 400
