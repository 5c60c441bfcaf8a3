"""`manage.py stripe_sync`: create or update the Stripe product, meters and prices; safe to re-run."""

from django.core.management.base import BaseCommand, CommandError

from billing import errors, stripe_client
from billing.catalog import stripe_catalog_sync


class Command(BaseCommand):
    help = (
        "Create or update, idempotently, the Stripe product, one meter per tier and each paid plan's prices."
    )

    def handle(self, *args, **options):
        if not stripe_client.is_configured():
            raise CommandError("STRIPE_SECRET_KEY is not set: billing runs ledger-only, nothing to sync.")
        try:
            report = stripe_catalog_sync()
        except errors.PaymentProviderError as exc:
            raise CommandError(f"Stripe sync failed: {exc.message}") from exc
        for label, items in (("created", report.created), ("updated", report.updated)):
            for item in items:
                self.stdout.write(f"{label}: {item}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Stripe catalog in sync: {len(report.created)} created, {len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged."
            )
        )
