"""Seed the Free and Pro plans. Prices are per delivered image, in the plan's currency."""

from decimal import Decimal

from django.db import migrations

PLANS = [
    {
        "code": "free",
        "name": "Free",
        "is_default": True,
        "included_images_per_month": 25,
        "base_price_monthly": Decimal("0"),
        "price_fast": Decimal("0"),
        "price_standard": Decimal("0"),
        "price_ultra": Decimal("0"),
        "requests_per_minute": 20,
        "max_concurrent_jobs": 2,
        "allowed_tiers": ["fast"],
    },
    {
        "code": "pro",
        "name": "Pro",
        "is_default": False,
        "included_images_per_month": 10_000,
        "base_price_monthly": Decimal("0"),
        "price_fast": Decimal("0.0900"),
        "price_standard": Decimal("0.1200"),
        "price_ultra": Decimal("0.1900"),
        "requests_per_minute": 600,
        "max_concurrent_jobs": 32,
        "allowed_tiers": ["fast", "standard", "ultra"],
    },
]


def seed(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    for plan in PLANS:
        Plan.objects.update_or_create(code=plan["code"], defaults=plan)


def unseed(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    Plan.objects.filter(code__in=[p["code"] for p in PLANS], organizations__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
