"""`manage.py catalog_sync`: reconcile the catalog with every enabled account's models.list
(also scheduled daily, and runnable from the admin's provider accounts page)."""

from django.core.management.base import BaseCommand, CommandError

from generation.engine.catalog_sync import catalog_sync
from generation.models import ProviderAccount


class Command(BaseCommand):
    help = "List models from each enabled Google provider account; retire vanished ones, record new ones."

    def add_arguments(self, parser):
        parser.add_argument("--account", action="append", help="only this account (by name); repeatable")

    def handle(self, *args, **options):
        accounts = None
        if options["account"]:
            accounts = list(ProviderAccount.objects.filter(name__in=options["account"], enabled=True))
            unknown = set(options["account"]) - {a.name for a in accounts}
            if unknown:
                raise CommandError(f"no enabled provider account named {', '.join(sorted(unknown))}")
        report = catalog_sync(accounts=accounts)
        self.stdout.write(report.summary())
        if report.failed and not report.accounts:
            raise CommandError(
                "every account failed: " + "; ".join(f"{k}: {v}" for k, v in report.failed.items())
            )
