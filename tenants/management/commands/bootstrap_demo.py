"""Idempotent development bootstrap used by `make run`.

Creates (once) a demo organization with an owner login and a staff login, and on every run
replaces the demo test key, because a key's secret can only be printed when it is created.
"""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants import services
from tenants.models import ApiKey, Organization, Plan

DEMO_KEY_NAME = "Demo test key (make run)"


class Command(BaseCommand):
    help = "Create or refresh the demo organization and print its login and a fresh test key."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Run even when DEBUG is off")
        parser.add_argument("--base-url", default=settings.PUBLIC_BASE_URL)

    @transaction.atomic
    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "bootstrap_demo sets well-known passwords; it runs only with DEBUG=1 (or --force)."
            )
        password = os.environ.get("DEMO_PASSWORD", "imagegate-demo")
        User = get_user_model()

        owner, _ = User.objects.get_or_create(username="demo", defaults={"email": "demo@imagegate.local"})
        owner.set_password(password)
        owner.save()
        admin, _ = User.objects.get_or_create(
            username="admin",
            defaults={"email": "admin@imagegate.local", "is_staff": True, "is_superuser": True},
        )
        admin.set_password(password)
        admin.save()

        organization = Organization.objects.filter(slug="demo").first()
        if organization is None:
            pro = Plan.objects.filter(code="pro").first()
            organization = services.organization_create(
                name="Demo Company", owner=owner, plan=pro, slug="demo"
            )
        services.membership_add(organization=organization, user=owner, role="owner")

        for old in ApiKey.objects.for_org(organization).filter(name=DEMO_KEY_NAME, revoked_at__isnull=True):
            services.api_key_revoke(api_key=old)
        _, raw = services.api_key_create(
            organization=organization,
            name=DEMO_KEY_NAME,
            mode=ApiKey.Mode.TEST,
            scopes=[ApiKey.Scope.GENERATE, ApiKey.Scope.READ],
            created_by=owner,
        )
        base = options["base_url"].rstrip("/")
        line = "=" * 72
        self.stdout.write(
            f"\n{line}\n"
            f"  Imagegate is starting at  {base}/\n"
            f"  Dashboard login:          demo / {password}\n"
            f"  Django admin:             {base}/admin/  (admin / {password})\n"
            f"  Test API key:             {raw}\n"
            f"  Try it:  curl -H 'Authorization: Bearer {raw}' {base}/v1/organization\n"
            f"{line}\n"
        )
