import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import UsageRecord
from generation.models import Route, RouteStatsMinute

pytestmark = pytest.mark.django_db


def test_operator_shows_route_health_revenue_and_top_tenants(admin_client, alice, charlie):
    route = Route.objects.filter(account__name="sandbox", tier="fast").first()
    now = timezone.now().replace(second=0, microsecond=0)
    RouteStatsMinute.objects.create(route=route, minute=now, calls=8, errors=2, images=6, latency_ms_sum=4000)
    RouteStatsMinute.objects.create(  # outside the hour: not counted
        route=route, minute=now - timedelta(hours=3), calls=100, errors=100, images=0, latency_ms_sum=1
    )
    for n, (persona, live) in enumerate([(alice, True), (alice, True), (charlie, False)]):
        UsageRecord.objects.create(
            organization=persona.organization,
            api_key=persona.key,
            job_public_id="gen_x",
            image_public_id=f"img_{n}",
            livemode=live,
            requested_tier="fast",
            served_tier="fast",
            billed_tier="fast",
            model="m",
            route="r",
            unit_price=Decimal("0.04"),
            amount=Decimal("0.04"),
            upstream_cost=Decimal("0.02"),
            created_at=timezone.now(),
        )
    page = admin_client.get(reverse("dashboard:operator")).content.decode()
    row = re.search(rf"{re.escape(route.label)}</a></td>(.*?)</tr>", page, re.S).group(1)
    cells = [re.sub(r"<.*?>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells == ["yes", "closed", "8", "2", "25 %", "500 ms", "6"]
    script = re.search(r'id="revenue-chart-data" type="application/json">(.*?)</script>', page)
    data = json.loads(script.group(1))
    assert data["revenue"][-1] == pytest.approx(0.08)  # live only
    assert data["upstream_cost"][-1] == pytest.approx(0.04)
    tenants = re.findall(r"<td>(Acme|Contoso) <small", page)
    assert tenants == ["Acme", "Contoso"]  # by images, most first


def test_operator_shows_billing_alerts_and_usage_on_its_way_to_stripe(admin_client, alice, charlie):
    from billing.models import BillingAlert
    from billing.tests.helpers import usage_record_create

    usage_record_create(organization=charlie.organization)  # no subscription: waiting
    lost = usage_record_create(organization=alice.organization, unit_price=Decimal("0.5"))
    UsageRecord.objects.filter(pk=lost.pk).update(report_status=UsageRecord.ReportStatus.FAILED)
    BillingAlert.objects.create(
        kind=BillingAlert.Kind.RECONCILIATION_MISMATCH,
        organization=alice.organization,
        tier="fast",
        ledger_value=3,
        stripe_value=4,
        message="Stripe counts 4 fast images, our ledger 3.",
    )
    BillingAlert.objects.create(
        kind=BillingAlert.Kind.USAGE_WAITING,
        organization=charlie.organization,
        message="old",
        resolved_at=timezone.now(),
    )

    response = admin_client.get(reverse("dashboard:operator"))

    page = response.content.decode()
    assert "Stripe counts 4 fast images, our ledger 3." in page
    assert "3 / 4" in page
    assert [a.kind for a in response.context["billing_alerts"]] == ["reconciliation_mismatch"]  # open only
    outbox = response.context["outbox"]
    assert (outbox.unconfirmed_images, outbox.waiting_images) == (1, 1)
    assert (outbox.unreportable_images, outbox.unreportable_amount) == (1, Decimal("0.5"))
