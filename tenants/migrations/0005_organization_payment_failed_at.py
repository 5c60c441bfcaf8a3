from django.db import migrations, models


def copy_from_billing(apps, schema_editor):
    """Organizations whose payment already failed keep their block (billing owns the truth)."""
    BillingAccount = apps.get_model("billing", "BillingAccount")
    Organization = apps.get_model("tenants", "Organization")
    for organization_id, failed_at in BillingAccount.objects.exclude(payment_failed_at=None).values_list(
        "organization_id", "payment_failed_at"
    ):
        Organization.objects.filter(pk=organization_id).update(payment_failed_at=failed_at)


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0004_invitation"),
        ("billing", "0002_billing_state_and_outbox"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="payment_failed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(copy_from_billing, migrations.RunPython.noop),
    ]
