"""Create an organization, its owner and one API key; the key is printed once and never again."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants import services
from tenants.errors import ImagegateError
from tenants.models import ApiKey, Plan


class Command(BaseCommand):
    help = "Create an organization with an owner and an API key (printed once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Organization name")
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--owner-password", help="Set a password (otherwise the owner must reset it)")
        parser.add_argument("--plan", help="Plan code (default: the default plan)")
        parser.add_argument("--key-mode", choices=ApiKey.Mode.values, default=ApiKey.Mode.TEST)
        parser.add_argument("--key-name", default="Default key")

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        email = options["owner_email"].strip().lower()
        plan = None
        if options["plan"]:
            plan = Plan.objects.filter(code=options["plan"]).first()
            if plan is None:
                raise CommandError(
                    f"No plan {options['plan']!r}; have: {list(Plan.objects.values_list('code', flat=True))}"
                )
        owner = User.objects.filter(email__iexact=email).first()
        if owner is None:
            owner = User.objects.create_user(username=email, email=email, password=options["owner_password"])
        elif options["owner_password"]:
            raise CommandError(f"User {email} exists; refusing to change their password.")
        try:
            organization = services.organization_create(name=options["name"], owner=owner, plan=plan)
            _api_key, raw = services.api_key_create(
                organization=organization,
                name=options["key_name"],
                mode=options["key_mode"],
                scopes=[ApiKey.Scope.GENERATE, ApiKey.Scope.READ],
                created_by=owner,
            )
        except ImagegateError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Organization: {organization.name} ({organization.public_id}, plan {organization.plan.code})"
        )
        self.stdout.write(f"Owner:        {owner.email}")
        self.stdout.write(f"API key:      {raw}")
        self.stdout.write("              (shown once: store it now; only its hash is kept)")
