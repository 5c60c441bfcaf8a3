from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GenerationConfig(AppConfig):
    name = "generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        _subscribe()
        post_spawn.connect(_start_runner, dispatch_uid="generation.start_runner")
        post_migrate.connect(_ensure_schedules, sender=self, dispatch_uid="generation-schedules")


def _subscribe() -> None:
    """Every consumer of a generation event, in one place (see generation/events.py)."""
    from generation import events
    from generation.batches.services import batch_job_finished
    from generation.jobs.notifications import job_finished_notify
    from generation.webhooks.services import webhook_batch_finished, webhook_job_finished
    from generation.worker.tasks import enqueue_run_job, enqueue_webhook_delivery, ring_cancel

    events.job_queued.subscribe(enqueue_run_job)
    events.job_cancel_requested.subscribe(ring_cancel)
    # Inside the terminal transaction, in this order: the webhook delivery row is written with the
    # job; the waiter's notification and the batch's top-up run once that commits.
    events.job_finished.subscribe(webhook_job_finished)
    events.job_finished.subscribe(job_finished_notify)
    events.job_finished.subscribe(batch_job_finished)
    events.batch_finished.subscribe(webhook_batch_finished)
    events.webhook_delivery_due.subscribe(enqueue_webhook_delivery)


def _ensure_schedules(sender, using="default", **kwargs) -> None:
    """Create (or repair) the webhook re-drive schedule by name after every migrate: exactly one."""
    from django_q.models import Schedule

    from generation.worker.tasks import REAP_SCHEDULE_NAME, WEBHOOK_SCHEDULE_NAME

    for name, func in (
        (WEBHOOK_SCHEDULE_NAME, "generation.worker.tasks.redrive_webhooks"),
        (REAP_SCHEDULE_NAME, "generation.worker.tasks.reap_jobs"),
    ):
        wanted = {"func": func, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1}
        schedules = Schedule.objects.using(using).filter(name=name).order_by("pk")
        first = schedules.first()
        if first is None:
            Schedule.objects.using(using).create(name=name, **wanted)
            continue
        schedules.exclude(pk=first.pk).delete()
        schedules.filter(pk=first.pk).update(**wanted)


def _start_runner(sender, proc_name, **kwargs) -> None:
    """Start the job runner as soon as a django-q2 worker process spawns, so its reaper and lease
    renewal run even before the first task arrives (a redeploy must pick up orphaned jobs)."""
    from generation.worker.runner import get_runner

    get_runner(poll=True)
