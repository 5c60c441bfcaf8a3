import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import UsageRecord
from tenants.models import Organization

pytestmark = pytest.mark.django_db


def _usage(persona, key, *, livemode, day, amount="0.0200", tier="fast"):
    return UsageRecord.objects.create(
        organization=persona.organization,
        api_key=key,
        job_public_id="gen_x",
        image_public_id=f"img_{UsageRecord.objects.count()}",
        livemode=livemode,
        requested_tier=tier,
        served_tier=tier,
        billed_tier=tier,
        model="m",
        route="r",
        unit_price=Decimal(amount),
        amount=Decimal(amount),
        upstream_cost=Decimal("0.01"),
        created_at=day,
    )


def test_usage_range_and_csv(web, alice, charlie):
    _usage(alice, alice.live_key, livemode=True, day=datetime(2026, 10, 3, 12, tzinfo=UTC))
    _usage(alice, alice.key, livemode=False, day=datetime(2026, 10, 4, 12, tzinfo=UTC), amount="0")
    _usage(charlie, charlie.key, livemode=False, day=datetime(2026, 10, 4, 12, tzinfo=UTC))
    client = web(alice)
    page = client.get(reverse("dashboard:usage"), {"start": "2026-10-01", "end": "2026-10-31"})
    assert page.status_code == 200
    assert b"2026-10-03" in page.content and b"alice live" in page.content
    assert b"charlie" not in page.content
    response = client.get(
        reverse("dashboard:usage"), {"start": "2026-10-01", "end": "2026-10-31", "format": "csv"}
    )
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["date"], r["mode"], r["images"], r["amount"]) for r in rows] == [
        ("2026-10-03", "live", "1", "0.0200"),
        ("2026-10-04", "test", "1", "0.0000"),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-10-05", "end": "2026-10-01"}, "on or after the start"),
        ({"start": "2024-01-01", "end": "2026-10-01"}, "at most 366 days"),
        ({"start": "yesterday", "end": "2026-10-01"}, "Enter a valid date."),
    ],
)
def test_bad_usage_range_is_a_400(web, alice, query, message):
    response = web(alice).get(reverse("dashboard:usage"), query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_settings_update_and_validation(web, alice):
    client = web(alice)
    response = client.post(
        reverse("dashboard:settings"),
        {"fallback_policy": "deny", "image_url_ttl_seconds": "600", "auto_migrate_models": "on"},
    )
    assert response.status_code == 302
    organization = Organization.objects.get(pk=alice.organization.pk)
    assert (
        organization.fallback_policy,
        organization.image_url_ttl_seconds,
        organization.auto_migrate_models,
    ) == (
        "deny",
        600,
        True,
    )
    response = client.post(
        reverse("dashboard:settings"), {"fallback_policy": "sometimes", "image_url_ttl_seconds": "5"}
    )
    assert response.status_code == 400
    assert b"Select a valid choice" in response.content
    assert b"greater than or equal to 60" in response.content
    assert Organization.objects.get(pk=alice.organization.pk).image_url_ttl_seconds == 600


def test_settings_lists_models_with_lifecycle(web, alice):
    page = web(alice).get(reverse("dashboard:settings")).content.decode()
    assert "imagen-4.0-fast-generate-001" in page
    assert "Shutdown date" in page


def test_overview_chart_has_per_day_series_by_tier(web, alice):
    from django.utils import timezone

    _usage(alice, alice.key, livemode=False, day=timezone.now(), tier="standard")
    page = web(alice).get("/").content.decode()
    import json
    import re

    data = json.loads(
        re.search(r'<script id="overview-chart-data" type="application/json">(.*?)</script>', page).group(1)
    )
    assert data["tiers"]["standard"][-1] == 1
    assert len(data["labels"]) == len(data["tiers"]["fast"]) == timezone.now().day


def test_default_range_is_this_month_with_a_csv_link(web, alice):
    from django.utils import timezone

    today = timezone.now().date()
    page = web(alice).get(reverse("dashboard:usage")).content.decode()
    assert f"start={today.replace(day=1).isoformat()}&amp;end={today.isoformat()}&amp;format=csv" in page
