from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        post_spawn.connect(_start_runner, dispatch_uid="generation.start_runner")


def _start_runner(sender, proc_name, **kwargs) -> None:
    """Start the job runner as soon as a django-q2 worker process spawns, so its reaper and lease
    renewal run even before the first task arrives (a redeploy must pick up orphaned jobs)."""
    from generation.runner import get_runner

    get_runner()
