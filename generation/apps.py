from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GenerationConfig(AppConfig):
    name = "generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from generation.webhooks.services import webhook_spend_threshold
        from tenants.limits import spend_threshold_hook_register

        post_spawn.connect(_start_runner, dispatch_uid="generation.start_runner")
        spend_threshold_hook_register(webhook_spend_threshold)
        post_migrate.connect(_ensure_schedules, sender=self, dispatch_uid="generation-schedules")


def _ensure_schedules(sender, using="default", **kwargs) -> None:
    """Create (or repair) the webhook re-drive schedule by name after every migrate: exactly one."""
    from django_q.models import Schedule

    from generation.worker.tasks import WEBHOOK_SCHEDULE_NAME

    wanted = {
        "func": "generation.worker.tasks.redrive_webhooks",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
    }
    schedules = Schedule.objects.using(using).filter(name=WEBHOOK_SCHEDULE_NAME).order_by("pk")
    first = schedules.first()
    if first is None:
        Schedule.objects.using(using).create(name=WEBHOOK_SCHEDULE_NAME, **wanted)
        return
    schedules.exclude(pk=first.pk).delete()
    schedules.filter(pk=first.pk).update(**wanted)


def _start_runner(sender, proc_name, **kwargs) -> None:
    """Start the job runner as soon as a django-q2 worker process spawns, so its reaper and lease
    renewal run even before the first task arrives (a redeploy must pick up orphaned jobs)."""
    from generation.worker.runner import get_runner

    get_runner()
