"""Output pixel sizes of Google's image models, per resolution and aspect ratio.

Imagen 4 (`:predict`): the documented 1K sizes; 2K doubles them.
Gemini 3 image models (`:generateContent`): Google's Gemini 3 Pro Image table for 1K; "512" halves
it, 2K and 4K double and quadruple it. The four extreme ratios (1:4, 4:1, 1:8, 8:1) exist only on
gemini-3.1-flash-image. These numbers seed the catalog (editable in admin) and drive both the
sandbox renderer and the fake upstream, so a test can check "16:9 came back 16:9-shaped".
"""

IMAGEN_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "3:4": (896, 1280),
    "4:3": (1280, 896),
    "9:16": (768, 1408),
    "16:9": (1408, 768),
}

GEMINI3_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}

GEMINI3_FLASH_EXTRA_1K: dict[str, tuple[int, int]] = {
    "1:4": (512, 2048),
    "4:1": (2048, 512),
    "1:8": (384, 3072),
    "8:1": (3072, 384),
}

_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}


def scaled(table: dict[str, tuple[int, int]], resolution: str) -> dict[str, list[int]]:
    factor = _SCALE[resolution]
    return {ratio: [int(w * factor), int(h * factor)] for ratio, (w, h) in table.items()}


def dimensions_table(
    base: dict[str, tuple[int, int]], resolutions: list[str]
) -> dict[str, dict[str, list[int]]]:
    """{"1K": {"1:1": [1024, 1024], ...}, "2K": {...}} for the given resolutions."""
    return {resolution: scaled(base, resolution) for resolution in resolutions}


IMAGEN_DIMENSIONS = dimensions_table(IMAGEN_1K, ["1K", "2K"])
GEMINI_FLASH_DIMENSIONS = dimensions_table(
    {**GEMINI3_1K, **GEMINI3_FLASH_EXTRA_1K}, ["512", "1K", "2K", "4K"]
)
GEMINI_PRO_DIMENSIONS = dimensions_table(GEMINI3_1K, ["1K", "2K", "4K"])
# gemini-3.1-flash-lite-image ("Nano Banana 2 Lite"): 1K only, 2K/4K are a 400. Its ratios are not
# published separately; it is the Nano Banana 2 family, so the 14 ratios (unverified, see NOTES).
GEMINI_LITE_DIMENSIONS = dimensions_table({**GEMINI3_1K, **GEMINI3_FLASH_EXTRA_1K}, ["1K"])
# gemini-nano-banana-2.1: 14 ratios, 1K/2K/4K; "512" is a 400 [3P].
GEMINI_NB21_DIMENSIONS = dimensions_table({**GEMINI3_1K, **GEMINI3_FLASH_EXTRA_1K}, ["1K", "2K", "4K"])


def dimensions_for_model(model: str) -> dict[str, dict[str, list[int]]]:
    """Best-known table for an upstream model id (used by the fake upstream)."""
    if model.startswith("imagen-"):
        return IMAGEN_DIMENSIONS
    if "flash-lite-image" in model:
        return GEMINI_LITE_DIMENSIONS
    if "nano-banana-2.1" in model:
        return GEMINI_NB21_DIMENSIONS
    if "pro" in model:
        return GEMINI_PRO_DIMENSIONS
    return GEMINI_FLASH_DIMENSIONS
