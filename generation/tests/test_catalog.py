import datetime
from typing import Any

import pytest
import time_machine

from generation.engine.catalog import catalog_invalidate, route_plan
from generation.engine.credentials import account_credentials
from generation.errors import ModelRetired
from generation.models import ProviderAccount, UpstreamModel
from generation.params import GenerationParams
from tenants.errors import InvalidRequest, PermissionDenied

ALL = ["fast", "standard", "ultra"]
# Written against the 0002 seed (gemini-3.1-flash-image serving fast and standard, Imagen 4 with it
# as successor); the 0004 lineup is tested in test_lineup.py. See tests/catalogs.py.
pytestmark = pytest.mark.usefixtures("catalog_before_2026_10")


def params(**overrides) -> GenerationParams:
    return GenerationParams(**overrides)


def plan(**kwargs):
    options: dict[str, Any] = {
        "livemode": True,
        "allowed_tiers": ALL,
        "fallback_policy": "allow",
        "auto_migrate_models": False,
    }
    options.update(kwargs)
    return route_plan(params=options.pop("params", params()), **options)


@pytest.fixture
def google_configured(pro_plan, monkeypatch):
    """Credentials for the seeded Gemini API account, as an operator would configure them."""
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    catalog_invalidate()


def test_fresh_install_routes_every_tier_to_the_sandbox(pro_plan):
    for tier in ALL:
        result = plan(tier=tier)
        assert [r.account_kind for r in result.primary] == ["sandbox"]
        assert result.tier == tier


def test_fast_falls_back_to_standard_unless_denied(pro_plan):
    assert [r.tier for r in plan(tier="fast").fallback] == ["standard"]
    assert plan(tier="fast", fallback_policy="deny").fallback == []
    assert plan(tier="ultra").fallback == []


def test_live_keys_use_google_once_configured_but_test_keys_never(google_configured):
    live = plan(tier="fast")
    assert [r.label for r in live.primary] == ["gemini-api/gemini-3.1-flash-image"]
    assert live.primary[0].target.credentials.api_key == "test-key"
    assert live.primary[0].target.options["thinking_level"] == "MINIMAL"
    assert plan(tier="standard").primary[0].target.options["thinking_level"] == "HIGH"
    test = plan(tier="fast", livemode=False)
    assert [r.account_kind for r in test.primary] == ["sandbox"]


def test_retired_imagen_routes_are_not_used(google_configured):
    labels = [r.label for r in plan(tier="fast").primary]
    assert "gemini-api/imagen-4.0-fast-generate-001" not in labels


@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"resolution": "512", "_tier": "ultra"}, "resolution"),
        ({"count": 5}, "count"),
        ({"negative_prompt": "blurry"}, "negative_prompt"),
        ({"output_format": "gif"}, "output_format"),
    ],
)
def test_a_parameter_no_route_can_honour_is_a_400_naming_it(pro_plan, overrides, param):
    tier = overrides.pop("_tier", "fast")
    with pytest.raises(InvalidRequest) as excinfo:
        plan(tier=tier, params=params(**overrides))
    assert excinfo.value.param == param
    assert excinfo.value.status_code == 400


def test_gemini_api_cannot_honour_person_generation_but_the_sandbox_mirror_can(google_configured):
    with pytest.raises(InvalidRequest) as excinfo:
        plan(tier="fast", params=params(person_generation="allow_adult"))
    assert excinfo.value.param == "person_generation"
    assert plan(tier="fast", livemode=False, params=params(person_generation="allow_adult")).primary


def test_tier_outside_the_plan_is_403(pro_plan):
    with pytest.raises(PermissionDenied) as excinfo:
        plan(tier="ultra", allowed_tiers=["fast"])
    assert excinfo.value.param == "tier"


def test_fallback_is_skipped_when_billed_as_served_and_plan_lacks_the_tier(pro_plan):
    assert plan(tier="fast", allowed_tiers=["fast"], fallback_policy="allow_billed_as_served").fallback == []
    assert plan(tier="fast", allowed_tiers=["fast"], fallback_policy="allow").fallback


def test_tier_aliases_as_model(pro_plan):
    assert plan(model="imagen-4-fast").tier == "fast"
    assert plan(model="imagen-4-ultra").tier == "ultra"
    with pytest.raises(InvalidRequest) as excinfo:
        plan(model="imagen-4-ultra", tier="fast")
    assert excinfo.value.param == "tier"


def test_unknown_model_is_400(pro_plan):
    with pytest.raises(InvalidRequest) as excinfo:
        plan(model="dall-e-3")
    assert excinfo.value.param == "model"
    assert "gemini-3.1-flash-image" in excinfo.value.message


@time_machine.travel(datetime.datetime(2026, 8, 17, 0, 1, tzinfo=datetime.UTC), tick=False)
def test_pinned_retired_model_fails_clearly_or_migrates_when_opted_in(google_configured):
    """On its shutdown day (frozen clock: not the wall clock's say), and the day before served."""
    with time_machine.travel(datetime.datetime(2026, 8, 16, 23, 59, tzinfo=datetime.UTC), tick=False):
        served = plan(model="imagen-4.0-fast-generate-001")
        assert served.model_id == "imagen-4.0-fast-generate-001" and served.notice == ""
    with pytest.raises(ModelRetired) as excinfo:
        plan(model="imagen-4.0-fast-generate-001")
    assert excinfo.value.code == "model_retired"
    assert "2026-08-17" in excinfo.value.message and "gemini-3.1-flash-image" in excinfo.value.message
    migrated = plan(model="imagen-4.0-fast-generate-001", auto_migrate_models=True)
    assert migrated.model_id == "gemini-3.1-flash-image"
    assert migrated.tier == "fast"
    assert "successor" in migrated.notice
    assert migrated.fallback == []  # a pinned model is never swapped for another tier


def test_pinned_active_model(google_configured):
    result = plan(model="gemini-3-pro-image")
    assert result.tier == "ultra"
    assert {r.model_id for r in result.primary} == {"gemini-3-pro-image"}


def test_capabilities_follow_admin_edits(pro_plan):
    model = UpstreamModel.objects.get(model_id="gemini-3.1-flash-image")
    model.capabilities = {**model.capabilities, "aspect_ratios": ["1:1"]}
    model.save()
    catalog_invalidate()
    with pytest.raises(InvalidRequest):
        plan(tier="fast", params=params(aspect_ratio="16:9"))


def test_vertex_credentials_from_a_secret_file(pro_plan, tmp_path, monkeypatch):
    key_file = tmp_path / "sa.json"
    key_file.write_text('{"type": "service_account", "project_id": "proj-1", "client_email": "x@y"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    catalog_invalidate()
    vertex = ProviderAccount.objects.get(name="vertex-global")
    credentials = account_credentials(vertex)
    assert credentials.service_account_info["client_email"] == "x@y"
    assert credentials.project == "proj-1"
    labels = [r.label for r in plan(tier="fast").primary]
    assert labels == ["vertex-global/gemini-3.1-flash-image"]


def test_auto_migration_to_a_successor_without_routes_is_a_clear_400(pro_plan):
    from generation.models import Route

    Route.objects.filter(model__model_id="gemini-3.1-flash-image").delete()
    catalog_invalidate()
    with pytest.raises(ModelRetired) as excinfo:
        plan(model="imagen-4.0-fast-generate-001", auto_migrate_models=True)
    assert excinfo.value.param == "model" and "is not served" in excinfo.value.message
