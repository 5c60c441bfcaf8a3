from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_billing_schedules(sender, using="default", **kwargs) -> None:
    """Create (or repair) the billing schedules by name after every migrate: exactly one of each."""
    from django_q.models import Schedule

    from billing.tasks import OUTBOX_SCHEDULE_NAME, RECONCILE_SCHEDULE_NAME

    for name, wanted in (
        (
            OUTBOX_SCHEDULE_NAME,
            {
                "func": "billing.tasks.usage_outbox_task",
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
            },
        ),
        (
            RECONCILE_SCHEDULE_NAME,
            {
                "func": "billing.tasks.usage_reconcile_task",
                "schedule_type": Schedule.MINUTES,
                "minutes": 60,
                "repeats": -1,
            },
        ),
    ):
        schedules = Schedule.objects.using(using).filter(name=name).order_by("pk")
        first = schedules.first()
        if first is None:
            Schedule.objects.using(using).create(name=name, **wanted)
            continue
        # `Schedule.name` is not unique in django-q2, so collapse any duplicates to the oldest one.
        schedules.exclude(pk=first.pk).delete()
        schedules.filter(pk=first.pk).update(**wanted)


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        post_migrate.connect(ensure_billing_schedules, sender=self, dispatch_uid="billing-schedules")
