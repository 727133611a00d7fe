"""The Stability AI adapter: its pure wire functions, then the class against a real HTTP mock."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import orjson
import pytest
from PIL import Image

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.stability import (
    StabilityAdapter,
    aspect_ratio,
    build_call,
    map_error,
    parse_response,
    stability_mask,
)
from app.catalog.schema import ProviderConfig
from app.errors import (
    ContentBlocked,
    GatewayError,
    InvalidParameter,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.images.codec import encode_b64, image_size, sniff_format
from tests.adapters.conftest import UPSTREAM_KEY, mock_provider
from tests.mocks.openai_upstream import _render
from tests.mocks.stability_upstream import MockStabilityUpstream

PNG = _render(96, 64, "png", "source")[0]
MASK = _render(96, 64, "png", "mask")[0]


def openai_mask() -> bytes:
    """OpenAI's convention: opaque where to keep, fully transparent where to edit."""
    image = Image.new("RGBA", (96, 64), (10, 200, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, 48, 32))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


PROVIDER = ProviderConfig(allow_private_network=True, adapter="stability", api_key=UPSTREAM_KEY)


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a lighthouse on a cliff",
        n=1,
        output_format="png",
        sizing="aspect",
        size="1024x576",
        params={"aspect_ratio": "16:9"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def form_of(request: ImageRequest, model: str = "ultra") -> dict[str, str]:
    call = build_call(request, upstream_model=model, provider=PROVIDER)
    return {name: part[1].decode() for name, part in call.parts if part[0] is None}


def files_of(request: ImageRequest, model: str = "ultra") -> dict[str, bytes]:
    call = build_call(request, upstream_model=model, provider=PROVIDER)
    return {name: part[1] for name, part in call.parts if part[0] is not None}


# -- build_call ----------------------------------------------------------------------------
def test_text_to_image_call() -> None:
    request = make_request(seed=42, output_format="webp", params={"aspect_ratio": "9:16"})
    call = build_call(request, upstream_model="ultra", provider=PROVIDER)

    assert call.url == "https://api.stability.ai/v2beta/stable-image/generate/ultra"
    assert call.headers == {"Accept": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}
    assert form_of(request) == {
        "prompt": "a lighthouse on a cliff",
        "seed": "42",
        "output_format": "webp",
        "aspect_ratio": "9:16",
    }
    assert files_of(request) == {}


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("core", "generate/core"),
        ("stable-image-ultra", "generate/ultra"),
        ("ULTRA", "generate/ultra"),
    ],
)
def test_endpoint_by_model(model: str, path: str) -> None:
    call = build_call(make_request(), upstream_model=model, provider=PROVIDER)
    assert call.url.endswith(f"/v2beta/stable-image/{path}")
    assert "model" not in form_of(make_request(), model)


def test_sd3_models_name_the_model_and_never_ask_for_webp() -> None:
    request = make_request(output_format="webp")
    call = build_call(request, upstream_model="sd3.5-large", provider=PROVIDER)

    assert call.url.endswith("/v2beta/stable-image/generate/sd3")
    form = form_of(request, "sd3.5-large")
    assert form["model"] == "sd3.5-large"
    assert form["output_format"] == "png"  # transcoded by the image service
    assert form_of(make_request(output_format="jpeg"), "sd3.5-large")["output_format"] == "jpeg"


def test_base_url_and_provider_headers() -> None:
    provider = ProviderConfig(
        adapter="stability",
        base_url="http://proxy.local/stability/",
        api_key="k-1234",
        headers={"stability-client-id": "image-gateway", "Accept": "application/json"},
    )
    call = build_call(make_request(), upstream_model="core", provider=provider)

    assert call.url == "http://proxy.local/stability/v2beta/stable-image/generate/core"
    assert call.headers["stability-client-id"] == "image-gateway"
    assert call.headers["Authorization"] == "Bearer k-1234"


