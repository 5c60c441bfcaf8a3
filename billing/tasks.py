"""Scheduled billing tasks (django-q2). They only call a service; the schedule is created by
`billing.apps` after migrate, by name, so it exists exactly once."""

from billing.outbox import usage_outbox_process

OUTBOX_SCHEDULE_NAME = "billing: report usage to Stripe"


def usage_outbox_task() -> dict:
    """Every minute: report a batch of usage records to Stripe as meter events."""
    return usage_outbox_process().as_dict()
