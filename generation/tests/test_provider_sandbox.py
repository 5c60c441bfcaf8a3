"""The sandbox provider renders real, deterministic images locally; and provider_for picks it."""

import asyncio
import io
import time

import pytest
from PIL import Image

from generation.engine.dimensions import GEMINI_FLASH_DIMENSIONS, IMAGEN_DIMENSIONS
from generation.engine.providers import generate_content, predict, provider_for, sandbox
from generation.engine.providers.base import ProviderRequest, Target, UpstreamBadRequest, UpstreamServerError

pytestmark = pytest.mark.anyio


def sandbox_target(**options) -> Target:
    return Target(
        kind="sandbox",
        protocol="sandbox",
        base_url="",
        model="sandbox-flash",
        options=options,
        dimensions=GEMINI_FLASH_DIMENSIONS,
    )


async def generate(request: ProviderRequest, **options):
    return await sandbox.generate(None, sandbox_target(**options), request)


def decoded(image) -> Image.Image:
    return Image.open(io.BytesIO(image.data))


async def test_same_inputs_give_byte_identical_images():
    request = ProviderRequest(prompt="a lighthouse at dusk", count=2, seed=1234)

    first, second = await generate(request), await generate(request)

    assert [i.data for i in first.images] == [i.data for i in second.images]
    assert first.images[0].data != first.images[1].data  # the images of one request differ


async def test_seed_and_prompt_change_the_image():
    base = (await generate(ProviderRequest(prompt="a lighthouse", count=1, seed=1))).images[0].data
    other_seed = (await generate(ProviderRequest(prompt="a lighthouse", count=1, seed=2))).images[0].data
    other_prompt = (await generate(ProviderRequest(prompt="a harbour", count=1, seed=1))).images[0].data

    assert len({base, other_seed, other_prompt}) == 3


async def test_without_a_seed_the_prompt_decides():
    request = ProviderRequest(prompt="a lighthouse", count=1)

    first, second = await generate(request), await generate(request)

    assert first.images[0].data == second.images[0].data


@pytest.mark.parametrize("aspect_ratio", list(GEMINI_FLASH_DIMENSIONS["512"]))
async def test_every_aspect_ratio_has_the_route_size(aspect_ratio):
    result = await generate(
        ProviderRequest(prompt="a map", count=1, aspect_ratio=aspect_ratio, resolution="512")
    )

    image = decoded(result.images[0])
    assert list(image.size) == GEMINI_FLASH_DIMENSIONS["512"][aspect_ratio]
    assert image.format == "PNG" and result.images[0].mime_type == "image/png"


async def test_sizes_come_from_the_target_not_a_built_in_table():
    target = Target(kind="sandbox", protocol="predict", base_url="", model="m", dimensions=IMAGEN_DIMENSIONS)

    result = await sandbox.generate(None, target, ProviderRequest(prompt="a", count=1, aspect_ratio="16:9"))

    assert decoded(result.images[0]).size == (1408, 768)


@pytest.mark.parametrize(
    ("output_format", "pil_format", "mime_type"),
    [("jpeg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp")],
)
async def test_output_formats(output_format, pil_format, mime_type):
    result = await generate(ProviderRequest(prompt="a fox", count=1, output_format=output_format))

    assert decoded(result.images[0]).format == pil_format
    assert result.images[0].mime_type == mime_type


async def test_compression_quality_is_honoured():
    def request(quality: int) -> ProviderRequest:
        return ProviderRequest(
            prompt="a fox", count=1, seed=3, output_format="jpeg", compression_quality=quality
        )

    low, high = await generate(request(10)), await generate(request(95))

    assert len(low.images[0].data) < len(high.images[0].data)


async def test_unknown_size_is_a_bad_request():
    with pytest.raises(UpstreamBadRequest):
        await generate(ProviderRequest(prompt="a", count=1, resolution="8K"))


async def test_filtered_hook_filters_the_last_image():
    result = await generate(ProviderRequest(prompt="a fox [filtered]", count=3))

    assert [i.filtered for i in result.images] == [False, False, True]
    assert result.images[2].filter_reason == "sandbox: filtered on request" and result.images[2].data is None
    assert result.missing == 0


async def test_fail_hook_raises():
    with pytest.raises(UpstreamServerError):
        await generate(ProviderRequest(prompt="a fox [fail]", count=1))


async def test_latency_option():
    started = time.monotonic()
    await generate(ProviderRequest(prompt="a", count=1, resolution="512"), latency_ms=300)

    assert time.monotonic() - started >= 0.3


async def test_failure_rate_option():
    request = ProviderRequest(prompt="a", count=1, resolution="512")
    for _ in range(5):
        with pytest.raises(UpstreamServerError):
            await generate(request, failure_rate=1.0)
    results = [await generate(request, failure_rate=0.0) for _ in range(5)]

    assert all(len(r.images) == 1 for r in results)


async def test_rendering_does_not_block_the_event_loop():
    request = ProviderRequest(prompt="a lighthouse", count=2, resolution="4K", output_format="webp")
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await generate(request)
    done = True
    await task
    # Rendering inline would starve the loop until it finished (one tick at most); rendered in
    # threads, the loop keeps ticking throughout. Counting ticks, not timing them, keeps this
    # independent of machine load.
    assert ticks >= 5


def test_provider_for_picks_by_kind_then_protocol():
    def target(kind: str, protocol: str) -> Target:
        return Target(kind=kind, protocol=protocol, base_url="", model="m")

    assert provider_for(target("sandbox", "generate_content")) is sandbox.generate
    assert provider_for(target("gemini_api", "predict")) is predict.generate
    assert provider_for(target("vertex_ai", "generate_content")) is generate_content.generate
    with pytest.raises(ValueError):
        provider_for(target("vertex_ai", "carrier_pigeon"))
