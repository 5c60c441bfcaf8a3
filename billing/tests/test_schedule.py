from django_q.models import Schedule

from billing.apps import ensure_billing_schedules
from billing.tasks import OUTBOX_SCHEDULE_NAME


def test_the_outbox_runs_every_minute_from_exactly_one_schedule(db):
    ensure_billing_schedules(sender=None)
    ensure_billing_schedules(sender=None)

    schedule = Schedule.objects.get(name=OUTBOX_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        "billing.tasks.usage_outbox_task",
        Schedule.MINUTES,
        1,
        -1,
    )
    assert Schedule.objects.filter(func="billing.tasks.usage_outbox_task").count() == 1


def test_migrate_created_the_schedule(db):
    assert Schedule.objects.filter(name=OUTBOX_SCHEDULE_NAME).exists()


def test_duplicate_schedules_are_collapsed_to_one(db):
    Schedule.objects.create(name=OUTBOX_SCHEDULE_NAME, func="billing.tasks.usage_outbox_task", minutes=5)
    ensure_billing_schedules(sender=None)
    assert Schedule.objects.filter(name=OUTBOX_SCHEDULE_NAME).count() == 1
    assert Schedule.objects.get(name=OUTBOX_SCHEDULE_NAME).minutes == 1