def test_forwarded_fields_never_override_owned_ones() -> None:
    request = make_request(
        params={"aspect_ratio": "1:1", "style_preset": "anime", "negative_prompt": None},
        extra={"negative_prompt": "blur", "prompt": "hijack", "model": "x", "cfg_scale": 4.5},
    )
    assert form_of(request) == {
        "style_preset": "anime",
        "negative_prompt": "blur",
        "cfg_scale": "4.5",
        "prompt": "a lighthouse on a cliff",
        "output_format": "png",
        "aspect_ratio": "1:1",
    }


@pytest.mark.parametrize(
    ("params", "size", "expected"),
    [
        ({"aspect_ratio": "21:9"}, "1024x1024", "21:9"),  # the declared field wins
        ({"aspect_ratio": "4:3"}, None, "5:4"),  # a ratio Stability lacks: the nearest
        ({"aspect_ratio": "auto"}, "1920x1080", "16:9"),
        ({}, "1536x1024", "3:2"),
        ({}, "800x1000", "4:5"),
        ({}, "512x2048", "9:21"),
        ({}, None, None),
        ({}, "auto", None),
    ],
)
def test_aspect_ratio(params: dict[str, object], size: str | None, expected: str | None) -> None:
    assert aspect_ratio(make_request(params=params, size=size)) == expected


def test_image_to_image() -> None:
    request = make_request(images=(PNG,), params={"aspect_ratio": "16:9", "strength": 0.8})
    assert form_of(request) == {
        "prompt": "a lighthouse on a cliff",
        "output_format": "png",
        "strength": "0.8",
    }
    assert files_of(request) == {"image": PNG}
    sd3 = form_of(make_request(images=(PNG,)), "sd3.5-large")
    assert sd3["mode"] == "image-to-image"
    assert sd3["strength"] == "0.5"  # required by the API: a default when not given


def test_inpaint_with_mask() -> None:
    request = make_request(images=(PNG,), mask=MASK)
    call = build_call(request, upstream_model="sd3.5-large", provider=PROVIDER)

    assert call.url.endswith("/v2beta/stable-image/edit/inpaint")
    assert files_of(request, "sd3.5-large") == {"image": PNG, "mask": MASK}
    assert form_of(request, "sd3.5-large") == {
        "prompt": "a lighthouse on a cliff",
        "output_format": "png",
    }


def test_openai_mask_becomes_white_where_transparent() -> None:
    converted = Image.open(io.BytesIO(stability_mask(openai_mask())))

    assert converted.mode == "L" and converted.size == (96, 64)
    assert converted.getpixel((10, 10)) == 255  # transparent: inpaint
    assert converted.getpixel((80, 50)) == 0  # opaque: keep
    assert stability_mask(MASK) is MASK  # no alpha: already Stability-style


def test_unreadable_mask() -> None:
    with pytest.raises(InvalidParameter) as caught:
        stability_mask(b"not an image")
    assert caught.value.param == "mask"


def test_core_cannot_edit_without_a_mask() -> None:
    with pytest.raises(InvalidParameter) as caught:
        build_call(make_request(images=(PNG,)), upstream_model="core", provider=PROVIDER)
    assert caught.value.param == "image"


# -- parse_response / map_error ------------------------------------------------------------
JSON = httpx.Headers({"content-type": "application/json; type=image/png"})


def answer(**fields: object) -> bytes:
    return orjson.dumps({"image": encode_b64(PNG), "finish_reason": "SUCCESS", "seed": 1} | fields)


def test_parse_json_and_raw_answers() -> None:
    assert parse_response(answer(), JSON) == PNG
    assert parse_response(PNG, httpx.Headers({"content-type": "image/png"})) == PNG


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (answer(finish_reason="CONTENT_FILTERED"), JSON),
        (PNG, httpx.Headers({"content-type": "image/png", "finish-reason": "CONTENT_FILTERED"})),
    ],
)
def test_filtered_image_is_never_delivered(body: bytes, headers: httpx.Headers) -> None:
    with pytest.raises(ContentBlocked, match="content filter"):
        parse_response(body, headers)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"<html>oops</html>", JSON),
        (answer(image=None), JSON),
        (answer(image="@@@"), JSON),
        (b"not an image", httpx.Headers({"content-type": "image/png"})),
    ],
)
def test_unusable_answers(body: bytes, headers: httpx.Headers) -> None:
    with pytest.raises(UpstreamError):
        parse_response(body, headers)


