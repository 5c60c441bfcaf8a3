"""pytest plugin: catalog states for tests.

The seeded catalog follows Google's lineup (migration 0004: Lite and Nano Banana 2.1 for fast and
standard, gemini-3.1-flash-image deprecated with a past shutdown date). Tests written against the
earlier seed (0002: gemini-3.1-flash-image serving fast and standard, Imagen 4 deprecated with it as
successor) use `catalog_before_2026_10`, which puts the rows back the way 0002 left them: the same
facts as before, so their assertions stay as they were.
"""

from __future__ import annotations

import datetime

import pytest

from generation.engine.catalog import catalog_invalidate

FLASH = "gemini-3.1-flash-image"
ADDED_BY_0004 = ("gemini-3.1-flash-lite-image", "gemini-nano-banana-2.1")


def restore_catalog_before_2026_10() -> None:
    from generation.models import Route, UpstreamModel

    flash = UpstreamModel.objects.get(model_id=FLASH)
    UpstreamModel.objects.filter(pk=flash.pk).update(lifecycle="active", shutdown_date=None, successor=None)
    UpstreamModel.objects.filter(model_id__startswith="imagen-4.0-").update(
        lifecycle="deprecated", shutdown_date=datetime.date(2026, 8, 17)
    )
    UpstreamModel.objects.filter(
        model_id__in=["imagen-4.0-fast-generate-001", "imagen-4.0-generate-001"]
    ).update(successor=flash)
    Route.objects.filter(model__model_id__in=ADDED_BY_0004).update(enabled=False)
    for account, position in (("gemini-api", 10), ("vertex-global", 20)):
        Route.objects.filter(model=flash, account__name=account).update(position=position)
    catalog_invalidate()


@pytest.fixture
def catalog_before_2026_10(db, pro_plan):
    """The catalog as the 0002 seed left it (see the module docstring)."""
    restore_catalog_before_2026_10()
    yield
    catalog_invalidate()
