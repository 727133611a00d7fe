"""The Replicate adapter: pure wire functions without I/O, then the class against a real HTTP
server speaking Replicate's predictions API (over both transports)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import anyio
import httpx
import orjson
import pytest

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.replicate import (
    ModelOptions,
    Prediction,
    ReplicateAdapter,
    UpstreamCall,
    build_call,
    job_url,
    map_error,
    model_options,
    output_urls,
    parse_prediction,
    prediction_outcome,
)
from app.catalog.schema import ProviderConfig
from app.errors import ContentBlocked, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.images.codec import image_size, sniff_format
from tests.mocks.replicate_upstream import MockReplicateUpstream, problem

KEY = "r8_SECRET0123456789abcdef"
FAST = {"poll_interval_s": 0.01, "max_poll_interval_s": 0.02}


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a red fox in snow",
        n=1,
        output_format="png",
        sizing="aspect",
        size="1024x576",
        params={"aspect_ratio": "16:9"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def provider(**config: object) -> ProviderConfig:
    settings: dict[str, object] = {"adapter": "replicate", "api_key": KEY, "timeout_s": 10}
    settings.update(config)
    return ProviderConfig.model_validate({"allow_private_network": True, **settings})


def call_for(
    request: ImageRequest, model: str = "black-forest-labs/flux-schnell", **config: object
) -> UpstreamCall:
    p = provider(**config)
    return build_call(
        request,
        upstream_model=model,
        provider=p,
        options=model_options(p, model),
        n=request.n,
        seed=request.seed,
    )


# -- pure functions ----------------------------------------------------------------------------
def test_official_model_call() -> None:
    call = call_for(make_request(seed=7, output_format="jpeg", extra={"go_fast": True}))

    assert (
        call.url == "https://api.replicate.com/v1/models/black-forest-labs/flux-schnell/predictions"
    )
    assert call.headers == {"Prefer": "wait=5", "Authorization": f"Bearer {KEY}"}
    assert call.json == {
        "input": {
            "go_fast": True,
            "aspect_ratio": "16:9",
            "prompt": "a red fox in snow",
            "seed": 7,
            "output_format": "jpg",
        }
    }


def test_pinned_version_and_base_url() -> None:
    call = call_for(
        make_request(),
        model="stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
        base_url="http://replicate.internal/",
        timeout_s=300,
    )

    assert call.url == "http://replicate.internal/v1/predictions"
    assert call.headers["Prefer"] == "wait=60"
    assert call.json["version"].startswith("7762fd07")
    assert call.json["input"]["prompt"] == "a red fox in snow"


def test_pixel_sizing_gets_custom_aspect_ratio_and_reserved_fields_win() -> None:
    request = make_request(
        sizing="pixel",
        params={"width": 1440, "height": 800, "safety_tolerance": 2},
        extra={"prompt": "hijack", "num_outputs": 9, "output_format": "gif", "n": 3},
        n=2,
        output_format="webp",
    )

    payload = call_for(request, options={"num_outputs_field": "num_outputs"}).json["input"]

    assert payload == {
        "width": 1440,
        "height": 800,
        "safety_tolerance": 2,
        "prompt": "a red fox in snow",
        "aspect_ratio": "custom",
        "num_outputs": 2,
        "output_format": "webp",
    }
    off = call_for(request, options={"custom_aspect_ratio": None}).json["input"]
    assert "aspect_ratio" not in off and "num_outputs" not in off


def test_per_model_options_and_unsupported_format() -> None:
    options = {"output_formats": ["jpg", "png"], "models": {"google/imagen-4": {"wait_s": 0}}}

    call = call_for(make_request(output_format="webp"), model="google/imagen-4", options=options)

    assert "output_format" not in call.json["input"]  # the service transcodes instead
    assert "Prefer" not in call.headers


def test_edit_images_as_data_uris() -> None:
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    request = make_request(images=(png, png), mask=png)

    single = call_for(request).json["input"]
    listed = call_for(
        request, options={"image_field": "image_input", "image_list": True, "mask_field": "m"}
    ).json["input"]

    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert single["image"] == uri and single["mask"] == uri
    assert listed["image_input"] == [uri, uri] and listed["m"] == uri


def test_model_options_defaults() -> None:
    assert model_options(provider(), "a/b") == ModelOptions()


@pytest.mark.parametrize(
    ("options", "problem_text"),
    [
        ({"wait_s": 90}, "wait_s: Input should be less than or equal to 60"),
        ({"poll_interval": 1}, "poll_interval: Extra inputs are not permitted"),
        ({"models": {"a/b": {"image_list": "maybe"}}}, "for a/b: image_list"),
    ],
)
@pytest.mark.anyio
async def test_bad_options_stop_start_up(
    context: AdapterContext, options: dict[str, object], problem_text: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem_text)):
        ReplicateAdapter(provider(options=options), context)


def test_job_urls_never_send_the_key_elsewhere() -> None:
    base = "https://api.replicate.com"
    own = Prediction(
        id="p1",
        status="processing",
        urls={"get": f"{base}/v1/predictions/p1", "cancel": f"{base}/v1/predictions/p1/cancel"},
    )
    foreign = Prediction(id="p1", status="processing", urls={"get": "https://evil.test/p1"})

    assert job_url(own, "cancel", base) == f"{base}/v1/predictions/p1/cancel"
    assert job_url(foreign, "get", base) == f"{base}/v1/predictions/p1"
    assert job_url(foreign, "cancel", base) == f"{base}/v1/predictions/p1/cancel"


def test_output_urls_shapes() -> None:
    assert output_urls("https://x/1.png") == ["https://x/1.png"]
    assert output_urls(["https://x/1", None, 3, "https://x/2"]) == ["https://x/1", "https://x/2"]
    assert output_urls(None) == []


def _prediction(status: str, output: object = None, error: str | None = None) -> Prediction:
    return Prediction(id="p1", status=status, output=output, error=error)


def test_prediction_outcome() -> None:
    assert prediction_outcome(_prediction("processing"), api_key=KEY) is None
    assert prediction_outcome(_prediction("starting", ["u"]), api_key=KEY) is None
    assert prediction_outcome(_prediction("processing", ["u"]), api_key=KEY, early_output=True) == [
        "u"
    ]
    assert prediction_outcome(_prediction("succeeded", "u"), api_key=KEY) == ["u"]
    with pytest.raises(UpstreamError, match="without any image"):
        prediction_outcome(_prediction("succeeded", []), api_key=KEY)
    with pytest.raises(UpstreamError, match="was canceled"):
        prediction_outcome(_prediction("canceled"), api_key=KEY)
    with pytest.raises(UpstreamError, match="was aborted"):
        prediction_outcome(_prediction("aborted"), api_key=KEY)


@pytest.mark.parametrize(
    "message",
    [
        "All generated images contained NSFW content. Try a different prompt.",
        "The input or output was flagged as sensitive. Please try again. (E005)",
        "Content was flagged by the safety system.",
    ],
)
def test_moderated_failure_is_content_blocked(message: str) -> None:
    with pytest.raises(ContentBlocked, match=message[:20]):
        prediction_outcome(_prediction("failed", error=message), api_key=KEY)


def test_failed_prediction_message_is_redacted() -> None:
    with pytest.raises(UpstreamError) as caught:
        prediction_outcome(_prediction("failed", error=f"boom with {KEY}"), api_key=KEY)
    assert type(caught.value) is UpstreamError
    assert KEY not in caught.value.message and "boom" in caught.value.message


def test_parse_prediction_rejects_garbage() -> None:
    with pytest.raises(UpstreamError, match="not a prediction"):
        parse_prediction(b"<html>oops</html>")


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "text"),
    [
        (401, UpstreamError, True, "rejected the gateway's credentials"),
        (403, UpstreamError, True, "rejected the gateway's credentials"),
        (402, UpstreamError, True, "Insufficient credit"),
        (422, UpstreamError, False, "input.num_outputs"),
        (404, UpstreamError, False, "rejected the request"),
        (429, UpstreamUnavailable, True, "rate limiting"),
        (503, UpstreamUnavailable, True, "overloaded"),
        (500, UpstreamError, True, "failed \\(HTTP 500\\)"),
        (504, UpstreamTimeout, True, "timed out"),
    ],
)
def test_map_error(status: int, kind: type[UpstreamError], retryable: bool, text: str) -> None:
    details = {402: "Insufficient credit", 422: "- input.num_outputs: Must be <= 4"}
    body = problem(status, "Title", f"{details.get(status, 'nope')} token {KEY}")
    error = map_error(
        status,
        httpx.Headers({"retry-after": "7"}),
        orjson.dumps(body),
        host="api.replicate.com",
        api_key=KEY,
    )

    assert type(error) is kind
    assert error.retryable is retryable
    assert KEY not in error.message
    assert error.retry_after == (7.0 if status in (429, 503) else None)
    assert re.search(text, error.message)


# -- the adapter against the mock --------------------------------------------------------------
@pytest.fixture(scope="module")
def _server() -> Iterator[MockReplicateUpstream]:
    with MockReplicateUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture
def upstream(_server: MockReplicateUpstream) -> MockReplicateUpstream:
    _server.reset()
    return _server


def make_adapter(
    upstream: MockReplicateUpstream,
    context: AdapterContext,
    *,
    options: dict[str, object] | None = None,
    **config: object,
) -> ReplicateAdapter:
    settings = provider(base_url=upstream.base_url, options={**FAST, **(options or {})}, **config)
    return ReplicateAdapter(settings, context)


@pytest.mark.anyio
async def test_sync_mode_answer_is_used_without_polling(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    result = await make_adapter(upstream, context).generate(
        make_request(seed=3), upstream_model="black-forest-labs/flux-schnell"
    )

    [image] = result.images
    assert sniff_format(image.data) == "png"
    assert image_size(image.data) == (256, 144)
    [create] = upstream.api_requests("POST")
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.headers["prefer"] == "wait=5"
    assert create.json == {
        "input": {
            "aspect_ratio": "16:9",
            "prompt": "a red fox in snow",
            "seed": 3,
            "output_format": "png",
        }
    }
    assert upstream.api_requests("GET") == []
    downloads = upstream.api_requests("GET", "/files/")
    assert len(downloads) == 1 and "authorization" not in downloads[0].headers


@pytest.mark.anyio
@pytest.mark.parametrize("output_list", [True, False])
async def test_async_prediction_is_polled(
    upstream: MockReplicateUpstream, context: AdapterContext, output_list: bool
) -> None:
    upstream.processing_polls = 3
    upstream.output_list = output_list

    result = await make_adapter(upstream, context, options={"wait_s": 0}).generate(
        make_request(output_format="jpeg"), upstream_model="black-forest-labs/flux-1.1-pro"
    )

    assert [sniff_format(i.data) for i in result.images] == ["jpeg"]
    assert "prefer" not in upstream.api_requests("POST")[0].headers
    polls = upstream.api_requests("GET")
    assert len(polls) == 4
    assert all(p.headers["authorization"] == f"Bearer {KEY}" for p in polls)


@pytest.mark.anyio
async def test_sync_answer_with_output_while_processing(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    upstream.processing_polls = 5
    upstream.early_output = True

    result = await make_adapter(upstream, context).generate(
        make_request(), upstream_model="black-forest-labs/flux-schnell"
    )

    assert len(result.images) == 1
    assert upstream.api_requests("GET") == []


@pytest.mark.anyio
async def test_n_with_num_outputs_field_is_one_prediction(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(
        upstream,
        context,
        options={
            "models": {"black-forest-labs/flux-schnell": {"num_outputs_field": "num_outputs"}}
        },
    )

    result = await adapter.generate(
        make_request(n=3), upstream_model="black-forest-labs/flux-schnell"
    )

    assert len(result.images) == 3
    [create] = upstream.api_requests("POST")
    assert create.json is not None and create.json["input"]["num_outputs"] == 3


@pytest.mark.anyio
async def test_n_fans_out_with_distinct_seeds_and_keeps_successes(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    upstream.fail_next(500, problem(500, "Internal Server Error", "boom"))

    result = await make_adapter(upstream, context).generate(
        make_request(n=3, seed=10), upstream_model="google/imagen-4"
    )

    assert len(result.images) == 2
    creates = upstream.api_requests("POST")
    assert sorted(c.json["input"]["seed"] for c in creates if c.json) == [10, 11, 12]
    assert all(c.json and "num_outputs" not in c.json["input"] for c in creates)


@pytest.mark.anyio
async def test_pinned_version_and_pixel_sizing(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    request = make_request(sizing="pixel", size="320x192", params={"width": 320, "height": 192})

    result = await make_adapter(upstream, context).generate(
        request, upstream_model="black-forest-labs/flux-1.1-pro:abc123"
    )

    assert image_size(result.images[0].data) == (320, 192)
    [create] = upstream.api_requests("POST")
    assert create.path == "/v1/predictions"
    assert create.json is not None and create.json["version"] == "abc123"
    assert create.json["input"]["aspect_ratio"] == "custom"


@pytest.mark.anyio
async def test_edit_sends_data_uris(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(upstream, context, options={"image_field": "input_image"})
    source = (await adapter.generate(make_request(), upstream_model="a/b")).images[0].data
    upstream.reset()

    result = await adapter.generate(
        make_request(images=(source,)), upstream_model="black-forest-labs/flux-kontext-pro"
    )

    assert len(result.images) == 1
    [create] = upstream.api_requests("POST")
    assert create.json is not None
    assert create.json["input"]["input_image"] == (
        "data:image/png;base64," + base64.b64encode(source).decode()
    )


@pytest.mark.anyio
@pytest.mark.parametrize("marker", ["NSFWME", "SENSITIVEME"])
@pytest.mark.parametrize("processing_polls", [0, 2])
async def test_moderated_prediction_is_content_blocked(
    upstream: MockReplicateUpstream, context: AdapterContext, marker: str, processing_polls: int
) -> None:
    upstream.processing_polls = processing_polls

    with pytest.raises(ContentBlocked):
        await make_adapter(upstream, context).generate(
            make_request(prompt=f"{marker} please"), upstream_model="a/b"
        )

    assert upstream.api_requests("POST", "/v1/predictions/") == []  # nothing to cancel


@pytest.mark.anyio
async def test_failed_prediction_is_upstream_error(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    upstream.processing_polls = 1

    with pytest.raises(UpstreamError, match="CUDA out of memory") as caught:
        await make_adapter(upstream, context).generate(
            make_request(prompt="FAILME"), upstream_model="a/b"
        )

    assert type(caught.value) is UpstreamError and caught.value.retryable


@pytest.mark.anyio
async def test_bad_credentials(upstream: MockReplicateUpstream, context: AdapterContext) -> None:
    adapter = make_adapter(upstream, context, api_key="r8_wrong-token-0000")

    with pytest.raises(UpstreamError, match="rejected the gateway's credentials") as caught:
        await adapter.generate(make_request(), upstream_model="a/b")

    assert caught.value.retryable
    assert "r8_wrong" not in caught.value.message


@pytest.mark.anyio
async def test_invalid_input_is_not_retryable(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError, match="aspect_ratio must be one of") as caught:
        await make_adapter(upstream, context).generate(
            make_request(params={"aspect_ratio": "7:1"}), upstream_model="a/b"
        )

    assert caught.value.status == 502 and not caught.value.retryable


@pytest.mark.anyio
async def test_rate_limited_create(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    upstream.fail_next(
        429,
        problem(429, "Too Many Requests", f"Request was throttled for {KEY}"),
        headers={"retry-after": "4"},
    )

    with pytest.raises(UpstreamUnavailable) as caught:
        await make_adapter(upstream, context).generate(make_request(), upstream_model="a/b")

    assert caught.value.retry_after == 4.0
    assert KEY not in caught.value.message and "throttled" in caught.value.message


@pytest.mark.anyio
async def test_failed_poll_cancels_the_prediction(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    upstream.processing_polls = None
    upstream.fail_next(500, problem(500, "Internal Server Error", "down"), method="GET")

    with pytest.raises(UpstreamError, match="HTTP 500"):
        await make_adapter(upstream, context).generate(make_request(), upstream_model="a/b")

    [cancel] = upstream.api_requests("POST", "/v1/predictions/")
    assert cancel.path.endswith("/cancel")
    assert cancel.headers["authorization"] == f"Bearer {KEY}"
    assert next(iter(upstream.jobs.values())).status == "canceled"


@pytest.mark.anyio
async def test_deadline_is_upstream_timeout_and_cancels(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    upstream.processing_polls = None

    with pytest.raises(UpstreamTimeout):
        await make_adapter(upstream, context, timeout_s=0.3).generate(
            make_request(), upstream_model="a/b"
        )

    [cancel] = upstream.api_requests("POST", "/v1/predictions/")
    assert cancel.path.endswith("/cancel")
    assert next(iter(upstream.jobs.values())).status == "canceled"


async def _in_a_cancel_scope(call: Callable[[], Awaitable[object]]) -> None:
    with anyio.move_on_after(0.2):  # a caller's cancel scope
        await call()


async def _under_a_router_deadline(call: Callable[[], Awaitable[object]]) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # how app.images.routing bounds a route
            await call()


@pytest.mark.anyio
@pytest.mark.parametrize("give_up", [_in_a_cancel_scope, _under_a_router_deadline])
async def test_a_caller_giving_up_cancels_the_prediction(
    upstream: MockReplicateUpstream,
    context: AdapterContext,
    give_up: Callable[[Callable[[], Awaitable[object]]], Awaitable[None]],
) -> None:
    upstream.processing_polls = None

    adapter = make_adapter(upstream, context)
    await give_up(lambda: adapter.generate(make_request(), upstream_model="a/b"))

    [job] = upstream.jobs.values()
    [cancel] = upstream.api_requests("POST", "/v1/predictions/")
    assert cancel.path == f"/v1/predictions/{job.id}/cancel"
    assert job.status == "canceled"


@pytest.mark.anyio
async def test_download_size_limit(
    upstream: MockReplicateUpstream, context: AdapterContext
) -> None:
    tiny = AdapterContext(http=context.http, max_download_bytes=100)

    with pytest.raises(UpstreamError, match="100-byte limit"):
        await make_adapter(upstream, tiny).generate(make_request(), upstream_model="a/b")


@pytest.mark.anyio
async def test_unreachable_upstream(context: AdapterContext) -> None:
    adapter = ReplicateAdapter(provider(base_url="http://127.0.0.1:9"), context)

    with pytest.raises(UpstreamUnavailable, match="cannot reach"):
        await adapter.generate(make_request(), upstream_model="a/b")
