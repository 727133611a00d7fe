"""local-preview renders real, deterministic images of the requested size and format."""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
from PIL import Image

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.local_preview import LocalPreviewAdapter, requested_size
from app.adapters.registry import build_adapter, known_adapters
from app.catalog.schema import ProviderConfig
from app.errors import InvalidParameter, InvalidRequest
from app.images.codec import image_size, sniff_format
from app.upstream_client import UpstreamHttp

pytestmark = pytest.mark.anyio

PROVIDER = ProviderConfig(allow_private_network=True, adapter="local-preview")


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a lighthouse at dusk",
        n=1,
        output_format="png",
        sizing="pixel",
        size=None,
        params={"width": 320, "height": 200},
        seed=42,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def adapter(context: AdapterContext) -> LocalPreviewAdapter:
    return LocalPreviewAdapter(PROVIDER, context)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_renders_requested_size_and_format(adapter: LocalPreviewAdapter, fmt: str) -> None:
    result = await adapter.generate(make_request(output_format=fmt), upstream_model="preview")

    [image] = result.images
    assert sniff_format(image.data) == fmt
    assert image_size(image.data) == (320, 200)
    assert result.usage is None


@pytest.mark.parametrize(
    ("params", "size", "expected"),
    [
        ({"width": 64, "height": 48}, "1024x1024", (64, 48)),  # explicit fields win
        ({}, "1536x1024", (1536, 1024)),
        ({"aspect_ratio": "16:9"}, "1344x768", (1344, 768)),
        ({}, "auto_2K", (1024, 1024)),  # a preset without pixels
        ({}, None, (1024, 1024)),
    ],
)
def test_requested_size(
    params: dict[str, object], size: str | None, expected: tuple[int, int]
) -> None:
    assert requested_size(make_request(params=params, size=size)) == expected


def test_absurd_size_is_refused() -> None:
    with pytest.raises(InvalidParameter) as caught:
        requested_size(make_request(params={}, size="100000x10"))
    assert caught.value.param == "size"


async def test_same_seed_same_bytes_other_seed_other_bytes(adapter: LocalPreviewAdapter) -> None:
    first = await adapter.generate(make_request(), upstream_model="preview")
    again = await adapter.generate(make_request(), upstream_model="preview")
    other = await adapter.generate(make_request(seed=43), upstream_model="preview")

    assert first.images[0].data == again.images[0].data
    assert first.images[0].data != other.images[0].data


async def test_without_seed_two_calls_differ(adapter: LocalPreviewAdapter) -> None:
    one = await adapter.generate(make_request(seed=None), upstream_model="preview")
    two = await adapter.generate(make_request(seed=None), upstream_model="preview")

    assert one.images[0].data != two.images[0].data


async def test_n_images_are_distinct(adapter: LocalPreviewAdapter) -> None:
    result = await adapter.generate(make_request(n=4), upstream_model="preview")

    assert len(result.images) == 4
    assert len({image.data for image in result.images}) == 4
    assert all(image_size(image.data) == (320, 200) for image in result.images)


async def test_edit_uses_the_reference_image_as_background(adapter: LocalPreviewAdapter) -> None:
    reference = io.BytesIO()
    Image.new("RGB", (50, 50), (255, 0, 0)).save(reference, "JPEG")
    request = make_request(images=(reference.getvalue(),), output_format="png")

    result = await adapter.generate(request, upstream_model="preview")

    with Image.open(io.BytesIO(result.images[0].data)) as out:
        assert out.size == (320, 200)
        red, green, blue = out.convert("RGB").getpixel((319, 199))  # type: ignore[misc]
    # 70% red reference + 30% tint: red dominates whatever the tint is
    assert red >= 170
    assert red > green and red > blue


async def test_corrupt_reference_image_is_the_clients_error(adapter: LocalPreviewAdapter) -> None:
    truncated = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    with pytest.raises(InvalidRequest) as caught:
        await adapter.generate(make_request(images=(truncated,)), upstream_model="preview")
    assert caught.value.code == "INVALID_IMAGE"


async def test_latency_option_delays_the_answer(context: AdapterContext) -> None:
    slow = LocalPreviewAdapter(
        ProviderConfig(
            allow_private_network=True, adapter="local-preview", options={"latency_ms": 150}
        ),
        context,
    )
    started = time.perf_counter()
    await slow.generate(make_request(params={"width": 16, "height": 16}), upstream_model="p")
    assert time.perf_counter() - started >= 0.15


async def test_registry_builds_every_known_adapter(http: UpstreamHttp) -> None:
    context = AdapterContext(http=http, max_download_bytes=1024)
    assert known_adapters() >= {"local-preview", "openai"}
    assert isinstance(build_adapter(PROVIDER, context), LocalPreviewAdapter)
    for name in known_adapters():
        build_adapter(
            ProviderConfig(allow_private_network=True, adapter=name, api_key="k"), context
        )


async def test_registry_rejects_unknown_adapter_names(http: UpstreamHttp) -> None:
    context = AdapterContext(http=http, max_download_bytes=1024)
    with pytest.raises(ValueError, match=r"unknown adapter 'nope'.*local-preview, openai"):
        build_adapter(ProviderConfig(allow_private_network=True, adapter="nope"), context)


async def test_partial_images_come_before_the_result(adapter: LocalPreviewAdapter) -> None:
    partials: list[bytes] = []

    async def collect(data: bytes) -> None:
        partials.append(data)

    request = make_request(partial_images=2, output_format="webp")
    result = await adapter.generate(request, upstream_model="preview", on_partial=collect)

    assert len(partials) == 2
    assert all(image_size(p) == (320, 200) and sniff_format(p) == "webp" for p in partials)
    assert len({*partials, result.images[0].data}) == 3  # each preview differs, and the result
    # without a sink (a plain request) no preview is made
    plain = await adapter.generate(request, upstream_model="preview")
    assert plain.images[0].data == result.images[0].data
