"""The fal adapter: pure wire functions without I/O, then the class against a real HTTP
server speaking fal's Queue API, over both transports of the shared client."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.fal import (
    FalAdapter,
    FalOptions,
    build_submit,
    map_error,
    parse_output,
    parse_status,
    parse_submit,
)
from app.catalog.schema import ProviderConfig
from app.errors import (
    ContentBlocked,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.images.codec import decode_data_uri, image_size, sniff_format
from tests.mocks.fal_upstream import MockFalUpstream, validation_error

FAL_KEY = "fal-key-SECRET-0123456789abcdef"
PNG_1PX = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a red fox in snow",
        n=1,
        output_format="png",
        sizing="pixel",
        size="256x128",
        params={"width": 256, "height": 128},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def make_provider(base_url: str = "https://queue.fal.run", **config: object) -> ProviderConfig:
    settings: dict[str, object] = {
        "adapter": "fal",
        "base_url": base_url,
        "api_key": FAL_KEY,
        "timeout_s": 10,
        "options": {"poll_interval_s": 0.01, "poll_max_interval_s": 0.02},
    }
    settings.update(config)
    return ProviderConfig.model_validate({"allow_private_network": True, **settings})


def submit_body(
    request: ImageRequest, model: str = "fal-ai/flux/dev", **options: object
) -> dict[str, Any]:
    provider = make_provider(options=options)
    call = build_submit(
        request, upstream_model=model, provider=provider, options=FalOptions(**options)
    )
    return call.json


# -- pure: build_submit -------------------------------------------------------------------
def test_submit_call_pixel_sizing_auth_and_owned_fields() -> None:
    provider = make_provider(headers={"X-Fal-Runner-Hint": "eu"})
    request = make_request(
        n=3,
        seed=7,
        params={"width": 256, "height": 128, "num_inference_steps": 20, "guidance_scale": None},
        extra={"enable_safety_checker": False, "num_images": 99, "prompt": "override"},
    )
    call = build_submit(
        request, upstream_model="/fal-ai/flux/dev", provider=provider, options=FalOptions()
    )
    assert call.url == "https://queue.fal.run/fal-ai/flux/dev"
    assert call.endpoint == "fal-ai/flux/dev"
    assert call.headers == {"Authorization": f"Key {FAL_KEY}", "X-Fal-Runner-Hint": "eu"}
    assert call.json == {
        "enable_safety_checker": False,
        "num_inference_steps": 20,
        "image_size": {"width": 256, "height": 128},
        "prompt": "a red fox in snow",
        "num_images": 3,
        "seed": 7,
        "output_format": "png",
    }


@pytest.mark.parametrize(
    ("sizing", "size", "params", "expected"),
    [
        ("preset", "landscape_16_9", {"image_size": "landscape_16_9"}, "landscape_16_9"),
        ("preset", "1024x768", {"image_size": "1024x768"}, {"width": 1024, "height": 768}),
        ("aspect", "1024x576", {"aspect_ratio": "16:9"}, "landscape_16_9"),
        ("aspect", "768x1024", {"aspect_ratio": "3:4"}, "portrait_4_3"),
        ("aspect", "1024x683", {"aspect_ratio": "3:2"}, {"width": 1024, "height": 683}),
        ("none", "512x512", {}, {"width": 512, "height": 512}),
    ],
)
def test_image_size_by_sizing_style(
    sizing: str, size: str, params: dict[str, object], expected: object
) -> None:
    body = submit_body(make_request(sizing=sizing, size=size, params=params))
    assert body["image_size"] == expected
    assert "aspect_ratio" not in body and "width" not in body


def test_no_size_when_auto_and_tier_fields_go_native() -> None:
    auto = submit_body(make_request(sizing="aspect", size=None, params={"aspect_ratio": "auto"}))
    assert "image_size" not in auto and "aspect_ratio" not in auto
    tier = submit_body(
        make_request(
            sizing="tier", size="2048x1152", params={"aspect_ratio": "16:9", "resolution": "2K"}
        ),
        model="fal-ai/nano-banana-pro",
    )
    assert tier["aspect_ratio"] == "16:9" and tier["resolution"] == "2K"
    assert "image_size" not in tier


def test_native_aspect_ratio_models() -> None:
    request = make_request(sizing="aspect", size="1024x439", params={"aspect_ratio": "21:9"})
    ultra = "fal-ai/flux-pro/v1.1-ultra"
    body = submit_body(request, model=ultra, aspect_ratio_models=[ultra])
    assert body["aspect_ratio"] == "21:9" and "image_size" not in body


@pytest.mark.parametrize(("fmt", "sent"), [("png", "png"), ("jpeg", "jpeg"), ("webp", "png")])
def test_output_format_is_one_fal_accepts(fmt: str, sent: str) -> None:
    assert submit_body(make_request(output_format=fmt))["output_format"] == sent


def test_edit_sends_data_uris_to_the_configured_edit_endpoint() -> None:
    request = make_request(images=(PNG_1PX, PNG_1PX), mask=PNG_1PX)
    provider = make_provider()
    options = FalOptions.model_validate(
        {"edits": {"fal-ai/seedream/text-to-image": {"endpoint": "fal-ai/seedream/edit"}}}
    )
    call = build_submit(
        request, upstream_model="fal-ai/seedream/text-to-image", provider=provider, options=options
    )
    assert call.url == "https://queue.fal.run/fal-ai/seedream/edit"
    assert [decode_data_uri(u) for u in call.json["image_urls"]] == [PNG_1PX, PNG_1PX]
    assert call.json["image_urls"][0].startswith("data:image/png;base64,")
    assert decode_data_uri(call.json["mask_url"]) == PNG_1PX


def test_edit_single_image_field() -> None:
    body = submit_body(
        make_request(images=(PNG_1PX,)),
        model="fal-ai/flux-pro/kontext",
        edits={"fal-ai/flux-pro/kontext": {"field": "image_url"}},
    )
    assert decode_data_uri(body["image_url"]) == PNG_1PX
    assert "image_urls" not in body


# -- pure: queue answers ------------------------------------------------------------------
def test_parse_submit_keeps_same_origin_urls_and_rebuilds_foreign_ones() -> None:
    queue = "https://queue.fal.run"
    own = f"{queue}/fal-ai/flux/requests/r1"
    body = (
        b'{"request_id": "r1", "status_url": "' + own.encode() + b'/status",'
        b'"response_url": "https://evil.example/r1", "cancel_url": null}'
    )
    job = parse_submit(body, queue=queue, endpoint="fal-ai/flux/dev")
    assert job.status_url == f"{own}/status"
    assert job.response_url == own  # rebuilt: our key never goes to evil.example
    assert job.cancel_url == f"{own}/cancel"
    with pytest.raises(UpstreamError):
        parse_submit(b'{"status": "IN_QUEUE"}', queue=queue, endpoint="fal-ai/flux/dev")


def test_parse_status() -> None:
    assert parse_status(b'{"status": "IN_QUEUE", "queue_position": 3}', api_key=None) is False
    assert parse_status(b'{"status": "IN_PROGRESS", "logs": []}', api_key=None) is False
    assert parse_status(b'{"status": "COMPLETED", "metrics": {}}', api_key=None) is True
    with pytest.raises(UpstreamError, match=r"FAILED.*runner crashed"):
        parse_status(
            b'{"status": "FAILED", "error": "runner crashed, key ' + FAL_KEY.encode() + b'"}',
            api_key=FAL_KEY,
        )
    with pytest.raises(UpstreamError) as caught:
        parse_status(b"<html>", api_key=None)
    assert FAL_KEY not in caught.value.message


def test_parse_output_drops_flagged_images() -> None:
    body = (
        b'{"images": [{"url": "https://v3.fal.media/a.png"},'
        b' {"url": "https://v3.fal.media/b.png"}],'
        b' "has_nsfw_concepts": [true, false], "seed": 1}'
    )
    assert parse_output(body) == ["https://v3.fal.media/b.png"]
    assert parse_output(b'{"image": {"url": "data:image/png;base64,AA=="}}') == [
        "data:image/png;base64,AA=="
    ]
    with pytest.raises(ContentBlocked):
        parse_output(b'{"images": [{"url": "https://x/a"}], "has_nsfw_concepts": [true]}')
    with pytest.raises(UpstreamError, match="without any image"):
        parse_output(b'{"images": []}')
    with pytest.raises(UpstreamError):
        parse_output(b'{"images": "nope"}')


# -- pure: map_error ----------------------------------------------------------------------
def _map(status: int, body: object, headers: dict[str, str] | None = None) -> Exception:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return map_error(
        status, httpx.Headers(headers or {}), raw, host="queue.fal.run", api_key=FAL_KEY
    )


def test_map_error_statuses() -> None:
    auth = _map(401, {"detail": f"bad key {FAL_KEY}"})
    assert isinstance(auth, UpstreamError) and auth.retryable
    assert "credentials" in auth.message and FAL_KEY not in auth.message

    blocked = _map(422, validation_error(["prompt"], "flagged", "content_policy_violation"))
    assert isinstance(blocked, ContentBlocked) and blocked.message == "prompt: flagged"

    invalid = _map(422, validation_error(["num_images"], "Input should be <= 4", "less_than"))
    assert type(invalid) is UpstreamError and not invalid.retryable
    assert "num_images: Input should be <= 4" in invalid.message

    limited = _map(429, {"detail": "Too many requests"}, {"retry-after": "7"})
    assert isinstance(limited, UpstreamUnavailable) and limited.retry_after == 7

    overloaded = _map(503, b"<html>nginx</html>")
    assert isinstance(overloaded, UpstreamUnavailable) and "nginx" in overloaded.message

    crashed = _map(500, {"detail": f"runner failed with {FAL_KEY}"})
    assert type(crashed) is UpstreamError and crashed.retryable
    assert FAL_KEY not in crashed.message and "[redacted]" in crashed.message

    assert isinstance(_map(504, {"detail": "Request timed out"}), UpstreamTimeout)


# -- the class against the real-HTTP mock -------------------------------------------------
@pytest.fixture(scope="module")
def _fal_server() -> Iterator[MockFalUpstream]:
    with MockFalUpstream(api_key=FAL_KEY) as server:
        yield server


@pytest.fixture
def fal(_fal_server: MockFalUpstream) -> MockFalUpstream:
    _fal_server.reset()
    return _fal_server


def make_adapter(fal: MockFalUpstream, context: AdapterContext, **config: object) -> FalAdapter:
    return FalAdapter(make_provider(fal.base_url, **config), context)


@pytest.mark.anyio
async def test_generate_submits_polls_and_downloads(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    fal.queued_polls, fal.running_polls = 2, 1
    request = make_request(n=2, seed=5, output_format="jpeg")

    result = await make_adapter(fal, context).generate(request, upstream_model="fal-ai/flux/dev")

    assert [sniff_format(i.data) for i in result.images] == ["jpeg", "jpeg"]
    assert {image_size(i.data) for i in result.images} == {(256, 128)}
    [submit] = fal.by_method("POST")
    assert submit.path == "/fal-ai/flux/dev"
    assert submit.headers["authorization"] == f"Key {FAL_KEY}"
    assert submit.json == {
        "image_size": {"width": 256, "height": 128},
        "prompt": "a red fox in snow",
        "num_images": 2,
        "seed": 5,
        "output_format": "jpeg",
    }
    gets = [r.path for r in fal.by_method("GET")]
    assert gets[:4] == ["/fal-ai/flux/requests/req-0001/status"] * 4
    assert gets[4] == "/fal-ai/flux/requests/req-0001"
    downloads = [r for r in fal.requests if r.path.startswith("/files/")]
    assert len(downloads) == 2
    assert all("authorization" not in r.headers for r in downloads)


@pytest.mark.anyio
async def test_nsfw_flagged_images_are_dropped(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    fal.nsfw_indexes = {0}
    adapter = make_adapter(fal, context)
    result = await adapter.generate(make_request(n=2), upstream_model="fal-ai/flux/dev")
    assert len(result.images) == 1

    fal.nsfw_indexes = {0, 1}
    with pytest.raises(ContentBlocked):
        await adapter.generate(make_request(n=2), upstream_model="fal-ai/flux/dev")


@pytest.mark.anyio
async def test_data_uri_results_and_preset_sizes(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    request = make_request(
        sizing="preset", size="square", params={"image_size": "square"}, extra={"sync_mode": True}
    )
    result = await make_adapter(fal, context).generate(request, upstream_model="fal-ai/flux/dev")
    assert image_size(result.images[0].data) == (512, 512)
    assert not [r for r in fal.requests if r.path.startswith("/files/")]
    assert (fal.by_method("POST")[0].json or {})["sync_mode"] is True


@pytest.mark.anyio
async def test_edit_reference_images_arrive_as_data_uris(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(
        fal,
        context,
        options={
            "poll_interval_s": 0.01,
            "edits": {"acme/seedream/t2i": {"endpoint": "acme/seedream/edit"}},
        },
    )
    result = await adapter.generate(
        make_request(images=(PNG_1PX, PNG_1PX)), upstream_model="acme/seedream/t2i"
    )
    assert len(result.images) == 1
    [submit] = fal.by_method("POST")
    assert submit.path == "/acme/seedream/edit"
    assert submit.images == [PNG_1PX, PNG_1PX]


@pytest.mark.anyio
async def test_moderated_prompt_is_content_blocked(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    with pytest.raises(ContentBlocked, match="flagged by a content checker"):
        await make_adapter(fal, context).generate(
            make_request(prompt="BLOCKME please"), upstream_model="fal-ai/flux/dev"
        )


@pytest.mark.anyio
async def test_validation_error_is_not_retryable(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await make_adapter(fal, context).generate(
            make_request(n=5), upstream_model="fal-ai/flux/dev"
        )
    assert not caught.value.retryable and "num_images" in caught.value.message


@pytest.mark.anyio
async def test_bad_key_is_never_echoed(fal: MockFalUpstream, context: AdapterContext) -> None:
    adapter = make_adapter(fal, context, api_key="fal-key-WRONG-9876543210")
    with pytest.raises(UpstreamError) as caught:
        await adapter.generate(make_request(), upstream_model="fal-ai/flux/dev")
    assert caught.value.retryable and "credentials" in caught.value.message
    assert "WRONG" not in caught.value.message


@pytest.mark.anyio
async def test_rate_limited_submission(fal: MockFalUpstream, context: AdapterContext) -> None:
    fal.fail_next(429, {"detail": "Rate limit exceeded"}, headers={"retry-after": "3"})
    with pytest.raises(UpstreamUnavailable) as caught:
        await make_adapter(fal, context).generate(make_request(), upstream_model="fal-ai/flux/dev")
    assert caught.value.retry_after == 3


@pytest.mark.anyio
async def test_failed_job(fal: MockFalUpstream, context: AdapterContext) -> None:
    fal.fail_result(500, {"detail": "Internal server error while running the model"})
    adapter = make_adapter(fal, context)
    with pytest.raises(UpstreamError, match=r"HTTP 500.*running the model") as caught:
        await adapter.generate(make_request(), upstream_model="fal-ai/flux/dev")
    assert caught.value.retryable

    fal.job_status = "FAILED"
    with pytest.raises(UpstreamError, match="FAILED"):
        await adapter.generate(make_request(), upstream_model="fal-ai/flux/dev")


@pytest.mark.anyio
async def test_passing_status_failures_are_ridden_out(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    fal.fail_status(502, times=3)
    result = await make_adapter(fal, context).generate(
        make_request(), upstream_model="fal-ai/flux/dev"
    )
    assert len(result.images) == 1
    assert not fal.by_method("PUT")


@pytest.mark.anyio
async def test_status_failing_past_the_budget_gives_the_job_up(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    fal.fail_status(503, times=3)
    options = {"poll_interval_s": 0.01, "poll_error_budget": 2}
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        await make_adapter(fal, context, options=options).generate(
            make_request(), upstream_model="fal-ai/flux/dev"
        )
    assert fal.jobs["req-0001"].cancelled


@pytest.mark.anyio
async def test_foreign_job_urls_are_rebuilt_on_the_queue(
    fal: MockFalUpstream, context: AdapterContext
) -> None:
    fal.foreign_urls = True
    result = await make_adapter(fal, context).generate(
        make_request(), upstream_model="fal-ai/flux/dev"
    )
    assert len(result.images) == 1
    assert all(r.path.startswith(("/fal-ai/", "/files/")) for r in fal.requests)


@pytest.mark.anyio
async def test_timeout_cancels_the_job(fal: MockFalUpstream, context: AdapterContext) -> None:
    fal.stall = True
    adapter = make_adapter(fal, context, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await adapter.generate(make_request(), upstream_model="fal-ai/flux/dev")
    assert time.monotonic() - started < 3
    [cancel] = fal.by_method("PUT")
    assert cancel.path == "/fal-ai/flux/requests/req-0001/cancel"
    assert cancel.headers["authorization"] == f"Key {FAL_KEY}"
    assert fal.jobs["req-0001"].cancelled


@pytest.mark.anyio
async def test_unreachable_queue(context: AdapterContext) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = FalAdapter(make_provider(f"http://127.0.0.1:{port}"), context)
    with pytest.raises(UpstreamUnavailable):
        await adapter.generate(make_request(), upstream_model="fal-ai/flux/dev")
