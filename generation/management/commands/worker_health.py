"""Liveness of the worker tree on this machine, for supervisors: exit 0 when healthy, 1 when not.

python manage.py worker_health      # k8s livenessProbe exec / systemd ExecStartPost watchdog
"""

from django.core.management.base import BaseCommand, CommandError

from generation.jobs.liveness import worker_health


class Command(BaseCommand):
    help = "Fail (exit 1) when no job runner here makes progress while work is queued."

    def handle(self, *args, **options):
        health = worker_health()
        line = (
            f"{'ok' if health.ok else 'unhealthy'}: {health.reason} "
            f"(runners={health.runners} inflight={health.inflight} oldest_due_s={health.oldest_due_seconds})"
        )
        if not health.ok:
            raise CommandError(line)
        self.stdout.write(line)
