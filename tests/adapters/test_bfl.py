"""The BFL adapter: pure wire functions without I/O, then the class against a real-HTTP mock."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.bfl import (
    BflAdapter,
    build_submit,
    map_error,
    parse_poll,
    parse_submit,
    snap,
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
from app.upstream_client import UpstreamHttp
from tests.mocks.bfl_upstream import MockBflUpstream

KEY = "bfl-SECRET-key-0123456789"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a red fox in snow",
        n=1,
        output_format="png",
        sizing="pixel",
        size="300x200",
        params={},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def provider(**config: object) -> ProviderConfig:
    settings: dict[str, object] = {"adapter": "bfl", "api_key": KEY}
    settings.update(config)
    return ProviderConfig.model_validate({"allow_private_network": True, **settings})


# -- pure functions ------------------------------------------------------------------------
def test_pixel_endpoint_snaps_to_its_grid() -> None:
    call = build_submit(make_request(seed=7), upstream_model="flux-pro-1.1", provider=provider())

    assert call.url == "https://api.bfl.ai/v1/flux-pro-1.1"
    assert call.headers["x-key"] == KEY
    assert call.json == {
        "prompt": "a red fox in snow",
        "width": 288,
        "height": 256,  # 200 is below the 256 minimum
        "seed": 7,
        "output_format": "png",
    }


def test_flux2_grid_declared_fields_win_over_size() -> None:
    request = make_request(params={"width": 1000, "height": 600, "safety_tolerance": 2})
    call = build_submit(request, upstream_model="flux-2-pro", provider=provider())
    assert (call.json["width"], call.json["height"]) == (1008, 608)
    assert call.json["safety_tolerance"] == 2


def test_aspect_endpoints_get_aspect_ratio() -> None:
    declared = make_request(sizing="aspect", size="1024x576", params={"aspect_ratio": "21:9"})
    from_size = make_request(sizing="none", size="1920x1080")
    for request, expected in ((declared, "21:9"), (from_size, "16:9")):
        call = build_submit(request, upstream_model="flux-pro-1.1-ultra", provider=provider())
        assert call.json["aspect_ratio"] == expected
        assert "width" not in call.json and "height" not in call.json
    auto = make_request(sizing="aspect", size=None, params={"aspect_ratio": "match_input_image"})
    call = build_submit(auto, upstream_model="flux-kontext-pro", provider=provider())
    assert "aspect_ratio" not in call.json


def test_no_size_lets_bfl_choose_and_options_override_the_grid() -> None:
    call = build_submit(make_request(size=None), upstream_model="flux-2-pro", provider=provider())
    assert "width" not in call.json
    custom = provider(options={"sizing": "pixel", "multiple_of": 64, "max_side": 256})
    call = build_submit(make_request(), upstream_model="flux-kontext-pro", provider=custom)
    assert (call.json["width"], call.json["height"]) == (256, 192)


def test_snap_ties_up_and_stays_on_the_grid() -> None:
    assert snap(48, 32, 256, 1440) == 256
    assert snap(1000, 32, 256, 1440) == 992
    assert snap(1008, 32, 256, 1440) == 1024
    assert snap(5000, 16, 64, 1441) == 1440


def test_forwarding_rules_and_output_format() -> None:
    request = make_request(
        output_format="webp",
        extra={"raw": True, "webhook_url": "https://evil.example", "prompt": "x", "width": 64},
    )
    call = build_submit(request, upstream_model="flux-2-pro", provider=provider())
    assert call.json["raw"] is True
    assert call.json["prompt"] == "a red fox in snow"
    assert call.json["output_format"] == "png"  # webp is transcoded by the service
    assert "webhook_url" not in call.json
    assert call.json["width"] == 304


def test_edit_images_are_inline_base64() -> None:
    request = make_request(images=(PNG, b"second"))
    call = build_submit(request, upstream_model="flux-2-pro", provider=provider())
    assert base64.b64decode(call.json["input_image"]) == PNG
    assert base64.b64decode(call.json["input_image_2"]) == b"second"

    fill = build_submit(
        make_request(images=(PNG,), mask=b"mask"),
        upstream_model="flux-pro-1.0-fill",
        provider=provider(),
    )
    assert base64.b64decode(fill.json["mask"]) == b"mask" and "image" in fill.json
    with pytest.raises(InvalidParameter):
        build_submit(
            make_request(images=(PNG,), mask=b"m"), upstream_model="flux-2-pro", provider=provider()
        )


def test_parse_submit_keeps_the_key_on_trusted_hosts() -> None:
    own = b'{"id": "a1", "polling_url": "https://api.us1.bfl.ai/v1/get_result?id=a1"}'
    assert parse_submit(own, base_url="https://api.bfl.ai") == (
        "https://api.us1.bfl.ai/v1/get_result?id=a1"
    )
    foreign = b'{"id": "a 1", "polling_url": "https://attacker.example/poll"}'
    assert parse_submit(foreign, base_url="https://api.bfl.ai/") == (
        "https://api.bfl.ai/v1/get_result?id=a+1"
    )
    with pytest.raises(UpstreamError):
        parse_submit(b'{"detail": "?"}', base_url="https://api.bfl.ai")


def test_parse_poll_states() -> None:
    assert parse_poll(b'{"status": "Pending"}', api_key=KEY) is None
    assert parse_poll(b'{"status": "Generating"}', api_key=KEY) is None
    ready = b'{"status": "Ready", "result": {"sample": "https://cdn/x.png"}}'
    assert parse_poll(ready, api_key=KEY) == "https://cdn/x.png"
    for status in ("Request Moderated", "Content Moderated"):
        with pytest.raises(ContentBlocked):
            parse_poll(b'{"status": "%s"}' % status.encode(), api_key=KEY)
    with pytest.raises(UpstreamError, match="Error") as failed:
        parse_poll(b'{"status": "Error", "details": "bad %s"}' % KEY.encode(), api_key=KEY)
    assert KEY not in failed.value.message
    for body in (b'{"status": "Task not found"}', b'{"status": "Ready"}', b"[]"):
        with pytest.raises(UpstreamError):
            parse_poll(body, api_key=KEY)


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (401, b'{"detail": "bad key ' + KEY.encode() + b'"}', UpstreamError, True),
        (402, b'{"detail": "Insufficient credits"}', UpstreamError, True),
        (429, b'{"error": "rate_limit_exceeded", "retry_after": 5}', UpstreamUnavailable, True),
        (503, b"<html>down</html>", UpstreamUnavailable, True),
        (422, b'{"detail": [{"loc": ["body", "width"], "msg": "too big"}]}', UpstreamError, False),
        (400, b'{"detail": "Request Moderated"}', ContentBlocked, False),
        (500, b'{"detail": "Internal Server Error"}', UpstreamError, True),
        (504, b"", UpstreamTimeout, True),
    ],
)
def test_map_error(status: int, body: bytes, kind: type[GatewayError], retryable: bool) -> None:
    error = map_error(status, httpx.Headers(), body, host="api.bfl.ai", api_key=KEY)
    assert type(error) is kind
    assert KEY not in error.message
    if isinstance(error, UpstreamError):
        assert error.retryable is retryable
    if status == 422:
        assert "width: too big" in error.message
    if status == 429:
        assert error.retry_after == 5


# -- the adapter against the mock ------------------------------------------------------------
@pytest.fixture(scope="module")
def _server() -> Iterator[MockBflUpstream]:
    with MockBflUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture
def bfl(_server: MockBflUpstream) -> MockBflUpstream:
    _server.reset()
    return _server


def make_adapter(
    upstream: MockBflUpstream, context: AdapterContext, **config: object
) -> BflAdapter:
    options = {"poll_interval_s": 0.01, "poll_max_interval_s": 0.02}
    settings: dict[str, object] = {"base_url": upstream.base_url + "/", "timeout_s": 10}
    settings.update(config)
    settings["options"] = {**options, **dict(settings.get("options") or {})}  # type: ignore[call-overload]
    return BflAdapter(provider(**settings), context)


@pytest.mark.anyio
async def test_generate_polls_and_downloads(bfl: MockBflUpstream, context: AdapterContext) -> None:
    bfl.pending_polls = 2
    result = await make_adapter(bfl, context).generate(
        make_request(output_format="jpeg"), upstream_model="flux-pro-1.1"
    )

    [image] = result.images
    assert sniff_format(image.data) == "jpeg" and image_size(image.data) == (288, 256)
    submit, *polls, delivery = bfl.requests
    assert submit.path == "/v1/flux-pro-1.1" and submit.headers["x-key"] == KEY
    assert [p.path for p in polls] == ["/v1/get_result"] * 3
    assert all(p.headers["x-key"] == KEY for p in polls)
    assert delivery.path.startswith("/delivery/") and "x-key" not in delivery.headers


@pytest.mark.anyio
async def test_n_fans_out_into_concurrent_jobs(
    bfl: MockBflUpstream, context: AdapterContext
) -> None:
    result = await make_adapter(bfl, context).generate(
        make_request(n=3, seed=10, sizing="aspect", params={"aspect_ratio": "1:1"}),
        upstream_model="flux-kontext-pro",
    )
    assert len(result.images) == 3
    assert sorted(r.json["seed"] for r in bfl.submissions() if r.json) == [10, 11, 12]


@pytest.mark.anyio
async def test_partial_success_returns_what_succeeded(
    bfl: MockBflUpstream, context: AdapterContext
) -> None:
    bfl.fail_next(500, {"detail": "Internal Server Error"})
    result = await make_adapter(bfl, context).generate(
        make_request(n=2), upstream_model="flux-2-pro"
    )
    assert len(result.images) == 1


@pytest.mark.anyio
async def test_edit_sends_input_images(bfl: MockBflUpstream, context: AdapterContext) -> None:
    request = make_request(images=(PNG, PNG), sizing="none", size=None)
    result = await make_adapter(bfl, context).generate(request, upstream_model="flux-2-pro")
    assert len(result.images) == 1
    [sent] = bfl.submissions()
    assert sent.json is not None and {"input_image", "input_image_2"} <= sent.json.keys()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prompt", "kind"),
    [("BLOCKME now", ContentBlocked), ("NSFWOUT", ContentBlocked), ("FAILME", UpstreamError)],
)
async def test_job_outcomes(
    bfl: MockBflUpstream, context: AdapterContext, prompt: str, kind: type[GatewayError]
) -> None:
    with pytest.raises(kind) as raised:
        await make_adapter(bfl, context).generate(
            make_request(prompt=prompt), upstream_model="flux-2-pro"
        )
    if prompt == "NSFWOUT":
        assert "NSFW" in raised.value.message


@pytest.mark.anyio
async def test_submit_failures(bfl: MockBflUpstream, context: AdapterContext) -> None:
    adapter = make_adapter(bfl, context)
    bfl.fail_next(429, {"error": "rate_limit_exceeded"}, headers={"retry-after": "7"})
    with pytest.raises(UpstreamUnavailable) as limited:
        await adapter.generate(make_request(), upstream_model="flux-2-pro")
    assert limited.value.retry_after == 7
    bfl.fail_next(402, {"detail": "Insufficient credits"})
    with pytest.raises(UpstreamError, match="insufficient credits") as broke:
        await adapter.generate(make_request(), upstream_model="flux-2-pro")
    assert broke.value.retryable


@pytest.mark.anyio
async def test_validation_error_is_not_retryable(
    bfl: MockBflUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(bfl, context, options={"multiple_of": 8})
    with pytest.raises(UpstreamError, match="multiple of 16") as raised:
        await adapter.generate(make_request(size="1000x1000"), upstream_model="flux-2-pro")
    assert raised.value.retryable is False


@pytest.mark.anyio
async def test_wrong_key_is_never_echoed(bfl: MockBflUpstream, context: AdapterContext) -> None:
    wrong = "bfl-WRONG-key-9876543210"
    with pytest.raises(UpstreamError) as raised:
        await make_adapter(bfl, context, api_key=wrong).generate(
            make_request(), upstream_model="flux-2-pro"
        )
    assert raised.value.retryable and "credentials" in raised.value.message
    assert wrong not in raised.value.message


@pytest.mark.anyio
async def test_foreign_polling_host_never_sees_the_key(
    bfl: MockBflUpstream, context: AdapterContext
) -> None:
    bfl.foreign_polling_host = True
    result = await make_adapter(bfl, context).generate(make_request(), upstream_model="flux-2-pro")
    assert len(result.images) == 1
    polls = [r for r in bfl.requests if r.path == "/v1/get_result"]
    assert polls and all(r.headers["host"].startswith("127.0.0.1") for r in polls)


@pytest.mark.anyio
async def test_slow_job_times_out(bfl: MockBflUpstream, context: AdapterContext) -> None:
    bfl.pending_polls = 10_000
    with pytest.raises(UpstreamTimeout):
        await make_adapter(bfl, context, timeout_s=0.3).generate(
            make_request(), upstream_model="flux-2-pro"
        )


@pytest.mark.anyio
async def test_download_is_size_limited(bfl: MockBflUpstream, http: UpstreamHttp) -> None:
    bfl.image_bytes = 50_000
    small = AdapterContext(http=http, max_download_bytes=20_000)
    with pytest.raises(UpstreamError, match="limit"):
        await make_adapter(bfl, small).generate(make_request(), upstream_model="flux-2-pro")


@pytest.mark.anyio
async def test_connection_refused(context: AdapterContext) -> None:
    adapter = BflAdapter(provider(base_url="http://127.0.0.1:9", timeout_s=5), context)
    with pytest.raises(UpstreamUnavailable):
        await adapter.generate(make_request(), upstream_model="flux-2-pro")


@pytest.mark.anyio
async def test_passing_poll_failures_are_retried(
    bfl: MockBflUpstream, context: AdapterContext
) -> None:
    bfl.poll_failures = 3
    result = await make_adapter(bfl, context).generate(make_request(), upstream_model="flux-2-pro")
    assert len(result.images) == 1

    bfl.poll_failures = 4
    with pytest.raises(UpstreamError, match="HTTP 502"):
        await make_adapter(bfl, context).generate(make_request(), upstream_model="flux-2-pro")
