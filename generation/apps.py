from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GenerationConfig(AppConfig):
    name = "generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from generation.webhooks.services import webhook_spend_threshold
        from tenants.limits import spend_threshold_hook_register

        _subscribe()
        post_spawn.connect(_start_runner, dispatch_uid="generation.start_runner")
        spend_threshold_hook_register(webhook_spend_threshold)
        post_migrate.connect(_ensure_schedules, sender=self, dispatch_uid="generation-schedules")


def _subscribe() -> None:
    """Every consumer of a generation event, in one place (see generation/events.py)."""
    from generation import events
    from generation.batches.services import batch_job_finished
    from generation.jobs.notifications import job_finished_notify
    from generation.webhooks.services import webhook_batch_finished, webhook_job_finished
    from generation.worker.tasks import enqueue_run_job, enqueue_webhook_delivery

    events.job_queued.subscribe(enqueue_run_job)
    # Inside the terminal transaction, in this order: the webhook delivery row is written with the
    # job; the waiter's notification and the batch's top-up run once that commits.
    events.job_finished.subscribe(webhook_job_finished)
    events.job_finished.subscribe(job_finished_notify)
    events.job_finished.subscribe(batch_job_finished)
    events.batch_finished.subscribe(webhook_batch_finished)
    events.webhook_delivery_due.subscribe(enqueue_webhook_delivery)


def _ensure_schedules(sender, using="default", **kwargs) -> None:
    """Create (or repair) each schedule by name after every migrate: exactly one of each."""
    from django_q.models import Schedule

    from generation.engine.catalog_sync import CATALOG_SYNC_SCHEDULE_NAME
    from generation.engine.lifecycle import SHUTDOWN_NOTICES_SCHEDULE_NAME
    from generation.files.tasks import FILES_SCHEDULE_NAME
    from generation.worker.tasks import WEBHOOK_SCHEDULE_NAME

    _ensure_schedule(
        using,
        WEBHOOK_SCHEDULE_NAME,
        {
            "func": "generation.worker.tasks.redrive_webhooks",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    _ensure_schedule(
        using,
        CATALOG_SYNC_SCHEDULE_NAME,
        {
            "func": "generation.engine.catalog_sync.catalog_sync_task",
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
        },
    )
    _ensure_schedule(
        using,
        SHUTDOWN_NOTICES_SCHEDULE_NAME,
        {
            "func": "generation.engine.lifecycle.shutdown_notices_task",
            "schedule_type": Schedule.DAILY,
            "repeats": -1,
        },
    )
    _ensure_schedule(
        using,
        FILES_SCHEDULE_NAME,
        {
            "func": "generation.files.tasks.expire_files",
            "schedule_type": Schedule.MINUTES,
            "minutes": 15,
            "repeats": -1,
        },
    )


def _ensure_schedule(using: str, name: str, wanted: dict) -> None:
    from django_q.models import Schedule

    schedules = Schedule.objects.using(using).filter(name=name).order_by("pk")
    first = schedules.first()
    if first is None:
        Schedule.objects.using(using).create(name=name, **wanted)
        return
    schedules.exclude(pk=first.pk).delete()
    schedules.filter(pk=first.pk).update(**wanted)


def _start_runner(sender, proc_name, **kwargs) -> None:
    """Start the job runner as soon as a django-q2 worker process spawns, so its reaper and lease
    renewal run even before the first task arrives (a redeploy must pick up orphaned jobs)."""
    from generation.worker.runner import get_runner

    get_runner()
