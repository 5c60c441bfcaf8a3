"""The seeded lineup of 2026-12 (migration 0004): which route serves what, what is a 400, the
lifecycle on both sides of a shutdown date (frozen clock), and GET /v1/models agreeing with the
seeded catalog and with the model table in the README."""

import datetime
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine

from generation.engine.catalog import catalog_invalidate, catalog_snapshot, route_plan
from generation.errors import ModelRetired
from generation.models import Route, UpstreamModel
from generation.params import GenerationParams
from tenants.errors import InvalidRequest

ALL = ["fast", "standard", "ultra"]
LITE = "gemini-3.1-flash-lite-image"
NB21 = "gemini-nano-banana-2.1"
PRO = "gemini-3-pro-image"
FLASH = "gemini-3.1-flash-image"
TODAY = datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.UTC)
ROOT = Path(__file__).resolve().parents[2]


def params(**overrides) -> GenerationParams:
    return GenerationParams(**overrides)


def plan(**kwargs):
    options: dict[str, Any] = {
        "livemode": True,
        "allowed_tiers": ALL,
        "fallback_policy": "deny",
        "auto_migrate_models": False,
    }
    options.update(kwargs)
    return route_plan(params=options.pop("params", params()), **options)


@pytest.fixture
def google_configured(pro_plan, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    catalog_invalidate()
    with time_machine.travel(TODAY, tick=False):
        yield


def labels(result) -> list[str]:
    return [r.label for r in result.primary]


def test_fast_is_lite_at_1k_then_nano_banana_2_1_at_minimal_thinking(google_configured):
    result = plan(tier="fast")
    assert labels(result) == [f"gemini-api/{LITE}", f"gemini-api/{NB21}"]
    assert [r.target.options["thinking_level"] for r in result.primary] == ["MINIMAL", "MINIMAL"]


@pytest.mark.parametrize("resolution", ["2K", "4K"])
def test_a_size_lite_cannot_serve_goes_to_the_route_that_can(google_configured, resolution):
    assert labels(plan(tier="fast", params=params(resolution=resolution))) == [f"gemini-api/{NB21}"]


@pytest.mark.parametrize("tier", ["fast", "standard"])
def test_512_is_a_400_naming_resolution_where_no_route_serves_it(google_configured, tier):
    with pytest.raises(InvalidRequest) as excinfo:
        plan(tier=tier, params=params(resolution="512"))
    assert excinfo.value.param == "resolution" and excinfo.value.status_code == 400
    assert "supported: 1K, 2K, 4K" in excinfo.value.message


def test_pinned_2_1_at_512_is_a_400_naming_resolution(google_configured):
    with pytest.raises(InvalidRequest) as excinfo:
        plan(model=NB21, params=params(resolution="512"))
    assert excinfo.value.param == "resolution"


def test_standard_is_2_1_at_high_thinking_and_ultra_is_3_pro(google_configured):
    standard = plan(tier="standard")
    assert labels(standard) == [f"gemini-api/{NB21}"]
    assert standard.primary[0].target.options["thinking_level"] == "HIGH"
    assert labels(plan(tier="ultra")) == [f"gemini-api/{PRO}"]


def test_test_keys_keep_one_sandbox_route_per_tier_with_the_tier_s_sizes(google_configured):
    for tier in ALL:
        result = plan(tier=tier, livemode=False)
        assert [r.account_kind for r in result.primary] == ["sandbox"], tier
    assert plan(tier="fast", livemode=False, params=params(resolution="4K")).primary
    with pytest.raises(InvalidRequest):
        plan(tier="fast", livemode=False, params=params(resolution="512"))


def test_gemini_3_1_flash_image_is_served_the_day_before_its_shutdown_and_retired_on_the_day(
    google_configured,
):
    with time_machine.travel(datetime.datetime(2026, 10, 28, 23, 59, tzinfo=datetime.UTC), tick=False):
        before = plan(model=FLASH)
        assert {r.model_id for r in before.primary} == {FLASH}
    with time_machine.travel(datetime.datetime(2026, 10, 29, 0, 1, tzinfo=datetime.UTC), tick=False):
        with pytest.raises(ModelRetired) as excinfo:
            plan(model=FLASH)
        assert "2026-10-29" in excinfo.value.message and NB21 in excinfo.value.message
        migrated = plan(model=FLASH, auto_migrate_models=True)
        assert migrated.model_id == NB21 and "successor" in migrated.notice
        assert {r.model_id for r in migrated.primary} == {NB21}


@pytest.mark.parametrize(
    "model_id, successor",
    [
        ("imagen-4.0-fast-generate-001", NB21),
        ("imagen-4.0-generate-001", NB21),
        ("imagen-4.0-ultra-generate-001", PRO),
        ("gemini-2.5-flash-image", NB21),  # no route at all: still "retired", not "unknown"
        ("gemini-3-pro-image-preview", PRO),
    ],
)
def test_retired_models_fail_clearly_or_migrate_to_their_successor(google_configured, model_id, successor):
    with pytest.raises(ModelRetired) as excinfo:
        plan(model=model_id)
    assert successor in excinfo.value.message
    assert plan(model=model_id, auto_migrate_models=True).model_id == successor


def test_token_prices_and_per_image_fallback(google_configured):
    route = next(r for r in catalog_snapshot().routes if r.label == f"gemini-api/{NB21}" and r.tier == "fast")
    usage = {
        "promptTokenCount": 10,
        "candidatesTokenCount": 1120,
        "imageTokenCount": 1120,
        "thoughtsTokenCount": 240,
    }
    # 1120 x $30 + 10 x $0.5 + 240 x $3 (thinking), per million tokens
    standard = route.upstream_cost("1K", usage, 1)
    assert standard == (Decimal(1120 * 30) + Decimal("5") + Decimal(240 * 3)) / Decimal(1_000_000)
    assert route.upstream_cost("1K", usage, 1, "flex") == standard / 2
    assert route.upstream_cost("1K", usage, 1, "priority") == standard * Decimal("1.8")
    assert route.upstream_cost("2K", None, 2) == Decimal("0.0504") * 2  # no usage: the per-image table


# --- GET /v1/models, the seeded catalog and the README's table agree ---------------------------
def _models_response(alice):
    with time_machine.travel(TODAY, tick=False):
        response = alice.client().get("/v1/models")
    assert response.status_code == 200
    return {m["id"]: m for m in response.json()["data"]}


def test_get_models_agrees_with_the_seeded_catalog(alice):
    served = _models_response(alice)
    today = TODAY.date()
    for model in UpstreamModel.objects.exclude(lifecycle="discovered").select_related("successor"):
        entry = served[model.model_id]
        lifecycle = "retired" if model.is_retired(today) else model.lifecycle
        assert entry["lifecycle"] == lifecycle, model.model_id
        assert entry["shutdown_date"] == (model.shutdown_date.isoformat() if model.shutdown_date else None)
        assert entry["successor"] == (model.successor.model_id if model.successor else None)
        tiers = set(
            Route.objects.filter(model=model, enabled=True, account__enabled=True).values_list(
                "tier", flat=True
            )
        )
        assert set(entry["tiers"]) == tiers, model.model_id
        if entry["capabilities"] is not None:
            assert entry["capabilities"]["resolutions"] == model.capabilities["resolutions"]
    assert served[LITE]["capabilities"]["resolutions"] == ["1K"]
    assert served[NB21]["capabilities"]["resolutions"] == ["1K", "2K", "4K"]
    assert served[FLASH]["lifecycle"] == "retired" and served[FLASH]["successor"] == NB21


def _documented_table() -> list[dict]:
    """The model table between the `<!-- model-table -->` markers of README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- model-table -->(.*?)<!-- /model-table -->", text, re.S)
    if not match:
        pytest.fail("no model table between <!-- model-table --> markers in README.md")
    rows = [line for line in match.group(1).strip().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table = []
    for line in rows[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        table.append(dict(zip(header, cells, strict=True)))
    return table


def test_the_documented_model_table_agrees_with_get_models(alice):
    served = _models_response(alice)
    table = _documented_table()
    assert {row["model"] for row in table} == set(served)
    for row in table:
        entry = served[row["model"]]
        assert row["lifecycle (2026-12-01)"] == entry["lifecycle"], row["model"]
        assert row["shutdown"] == (entry["shutdown_date"] or "–"), row["model"]
        assert row["successor"] == (entry["successor"] or "–"), row["model"]
        assert row["tiers"] == (", ".join(sorted(entry["tiers"])) or "–"), row["model"]
        sizes = ", ".join(entry["capabilities"]["resolutions"]) if entry["capabilities"] else "–"
        assert row["sizes"] == sizes, row["model"]


def test_catalog_sync_on_a_fresh_install_skips_unconfigured_accounts_quietly(pro_plan, monkeypatch):
    from generation.engine.catalog_sync import catalog_sync
    from generation.models import CatalogAlert

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    before = list(UpstreamModel.objects.values_list("model_id", "lifecycle"))
    report = catalog_sync()
    assert sorted(report.skipped) == ["gemini-api", "vertex-global"] and report.accounts == []
    assert not CatalogAlert.objects.exists()
    assert list(UpstreamModel.objects.values_list("model_id", "lifecycle")) == before


def test_a_known_model_whose_routes_are_all_off_is_not_called_unknown(google_configured):
    Route.objects.filter(model__model_id=LITE).update(enabled=False)
    catalog_invalidate()
    with pytest.raises(InvalidRequest) as excinfo:
        plan(model=LITE)
    assert excinfo.value.param == "model" and "Unknown" not in excinfo.value.message
    assert "No route can serve the model" in excinfo.value.message
