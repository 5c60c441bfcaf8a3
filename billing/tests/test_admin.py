from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.models import BillingAccount, BillingMeter, StripeEvent, UsageRecord
from billing.tests.helpers import usage_record_create

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def ledger(alice, charlie, clock):
    org = alice.organization
    for _ in range(4):
        usage_record_create(
            organization=org, api_key=alice.live_key, tier="fast", upstream_cost=Decimal("0.02")
        )
    usage_record_create(organization=org, api_key=alice.live_key, tier="ultra", upstream_cost=Decimal("0.06"))
    usage_record_create(
        organization=org,
        api_key=alice.key,
        livemode=False,
        unit_price=Decimal(0),
        upstream_cost=Decimal("0.01"),
    )
    usage_record_create(organization=org, tier="fast", created_at=datetime(2026, 10, 5, tzinfo=UTC))
    usage_record_create(organization=charlie.organization, tier="standard", upstream_cost=Decimal("0.15"))


def test_monthly_summary_shows_images_revenue_cost_and_margin(admin_client, alice, ledger):
    response = admin_client.get("/admin/billing/organizationmonthlysummary/")

    assert response.status_code == 200
    rows = {obj.name: obj for obj in response.context["cl"].result_list}
    acme, contoso = rows["Acme"], rows["Contoso"]
    # Acme this month: 4 fast (0.09) + 1 ultra (0.19) live; cost 4 x 0.02 + 0.06 + test image 0.01.
    assert acme._images == 5
    assert acme._revenue == Decimal("0.55")
    assert acme._cost == Decimal("0.15")
    page = response.content.decode()
    assert "0.40" in page and "72.7 %" in page
    assert contoso._revenue - contoso._cost == Decimal("-0.03")  # a loss, shown as such


def test_monthly_summary_for_a_past_month(admin_client, ledger):
    response = admin_client.get("/admin/billing/organizationmonthlysummary/", {"month": "2026-10"})
    rows = {obj.name: obj for obj in response.context["cl"].result_list}
    assert (rows["Acme"]._images, rows["Acme"]._revenue) == (1, Decimal("0.09"))
    assert rows["Contoso"]._images == 0


def test_usage_admin_lists_and_filters_the_ledger(admin_client, ledger):
    base = "/admin/billing/usagerecord/"
    assert admin_client.get(base).status_code == 200
    response = admin_client.get(base, {"livemode__exact": "0"})
    assert response.context["cl"].result_count == 1
    response = admin_client.get(base, {"billed_tier": "ultra"})
    assert response.context["cl"].result_count == 1
    record = UsageRecord.objects.get(billed_tier="ultra")
    assert admin_client.get(f"{base}{record.pk}/change/").status_code == 200


def test_usage_close_to_stripes_limit_is_flagged_in_admin(admin_client, alice, clock):
    old = usage_record_create(organization=alice.organization, created_at=NOW - timedelta(days=31))
    usage_record_create(organization=alice.organization)

    response = admin_client.get("/admin/billing/usagerecord/")
    assert "have not reached Stripe after 30 days" in response.content.decode()
    response = admin_client.get("/admin/billing/usagerecord/", {"outbox": "overdue"})
    assert [r.pk for r in response.context["cl"].result_list] == [old.pk]


def test_retry_action_puts_failed_records_back_in_the_outbox_while_stripe_can_take_them(
    admin_client, alice, clock
):
    recent = usage_record_create(organization=alice.organization, created_at=NOW - timedelta(days=2))
    too_old = usage_record_create(organization=alice.organization, created_at=NOW - timedelta(days=36))
    UsageRecord.objects.filter(pk__in=[recent.pk, too_old.pk]).update(report_status="failed")

    admin_client.post(
        "/admin/billing/usagerecord/", {"action": "retry_now", "_selected_action": [recent.pk, too_old.pk]}
    )

    recent.refresh_from_db()
    too_old.refresh_from_db()
    assert (recent.report_status, too_old.report_status) == ("pending", "failed")


def test_meter_reports_and_alerts_admin(admin_client, alice, clock):
    from billing.models import BillingAlert, MeterReport

    report = MeterReport.objects.create(
        organization=alice.organization,
        stripe_customer_id="cus_1",
        tier="fast",
        bucket_start=NOW,
        value=1,
        amount=Decimal("0.04"),
        status=MeterReport.Status.RECONCILE,
    )
    record = usage_record_create(organization=alice.organization)
    UsageRecord.objects.filter(pk=record.pk).update(meter_report=report)
    alert = BillingAlert.objects.create(
        kind=BillingAlert.Kind.RECONCILIATION_MISMATCH,
        organization=alice.organization,
        message="Stripe 2, us 1",
    )
    page = admin_client.get(f"/admin/billing/meterreport/{report.pk}/change/").content.decode()
    assert record.public_id in page  # the audit trail: the report's images
    assert "Stripe 2, us 1" in admin_client.get("/admin/billing/billingalert/").content.decode()

    admin_client.post(
        "/admin/billing/meterreport/", {"action": "mark_counted", "_selected_action": [report.pk]}
    )
    admin_client.post("/admin/billing/billingalert/", {"action": "resolve", "_selected_action": [alert.pk]})

    report.refresh_from_db()
    record.refresh_from_db()
    alert.refresh_from_db()
    assert (report.status, report.confirmation, record.report_status) == ("sent", "operator", "sent")
    assert alert.resolved_at == NOW


def test_billing_state_admin_pages_render(admin_client, alice, clock):
    account = BillingAccount.objects.create(organization=alice.organization, stripe_customer_id="cus_1")
    StripeEvent.objects.create(event_id="evt_1", type="invoice.paid", created=NOW, payload={})
    BillingMeter.objects.create(tier="fast", event_name="imagegate_images_fast", stripe_meter_id="mtr_1")
    for path in ("billingaccount", "stripeevent", "billingmeter"):
        assert admin_client.get(f"/admin/billing/{path}/").status_code == 200
    assert admin_client.get(f"/admin/billing/billingaccount/{account.pk}/change/").status_code == 200
