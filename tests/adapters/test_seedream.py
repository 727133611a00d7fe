"""The Seedream adapter: its pure wire functions, then the class against a real HTTP server
speaking BytePlus ModelArk's image generation API (over both client transports)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import orjson
import pytest
from PIL import Image

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.seedream import (
    SeedreamAdapter,
    batch_size,
    build_call,
    is_moderation,
    map_error,
    parse_response,
    seedream_size,
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
from app.images.codec import image_size, sniff_format
from tests.adapters.conftest import UPSTREAM_KEY, mock_provider
from tests.mocks.seedream_upstream import MockSeedreamUpstream
from tests.support.processes import free_port

MODEL = "seedream-4-0-250828"
PROVIDER = ProviderConfig(allow_private_network=True, adapter="seedream", api_key=UPSTREAM_KEY)


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a red fox in snow",
        n=1,
        output_format="png",
        sizing="preset",
        size="1280x720",
        params={"image_size": "1280x720"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def png(width: int = 32, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


# -- pure: build_call ----------------------------------------------------------------------
def test_build_call_generation() -> None:
    call = build_call(make_request(), upstream_model=MODEL, provider=PROVIDER)

    assert call.url == "https://ark.ap-southeast.bytepluses.com/api/v3/images/generations"
    assert call.headers == {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    assert call.json == {
        "model": MODEL,
        "prompt": "a red fox in snow",
        "size": "1280x720",
        "response_format": "b64_json",
        "watermark": False,
    }


def test_build_call_forwards_fields_under_its_own() -> None:
    provider = ProviderConfig(
        adapter="seedream",
        base_url="https://ark.eu-west.bytepluses.com/api/v3/",
        api_key="k",
        headers={"X-Trace": "t", "Authorization": "Bearer override"},
    )
    request = make_request(
        seed=7,
        user="end-user",
        params={"image_size": "2K", "style": None},
        extra={
            "watermark": True,
            "optimize_prompt_options": {"mode": "fast"},
            "model": "hijack",
            "response_format": "url",
            "stream": True,
            "sequential_image_generation": "auto",
            "width": 5,
        },
    )

    call = build_call(request, upstream_model=MODEL, provider=provider)

    assert call.url == "https://ark.eu-west.bytepluses.com/api/v3/images/generations"
    assert call.headers == {"Authorization": "Bearer override", "X-Trace": "t"}
    assert call.json == {
        "model": MODEL,
        "prompt": "a red fox in snow",
        "size": "1280x720",
        "seed": 7,
        "response_format": "b64_json",
        "watermark": True,
        "optimize_prompt_options": {"mode": "fast"},
    }


def test_build_call_without_key_sends_no_authorization() -> None:
    call = build_call(
        make_request(),
        upstream_model=MODEL,
        provider=ProviderConfig(allow_private_network=True, adapter="seedream"),
    )
    assert call.headers == {}


def test_build_call_reference_images_as_data_uris() -> None:
    one, two = png(), b"\xff\xd8\xff" + b"\x00" * 16
    single = build_call(make_request(images=(one,)), upstream_model=MODEL, provider=PROVIDER)
    double = build_call(make_request(images=(one, two)), upstream_model=MODEL, provider=PROVIDER)

    assert single.json is not None and double.json is not None
    assert single.json["image"] == "data:image/png;base64," + base64.b64encode(one).decode()
    assert [uri.split(",")[0] for uri in double.json["image"]] == [
        "data:image/png;base64",
        "data:image/jpeg;base64",
    ]


def test_build_call_batch() -> None:
    call = build_call(make_request(n=3), upstream_model=MODEL, provider=PROVIDER, max_images=3)
    assert call.json is not None
    assert call.json["sequential_image_generation"] == "auto"
    assert call.json["sequential_image_generation_options"] == {"max_images": 3}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"size": "2K"}, "2K"),  # preset
        ({"size": "2304x1728"}, "2304x1728"),  # preset WxH or pixel
        ({"size": None, "params": {"resolution": "4K", "aspect_ratio": "auto"}}, "4K"),  # tier
        ({"size": "auto", "params": {"image_size": "auto"}}, None),
        ({"size": None, "params": {}}, None),
    ],
)
def test_seedream_size(changes: dict[str, object], expected: str | None) -> None:
    assert seedream_size(make_request(**changes)) == expected


@pytest.mark.parametrize(
    ("n", "references", "mode", "expected"),
    [(3, 0, "fan_out", 1), (3, 0, "batch", 3), (4, 13, "batch", 2), (4, 14, "batch", 1)],
)
def test_batch_size(n: int, references: int, mode: str, expected: int) -> None:
    request = make_request(n=n, images=(b"x",) * references)
    assert batch_size(request, mode) == expected  # type: ignore[arg-type]


# -- pure: parse_response / map_error ------------------------------------------------------
def test_parse_b64_urls_and_usage() -> None:
    body = orjson.dumps(
        {
            "model": MODEL,
            "created": 1757323224,
            "data": [
                {"b64_json": base64.b64encode(b"img").decode(), "size": "1280x720"},
                {"url": "https://cdn.example/1.jpeg", "size": "1280x720"},
                {"error": {"code": "OutputImageSensitiveContentDetected", "message": "no"}},
            ],
            "usage": {"generated_images": 2, "output_tokens": 7200, "total_tokens": 7200},
        }
    )

    parsed = parse_response(body, api_key=UPSTREAM_KEY)

    assert [(i.data, i.url) for i in parsed.images] == [
        (b"img", None),
        (None, "https://cdn.example/1.jpeg"),
    ]
    assert parsed.usage is not None
    assert (parsed.usage.output_tokens, parsed.usage.total_tokens) == (7200, 7200)


@pytest.mark.parametrize(
    ("body", "expected", "message"),
    [
        (
            {"data": [{"error": {"code": "OutputImageSensitiveContentDetected", "message": "m"}}]},
            ContentBlocked,
            "m",
        ),
        (
            {"data": [{"error": {"code": "InternalServiceError", "message": f"k={UPSTREAM_KEY}"}}]},
            UpstreamError,
            "InternalServiceError",
        ),
        (
            {"error": {"code": "InputImageRiskDetection", "message": "risky"}},
            ContentBlocked,
            "risky",
        ),
        ({"data": []}, UpstreamError, "without any image"),
        ({"data": [{"b64_json": "@@@"}]}, UpstreamError, "invalid base64"),
        ([1, 2], UpstreamError, "not an images response"),
    ],
)
def test_parse_failures(body: object, expected: type[GatewayError], message: str) -> None:
    with pytest.raises(expected, match=message) as caught:
        parse_response(orjson.dumps(body), api_key=UPSTREAM_KEY)
    assert type(caught.value) is expected
    assert UPSTREAM_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "blocked"),
    [
        ("InputTextSensitiveContentDetected", True),
        ("InputImageSensitiveContentDetected.PrivacyInformation", True),
        ("OutputImageSensitiveContentDetected", True),
        ("SensitiveContentDetected.Violence", True),
        ("OutputImageRiskDetection", True),
        ("ContentSecurityDetectionError", False),
        ("InvalidParameter", False),
        (None, False),
    ],
)
def test_is_moderation(code: str | None, blocked: bool) -> None:
    assert is_moderation(code) is blocked


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "type": "BadRequest"}})


def test_map_error_table() -> None:
    def mapped(status: int, body: bytes, **headers: str) -> GatewayError:
        return map_error(
            status, httpx.Headers(headers), body, host="ark.test", api_key=UPSTREAM_KEY
        )

    blocked = mapped(400, _error("InputTextSensitiveContentDetected", f"bad {UPSTREAM_KEY}"))
    assert type(blocked) is ContentBlocked and UPSTREAM_KEY not in blocked.message

    auth = mapped(401, _error("AuthenticationError", f"key {UPSTREAM_KEY} invalid"))
    assert type(auth) is UpstreamError and auth.retryable
    assert auth.message == "ark.test rejected the gateway's credentials (HTTP 401)"

    limited = mapped(
        429, _error("RateLimitExceeded.EndpointRPMExceeded", "slow"), **{"retry-after": "3"}
    )
    assert type(limited) is UpstreamUnavailable and limited.retry_after == 3.0

    overloaded = mapped(503, _error("ServerOverloaded", "busy"))
    assert type(overloaded) is UpstreamUnavailable

    invalid = mapped(400, _error("InvalidParameter", "size is not valid"))
    assert type(invalid) is UpstreamError and invalid.retryable is False
    assert "size is not valid" in invalid.message

    internal = mapped(500, _error("InternalServiceError", "oops"))
    assert type(internal) is UpstreamError and internal.retryable

    # A moderation code on a 5xx is the provider failing, not a refusal.
    odd = mapped(500, _error("OutputImageSensitiveContentDetected", "?"))
    assert type(odd) is UpstreamError
    assert type(mapped(400, b"<html>")) is UpstreamError


@pytest.mark.anyio
async def test_unknown_n_mode_fails_at_start_up(context: AdapterContext) -> None:
    provider = ProviderConfig(
        allow_private_network=True, adapter="seedream", api_key="k", options={"n_mode": "lots"}
    )
    with pytest.raises(ValueError, match="n_mode"):
        SeedreamAdapter(provider, context)


# -- the class against the mock ------------------------------------------------------------
@pytest.fixture(scope="session")
def _seedream_server() -> Iterator[MockSeedreamUpstream]:
    server = MockSeedreamUpstream(api_key=UPSTREAM_KEY)
    with server:
        yield server


@pytest.fixture
def upstream(_seedream_server: MockSeedreamUpstream) -> MockSeedreamUpstream:
    _seedream_server.reset()
    return _seedream_server


def make_adapter(
    upstream: MockSeedreamUpstream, context: AdapterContext, **config: object
) -> SeedreamAdapter:
    provider = mock_provider("seedream", upstream.base_url, allow_private_network=True, **config)
    return SeedreamAdapter(provider, context)


@pytest.mark.anyio
async def test_generation_b64(upstream: MockSeedreamUpstream, context: AdapterContext) -> None:
    result = await make_adapter(upstream, context).generate(make_request(), upstream_model=MODEL)

    [image] = result.images
    assert sniff_format(image.data) == "jpeg"
    assert image_size(image.data) == (1280, 720)
    assert result.usage is not None and result.usage.output_tokens == 1280 * 720 // 256
    [sent] = upstream.requests
    assert sent.path == "/api/v3/images/generations"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.json == {
        "model": MODEL,
        "prompt": "a red fox in snow",
        "size": "1280x720",
        "response_format": "b64_json",
        "watermark": False,
    }


@pytest.mark.anyio
async def test_url_answers_are_downloaded_without_the_key(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    upstream.mode = "url"

    result = await make_adapter(upstream, context).generate(make_request(n=2), upstream_model=MODEL)

    assert [sniff_format(i.data) for i in result.images] == ["jpeg", "jpeg"]
    downloads = [r for r in upstream.requests if r.path.startswith("/files/")]
    assert len(downloads) == 2
    assert all("authorization" not in r.headers for r in downloads)


@pytest.mark.anyio
async def test_download_size_limit(upstream: MockSeedreamUpstream, context: AdapterContext) -> None:
    upstream.mode = "url"
    tiny = AdapterContext(http=context.http, max_download_bytes=100)

    with pytest.raises(UpstreamError, match="100-byte limit"):
        await make_adapter(upstream, tiny).generate(make_request(), upstream_model=MODEL)


@pytest.mark.anyio
async def test_oversized_b64_answer_is_refused(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    tiny = AdapterContext(http=context.http, max_download_bytes=1)
    upstream.fail_next(200, {"data": [{"b64_json": "A" * 200_000}]})

    with pytest.raises(UpstreamError, match="limit"):
        await make_adapter(upstream, tiny).generate(make_request(), upstream_model=MODEL)


@pytest.mark.anyio
async def test_fan_out_by_default(upstream: MockSeedreamUpstream, context: AdapterContext) -> None:
    result = await make_adapter(upstream, context).generate(
        make_request(n=3, seed=10), upstream_model=MODEL
    )

    assert len(result.images) == 3
    assert len({i.data for i in result.images}) == 3
    bodies = [r.json for r in upstream.requests]
    assert all(b is not None and "sequential_image_generation" not in b for b in bodies)
    assert sorted(b["seed"] for b in bodies if b is not None) == [10, 11, 12]
    assert result.usage is not None
    assert result.usage.output_tokens == 3 * 1280 * 720 // 256


@pytest.mark.anyio
async def test_fan_out_returns_what_succeeded(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    upstream.fail_next(500, {"error": {"code": "InternalServiceError", "message": "x"}})

    result = await make_adapter(upstream, context).generate(make_request(n=3), upstream_model=MODEL)

    assert len(result.images) == 2


@pytest.mark.anyio
async def test_batch_mode_returns_what_the_model_made(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    upstream.auto_images = 2  # the model decides: fewer than asked
    adapter = make_adapter(upstream, context, options={"n_mode": "batch"})

    result = await adapter.generate(make_request(n=4), upstream_model=MODEL)

    assert len(result.images) == 2
    [sent] = upstream.requests
    assert sent.json is not None
    assert sent.json["sequential_image_generation"] == "auto"
    assert sent.json["sequential_image_generation_options"] == {"max_images": 4}


@pytest.mark.anyio
async def test_batch_mode_keeps_images_beside_a_refused_one(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(upstream, context, options={"n_mode": "batch"})

    result = await adapter.generate(make_request(n=3, prompt="BLOCKOUT fox"), upstream_model=MODEL)

    assert len(result.images) == 2


@pytest.mark.anyio
async def test_edit_sends_reference_images(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    one, two = png(), png(20, 40)

    result = await make_adapter(upstream, context).generate(
        make_request(images=(one, two), size="2K", params={"image_size": "2K"}),
        upstream_model="seedream-4-5-251128",
    )

    assert image_size(result.images[0].data) == (2048, 2048)
    assert upstream.references == [one, two]
    body = upstream.requests[0].json
    assert body is not None and body["size"] == "2K" and len(body["image"]) == 2


@pytest.mark.anyio
async def test_mask_is_refused_before_any_call(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    with pytest.raises(InvalidParameter) as caught:
        await make_adapter(upstream, context).generate(
            make_request(images=(png(),), mask=png()), upstream_model=MODEL
        )
    assert caught.value.param == "mask"
    assert upstream.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("prompt", ["BLOCKME please", "BLOCKOUT"])
async def test_moderation_is_content_blocked(
    upstream: MockSeedreamUpstream, context: AdapterContext, prompt: str
) -> None:
    with pytest.raises(ContentBlocked, match="sensitive information") as caught:
        await make_adapter(upstream, context).generate(
            make_request(prompt=prompt), upstream_model=MODEL
        )
    assert caught.value.code == "CONTENT_BLOCKED"


@pytest.mark.anyio
async def test_invalid_size_is_not_retryable(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError, match="size") as caught:
        await make_adapter(upstream, context).generate(
            make_request(size="1280x720"),
            upstream_model="seedream-4-5-251128",  # under 4.5's min
        )
    assert type(caught.value) is UpstreamError
    assert caught.value.retryable is False


@pytest.mark.anyio
async def test_wrong_credentials_never_echo_any_key(
    upstream: MockSeedreamUpstream, context: AdapterContext
) -> None:
    wrong = "ark-wrong-key-ABCDEFGHIJKLMNOP"
    with pytest.raises(UpstreamError) as caught:
        await make_adapter(upstream, context, api_key=wrong).generate(
            make_request(), upstream_model=MODEL
        )
    assert "rejected the gateway's credentials (HTTP 401)" in caught.value.message
    assert caught.value.retryable is True
    assert "ABCDEFGH" not in f"{caught.value} {caught.value.body()}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code", "headers", "expected", "retry_after"),
    [
        (
            429,
            "RateLimitExceeded.EndpointRPMExceeded",
            {"retry-after": "7"},
            UpstreamUnavailable,
            7,
        ),
        (429, "ServerOverloaded", {}, UpstreamUnavailable, None),
        (503, "ServiceUnavailable", {"retry-after": "2"}, UpstreamUnavailable, 2),
        (500, "InternalServiceError", {}, UpstreamError, None),
    ],
)
async def test_server_side_failures(
    upstream: MockSeedreamUpstream,
    context: AdapterContext,
    status: int,
    code: str,
    headers: dict[str, str],
    expected: type[UpstreamError],
    retry_after: float | None,
) -> None:
    body = {"error": {"code": code, "message": f"{code} ({UPSTREAM_KEY})", "type": "x"}}
    upstream.fail_next(status, body, headers=headers)

    with pytest.raises(expected) as caught:
        await make_adapter(upstream, context).generate(make_request(), upstream_model=MODEL)
    assert type(caught.value) is expected
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after
    assert UPSTREAM_KEY not in f"{caught.value} {caught.value.body()}"


@pytest.mark.anyio
async def test_timeout(upstream: MockSeedreamUpstream, context: AdapterContext) -> None:
    upstream.latency_s = 3
    started = time.perf_counter()

    with pytest.raises(UpstreamTimeout, match=r"within 0\.2 s"):
        await make_adapter(upstream, context, timeout_s=0.2).generate(
            make_request(), upstream_model=MODEL
        )
    assert time.perf_counter() - started < 2


@pytest.mark.anyio
async def test_connection_refused(context: AdapterContext) -> None:
    port = free_port()  # bound, then released: nobody listens on it
    adapter = SeedreamAdapter(
        ProviderConfig(
            allow_private_network=True,
            adapter="seedream",
            base_url=f"http://127.0.0.1:{port}/api/v3",
            api_key="k",
        ),
        context,
    )

    with pytest.raises(UpstreamUnavailable, match=r"cannot reach 127\.0\.0\.1:\d+"):
        await adapter.generate(make_request(), upstream_model=MODEL)
