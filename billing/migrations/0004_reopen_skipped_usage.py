"""Usage the old outbox skipped because its organization had no billable subscription is re-opened
while Stripe can still take it (35 days), so it is reported once a subscription exists; older rows
become unreportable and are surfaced on one operator alert per organization with their amount."""

from datetime import timedelta

from django.db import migrations
from django.db.models import Count, Sum
from django.utils import timezone

OLD_REASON = "The organization had no billable Stripe subscription when this was reported."
UNREPORTABLE = "Older than Stripe's 35-day meter event limit; bill it by hand (invoice item)."


def reopen(apps, schema_editor):
    UsageRecord = apps.get_model("billing", "UsageRecord")
    BillingAlert = apps.get_model("billing", "BillingAlert")
    skipped = UsageRecord.objects.filter(
        report_status="skipped", last_error=OLD_REASON, livemode=True, amount__gt=0
    )
    limit = timezone.now() - timedelta(days=35) + timedelta(hours=1)
    too_old = skipped.filter(created_at__lt=limit)
    for row in too_old.values("organization_id").annotate(images=Count("id"), amount=Sum("amount")):
        BillingAlert.objects.create(
            kind="usage_unreportable",
            organization_id=row["organization_id"],
            images=row["images"],
            amount=row["amount"],
            message=(
                "Usage skipped by the former outbox (no billable subscription at the time) is past Stripe's "
                "35-day limit; invoice it by hand (admin: Usage records, report status 'Unreportable')."
            ),
        )
    too_old.update(report_status="failed", last_error=UNREPORTABLE)
    skipped.filter(created_at__gte=limit).update(report_status="pending", last_error="", next_attempt_at=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_meter_reports_and_alerts")]

    operations = [migrations.RunPython(reopen, migrations.RunPython.noop)]