def error_body(name: str, *errors: str) -> bytes:
    return orjson.dumps({"id": "abc", "name": name, "errors": list(errors)})


def mapped(status: int, body: bytes, **headers: str) -> GatewayError:
    return map_error(status, httpx.Headers(headers), body, host="api", api_key=UPSTREAM_KEY)


def test_error_mapping() -> None:
    blocked = mapped(403, error_body("content_moderation", "flagged"))
    assert type(blocked) is ContentBlocked and blocked.message == "flagged"

    for status in (401, 403):
        error = mapped(status, error_body("unauthorized", f"bad key {UPSTREAM_KEY}"))
        assert type(error) is UpstreamError and error.retryable
        assert error.message == f"api rejected the gateway's credentials (HTTP {status})"

    limited = mapped(429, error_body("rate_limit_exceeded", "slow down"), **{"retry-after": "3"})
    assert type(limited) is UpstreamUnavailable and limited.retry_after == 3.0

    for status in (400, 413, 422):
        rejected = mapped(status, error_body("bad_request", "prompt: too long", "seed: bad"))
        assert type(rejected) is UpstreamError and rejected.retryable is False
        assert "prompt: too long; seed: bad" in rejected.message

    failed = mapped(500, b"gateway exploded")
    assert type(failed) is UpstreamError and failed.retryable
    assert "gateway exploded" in failed.message
    assert type(mapped(504, b"")) is UpstreamTimeout


def test_error_messages_are_redacted() -> None:
    error = mapped(400, error_body("bad_request", f"key {UPSTREAM_KEY} is odd"))
    assert UPSTREAM_KEY not in error.message and "[redacted]" in error.message


# -- against the real-HTTP mock ------------------------------------------------------------
@pytest.fixture(scope="module")
def _stability_server() -> Iterator[MockStabilityUpstream]:
    with MockStabilityUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def stability(_stability_server: MockStabilityUpstream) -> MockStabilityUpstream:
    _stability_server.reset()
    return _stability_server


def make_adapter(
    upstream: MockStabilityUpstream, context: AdapterContext, **config: object
) -> StabilityAdapter:
    return StabilityAdapter(mock_provider("stability", upstream.base_url, **config), context)


@pytest.mark.anyio
async def test_generate_ultra(stability: MockStabilityUpstream, context: AdapterContext) -> None:
    request = make_request(output_format="webp", seed=5, params={"style_preset": "anime"})

    result = await make_adapter(stability, context).generate(request, upstream_model="ultra")

    [image] = result.images
    assert sniff_format(image.data) == "webp"
    assert image_size(image.data) == (256, 144)  # 16:9 from size="1024x576"
    [sent] = stability.requests
    assert sent.path == "/v2beta/stable-image/generate/ultra"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert sent.form == {
        "style_preset": "anime",
        "prompt": "a lighthouse on a cliff",
        "seed": "5",
        "output_format": "webp",
        "aspect_ratio": "16:9",
    }
    assert sent.files == {}


@pytest.mark.anyio
async def test_n_fans_out_with_distinct_seeds(
    stability: MockStabilityUpstream, context: AdapterContext
) -> None:
    result = await make_adapter(stability, context).generate(
        make_request(n=3, seed=10), upstream_model="sd3.5-large"
    )

    assert len(result.images) == 3
    assert len({i.data for i in result.images}) == 3
    assert sorted(r.form["seed"] for r in stability.requests) == ["10", "11", "12"]
    assert {r.form["model"] for r in stability.requests} == {"sd3.5-large"}


@pytest.mark.anyio
async def test_fan_out_returns_what_succeeded(
    stability: MockStabilityUpstream, context: AdapterContext
) -> None:
    stability.fail_next(500)

    result = await make_adapter(stability, context).generate(
        make_request(n=3), upstream_model="core"
    )

    assert len(result.images) == 2


