"""Scheduled billing tasks (django-q2). They only call a service; the schedules are created by
`billing.apps` after migrate, by name, so each exists exactly once."""

from billing.outbox import usage_outbox_process
from billing.reconciliation import usage_reconcile

OUTBOX_SCHEDULE_NAME = "billing: report usage to Stripe"
RECONCILE_SCHEDULE_NAME = "billing: reconcile usage with Stripe"


def usage_outbox_task() -> dict:
    """Every minute: aggregate usage into meter reports and send them until nothing is due."""
    return usage_outbox_process().as_dict()


def usage_reconcile_task() -> dict:
    """Every hour: settle in-doubt reports from Stripe's summaries and audit recent days."""
    return usage_reconcile().as_dict()
