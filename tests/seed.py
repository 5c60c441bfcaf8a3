"""Re-apply the seed data migrations (plans, catalog). Transactional tests flush every table after
they run, which would otherwise leave later tests without the rows the migrations created."""

import importlib

from django.apps import apps

_SEEDS = [
    "tenants.migrations.0002_seed_plans",
    "generation.migrations.0002_seed_catalog",
    "generation.migrations.0004_upstream_lineup",
    "generation.migrations.0005_files_inputs",
]


def ensure_seed_data() -> None:
    from tenants.models import Plan

    if Plan.objects.filter(code="pro").exists():
        return
    for module in _SEEDS:
        importlib.import_module(module).seed(apps, None)
