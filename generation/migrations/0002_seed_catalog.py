"""Seed the catalog with the facts known on 2026-11-24 (see ../shared/reference/).

- Imagen 4 (`:predict`): Google announced shutdown from 2026-08-17; successors are the Gemini image
  models. Kept as deprecated so pinned requests get a clear error (or migrate, if the tenant opted in).
- gemini-3.1-flash-image (`:generateContent`): fast = thinking MINIMAL, standard = thinking HIGH.
- gemini-3-pro-image: ultra.
Every tier also has a sandbox route, which test keys always use and which serves live keys until
Google credentials are configured (GEMINI_API_KEY, or a Vertex service account).
"""

from django.db import migrations

from generation.engine.dimensions import GEMINI_FLASH_DIMENSIONS, GEMINI_PRO_DIMENSIONS, IMAGEN_DIMENSIONS

SAFETY_LEVELS = ["block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"]
PERSON_GENERATION = ["dont_allow", "allow_adult", "allow_all"]
FORMATS = ["png", "jpeg", "webp"]  # webp (and any format the upstream cannot emit) is transcoded by us


def imagen_caps(resolutions):
    dims = {r: IMAGEN_DIMENSIONS[r] for r in resolutions}
    return {
        "aspect_ratios": list(dims["1K"]),
        "resolutions": resolutions,
        "max_images": 4,
        "max_images_per_call": 4,
        "output_formats": FORMATS,
        "seed": True,
        "negative_prompt": True,
        "safety_levels": SAFETY_LEVELS,
        "person_generation": PERSON_GENERATION,
        # Google's Gemini API refuses these on :predict; only Vertex AI accepts them.
        "vertex_only": ["seed", "negative_prompt"],
        "dimensions": dims,
    }


def gemini_caps(dimensions):
    return {
        "aspect_ratios": list(dimensions["1K"]),
        "resolutions": list(dimensions),
        "max_images": 4,
        "max_images_per_call": 1,  # one image per call: N images are N parallel calls
        "output_formats": FORMATS,
        "seed": True,
        "negative_prompt": False,
        "safety_levels": SAFETY_LEVELS,
        "person_generation": ["dont_allow", "allow_adult", "allow_all"],
        "vertex_only": ["person_generation"],
        "dimensions": dimensions,
    }


MODELS = [
    {
        "model_id": "gemini-3.1-flash-image",
        "display_name": "Gemini 3.1 Flash Image",
        "protocol": "generate_content",
        "capabilities": gemini_caps(GEMINI_FLASH_DIMENSIONS),
        "lifecycle": "active",
        "cost_per_image": {"512": "0.045", "1K": "0.067", "2K": "0.101", "4K": "0.151"},
        "token_prices": {"image_output": "60", "input": "0.5", "text_output": "3"},
    },
    {
        "model_id": "gemini-3-pro-image",
        "display_name": "Gemini 3 Pro Image",
        "protocol": "generate_content",
        "capabilities": gemini_caps(GEMINI_PRO_DIMENSIONS),
        "lifecycle": "active",
        "cost_per_image": {"1K": "0.134", "2K": "0.134", "4K": "0.24"},
        "token_prices": {"image_output": "120", "input": "2", "text_output": "12"},
    },
    {
        "model_id": "imagen-4.0-fast-generate-001",
        "display_name": "Imagen 4 Fast",
        "protocol": "predict",
        "capabilities": imagen_caps(["1K"]),
        "lifecycle": "deprecated",
        "shutdown_date": "2026-08-17",
        "successor": "gemini-3.1-flash-image",
        "cost_per_image": {"1K": "0.02"},
    },
    {
        "model_id": "imagen-4.0-generate-001",
        "display_name": "Imagen 4",
        "protocol": "predict",
        "capabilities": imagen_caps(["1K", "2K"]),
        "lifecycle": "deprecated",
        "shutdown_date": "2026-08-17",
        "successor": "gemini-3.1-flash-image",
        "cost_per_image": {"1K": "0.04", "2K": "0.04"},
    },
    {
        "model_id": "imagen-4.0-ultra-generate-001",
        "display_name": "Imagen 4 Ultra",
        "protocol": "predict",
        "capabilities": imagen_caps(["1K", "2K"]),
        "lifecycle": "deprecated",
        "shutdown_date": "2026-08-17",
        "successor": "gemini-3-pro-image",
        "cost_per_image": {"1K": "0.06", "2K": "0.06"},
    },
]

ACCOUNTS = [
    {
        "name": "sandbox",
        "kind": "sandbox",
        "max_concurrency": 256,
        "options": {"latency_ms": 800, "failure_rate": 0},
    },
    {
        "name": "gemini-api",
        "kind": "gemini_api",
        "credentials_ref": "env:GEMINI_API_KEY",
        "max_concurrency": 32,
    },
    {
        "name": "vertex-global",
        "kind": "vertex_ai",
        "region": "global",
        "credentials_ref": "envfile:GOOGLE_APPLICATION_CREDENTIALS",
        "max_concurrency": 32,
    },
]

# (tier, position, account, model, options)
ROUTES = [
    ("fast", 0, "sandbox", "gemini-3.1-flash-image", {"thinking_level": "MINIMAL"}),
    ("fast", 10, "gemini-api", "gemini-3.1-flash-image", {"thinking_level": "MINIMAL"}),
    ("fast", 20, "vertex-global", "gemini-3.1-flash-image", {"thinking_level": "MINIMAL"}),
    ("fast", 30, "gemini-api", "imagen-4.0-fast-generate-001", {}),
    ("standard", 0, "sandbox", "gemini-3.1-flash-image", {"thinking_level": "HIGH"}),
    ("standard", 10, "gemini-api", "gemini-3.1-flash-image", {"thinking_level": "HIGH"}),
    ("standard", 20, "vertex-global", "gemini-3.1-flash-image", {"thinking_level": "HIGH"}),
    ("standard", 30, "gemini-api", "imagen-4.0-generate-001", {}),
    ("ultra", 0, "sandbox", "gemini-3-pro-image", {}),
    ("ultra", 10, "gemini-api", "gemini-3-pro-image", {}),
    ("ultra", 20, "vertex-global", "gemini-3-pro-image", {}),
    ("ultra", 30, "gemini-api", "imagen-4.0-ultra-generate-001", {}),
]


def seed(apps, schema_editor):
    ProviderAccount = apps.get_model("generation", "ProviderAccount")
    UpstreamModel = apps.get_model("generation", "UpstreamModel")
    Route = apps.get_model("generation", "Route")
    models = {}
    for spec in MODELS:
        spec = dict(spec)
        spec.pop("successor", None)
        models[spec["model_id"]], _ = UpstreamModel.objects.update_or_create(
            model_id=spec["model_id"], defaults=spec
        )
    for spec in MODELS:
        if spec.get("successor"):
            UpstreamModel.objects.filter(model_id=spec["model_id"]).update(
                successor=models[spec["successor"]]
            )
    accounts = {}
    for spec in ACCOUNTS:
        accounts[spec["name"]], _ = ProviderAccount.objects.update_or_create(name=spec["name"], defaults=spec)
    for tier, position, account, model, options in ROUTES:
        Route.objects.update_or_create(
            tier=tier,
            account=accounts[account],
            model=models[model],
            defaults={"position": position, "options": options},
        )


class Migration(migrations.Migration):
    dependencies = [("generation", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