@pytest.mark.anyio
async def test_image_to_image_keeps_the_input_size(
    stability: MockStabilityUpstream, context: AdapterContext
) -> None:
    request = make_request(images=(PNG,), params={"strength": 0.3}, output_format="jpeg")

    result = await make_adapter(stability, context).generate(request, upstream_model="sd3.5-large")

    assert image_size(result.images[0].data) == (96, 64)
    [sent] = stability.requests
    assert sent.files == {"image": [PNG]}
    assert sent.form["mode"] == "image-to-image" and sent.form["strength"] == "0.3"


@pytest.mark.anyio
async def test_inpaint(stability: MockStabilityUpstream, context: AdapterContext) -> None:
    request = make_request(images=(PNG,), mask=openai_mask(), n=2)

    result = await make_adapter(stability, context).generate(request, upstream_model="ultra")

    assert [image_size(i.data) for i in result.images] == [(96, 64), (96, 64)]
    sent = stability.requests[0]
    assert sent.path == "/v2beta/stable-image/edit/inpaint"
    assert sent.files["image"] == [PNG]
    [mask] = sent.files["mask"]
    assert Image.open(io.BytesIO(mask)).mode == "L"  # Stability's grayscale convention


@pytest.mark.anyio
@pytest.mark.parametrize("prompt", ["BLOCKME please", "FILTERME please"])
async def test_moderation_is_content_blocked(
    stability: MockStabilityUpstream, context: AdapterContext, prompt: str
) -> None:
    with pytest.raises(ContentBlocked) as caught:
        await make_adapter(stability, context).generate(
            make_request(prompt=prompt, n=2), upstream_model="ultra"
        )
    assert caught.value.status == 400
    assert caught.value.code == "CONTENT_BLOCKED"


@pytest.mark.anyio
async def test_wrong_credentials_never_echo_any_key(
    stability: MockStabilityUpstream, context: AdapterContext
) -> None:
    wrong = "sk-wrong-key-ABCDEFGHIJKLMNOP"
    with pytest.raises(UpstreamError) as caught:
        await make_adapter(stability, context, api_key=wrong).generate(
            make_request(), upstream_model="ultra"
        )
    assert type(caught.value) is UpstreamError and caught.value.retryable
    assert "rejected the gateway's credentials (HTTP 401)" in caught.value.message
    assert "ABCDEFGH" not in f"{caught.value} {caught.value.body()}"


@pytest.mark.anyio
async def test_rejected_request_is_not_retryable(
    stability: MockStabilityUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError, match="prompt: must be 1 to 10000") as caught:
        await make_adapter(stability, context).generate(
            make_request(prompt="x" * 10001), upstream_model="core"
        )
    assert caught.value.retryable is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (429, {"retry-after": "7"}, UpstreamUnavailable, 7.0),
        (503, {}, UpstreamUnavailable, None),
        (500, {}, UpstreamError, None),
    ],
)
async def test_server_side_failures(
    stability: MockStabilityUpstream,
    context: AdapterContext,
    status: int,
    headers: dict[str, str],
    expected: type[UpstreamError],
    retry_after: float | None,
) -> None:
    stability.fail_next(status, headers=headers)

    with pytest.raises(expected) as caught:
        await make_adapter(stability, context).generate(make_request(), upstream_model="ultra")
    assert type(caught.value) is expected
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after


@pytest.mark.anyio
async def test_no_error_message_carries_the_key(
    stability: MockStabilityUpstream, context: AdapterContext
) -> None:
    stability.fail_next(500, {"id": "x", "name": "oops", "errors": [f"Bearer {UPSTREAM_KEY}"]})

    with pytest.raises(UpstreamError) as caught:
        await make_adapter(stability, context).generate(make_request(), upstream_model="ultra")
    rendered = f"{caught.value} {caught.value.body()}"
    assert "SECRET" not in rendered and "[redacted]" in rendered


@pytest.mark.anyio
async def test_timeout(stability: MockStabilityUpstream, context: AdapterContext) -> None:
    stability.latency_s = 3
    started = time.perf_counter()

    with pytest.raises(UpstreamTimeout, match=r"within 0\.2 s"):
        await make_adapter(stability, context, timeout_s=0.2).generate(
            make_request(n=2), upstream_model="ultra"
        )
    assert time.perf_counter() - started < 2
