"""The OpenAI adapter against a real HTTP server speaking the OpenAI Images API."""

from __future__ import annotations

import base64
import io
import os
import socket
import time
from dataclasses import replace

import orjson
import pytest
from PIL import Image

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.openai import OpenAIAdapter
from app.catalog.schema import ProviderConfig
from app.errors import (
    ContentBlocked,
    GatewayError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.images.codec import image_size, sniff_format
from tests.adapters.conftest import UPSTREAM_KEY
from tests.mocks.openai_upstream import MockOpenAIUpstream, openai_error

pytestmark = pytest.mark.anyio


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a red fox in snow",
        n=1,
        output_format="png",
        sizing="pixel",
        size="256x128",
        params={},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def make_adapter(
    upstream: MockOpenAIUpstream, context: AdapterContext, **config: object
) -> OpenAIAdapter:
    settings: dict[str, object] = {
        "adapter": "openai",
        "base_url": upstream.base_url + "/",  # a trailing slash is tolerated
        "api_key": UPSTREAM_KEY,
        "timeout_s": 10,
    }
    settings.update(config)
    return OpenAIAdapter(
        ProviderConfig.model_validate({"allow_private_network": True, **settings}), context
    )


async def test_gpt_image_b64(upstream: MockOpenAIUpstream, context: AdapterContext) -> None:
    adapter = make_adapter(upstream, context)
    request = make_request(n=2, output_format="jpeg", quality="high")

    result = await adapter.generate(request, upstream_model="gpt-image-1")

    assert [sniff_format(i.data) for i in result.images] == ["jpeg", "jpeg"]
    assert {image_size(i.data) for i in result.images} == {(256, 128)}
    assert result.usage is not None and result.usage.output_tokens > 0
    assert result.usage.input_tokens_details == {"text_tokens": 5, "image_tokens": 0}
    [sent] = upstream.requests
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a red fox in snow",
        "n": 2,
        "size": "256x128",
        "quality": "high",
        "output_format": "jpeg",
    }


async def test_legacy_model_asks_for_b64_and_gets_revised_prompt(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    result = await make_adapter(upstream, context).generate(
        make_request(), upstream_model="dall-e-3"
    )

    assert result.images[0].revised_prompt == "A detailed rendering of: a red fox in snow"
    assert result.usage is None
    body = upstream.requests[0].json
    assert body is not None
    assert body["response_format"] == "b64_json"
    assert "output_format" not in body


@pytest.mark.parametrize("chunked", [False, True])
async def test_url_mode_downloads_images(
    upstream: MockOpenAIUpstream, context: AdapterContext, chunked: bool
) -> None:
    upstream.mode = "url"
    upstream.chunked_files = chunked
    upstream.image_format = "webp"  # another format than asked: the service transcodes

    result = await make_adapter(upstream, context).generate(
        make_request(n=3), upstream_model="gpt-image-1"
    )

    assert len(result.images) == 3
    assert all(sniff_format(i.data) == "webp" for i in result.images)
    downloads = [r for r in upstream.requests if r.path.startswith("/files/")]
    assert len(downloads) == 3
    assert all("authorization" not in r.headers for r in downloads)  # never leak the key


@pytest.mark.parametrize("chunked", [False, True])
async def test_download_size_limit(
    upstream: MockOpenAIUpstream, http: object, context: AdapterContext, chunked: bool
) -> None:
    upstream.mode = "url"
    upstream.chunked_files = chunked
    tiny = AdapterContext(http=context.http, max_download_bytes=100)

    with pytest.raises(UpstreamError, match="100-byte limit"):
        await make_adapter(upstream, tiny).generate(make_request(), upstream_model="gpt-image-1")


async def test_oversized_b64_answer_is_refused(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    tiny = AdapterContext(http=context.http, max_download_bytes=1)
    upstream.fail_next(200, {"data": [{"b64_json": "A" * 200_000}]})

    with pytest.raises(UpstreamError, match="limit"):
        await make_adapter(upstream, tiny).generate(make_request(), upstream_model="gpt-image-1")


async def test_azure_style_deployment(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(
        upstream,
        context,
        base_url=f"{upstream.root_url}/openai/deployments/my-image-dep",
        api_version="2025-04-01-preview",
    )

    await adapter.generate(make_request(), upstream_model="gpt-image-1")

    [sent] = upstream.requests
    assert sent.path == "/openai/deployments/my-image-dep/images/generations"
    assert sent.query == {"api-version": "2025-04-01-preview"}
    assert sent.headers["api-key"] == UPSTREAM_KEY
    assert "authorization" not in sent.headers


async def test_provider_headers_and_forwarded_fields(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(upstream, context, headers={"X-Org": "acme", "OpenAI-Project": "p1"})
    request = make_request(
        params={"width": 256, "height": 128, "background": "transparent", "style": None},
        extra={"moderation": "low", "model": "hijack", "stream": True, "user": "u"},
        seed=7,
        user="end-user-1",
    )

    await adapter.generate(request, upstream_model="gpt-image-1")

    [sent] = upstream.requests
    assert sent.headers["x-org"] == "acme"
    assert sent.headers["openai-project"] == "p1"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a red fox in snow",
        "n": 1,
        "size": "256x128",
        "seed": 7,
        "background": "transparent",
        "moderation": "low",
        "output_format": "png",
    }


async def test_edits_send_multipart_images_and_mask(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(upstream, context)
    source = (await adapter.generate(make_request(), upstream_model="gpt-image-1")).images[0].data
    upstream.reset()

    result = await adapter.generate(
        make_request(images=(source, source), mask=source, params={"background": "opaque"}),
        upstream_model="gpt-image-1",
    )

    assert len(result.images) == 1
    [sent] = upstream.requests
    assert sent.path == "/v1/images/edits"
    assert sent.files == {"image[]": [source, source], "mask": [source]}
    assert sent.form == {
        "model": "gpt-image-1",
        "prompt": "a red fox in snow",
        "n": "1",
        "size": "256x128",
        "background": "opaque",
        "output_format": "png",
    }


async def test_single_edit_image_is_sent_as_image(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(upstream, context)
    source = (await adapter.generate(make_request(), upstream_model="gpt-image-1")).images[0].data

    await adapter.generate(make_request(images=(source,)), upstream_model="gpt-image-1")

    assert upstream.requests[-1].files == {"image": [source]}


@pytest.mark.parametrize(
    ("model", "prompt"), [("gpt-image-1", "BLOCKME please"), ("dall-e-3", "BLOCKME")]
)
async def test_moderation_is_content_blocked(
    upstream: MockOpenAIUpstream, context: AdapterContext, model: str, prompt: str
) -> None:
    with pytest.raises(ContentBlocked, match="safety system") as caught:
        await make_adapter(upstream, context).generate(
            make_request(prompt=prompt), upstream_model=model
        )
    assert caught.value.status == 400
    assert caught.value.code == "CONTENT_BLOCKED"


async def test_rejected_request_is_not_retryable(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await make_adapter(upstream, context).generate(
            make_request(size="13x13x13"), upstream_model="gpt-image-1"
        )
    error = caught.value
    assert type(error) is UpstreamError
    assert error.code == "UPSTREAM_ERROR"
    assert error.retryable is False
    assert "rejected the request (HTTP 400)" in error.message
    assert "Invalid size" in error.message
    assert UpstreamError.retryable is True  # the class default is untouched


async def test_wrong_credentials_never_echo_any_key(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    wrong = "sk-wrong-key-ABCDEFGHIJKLMNOP"
    with pytest.raises(UpstreamError) as caught:
        await make_adapter(upstream, context, api_key=wrong).generate(
            make_request(), upstream_model="gpt-image-1"
        )
    assert "rejected the gateway's credentials (HTTP 401)" in caught.value.message
    assert wrong not in str(caught.value) and "ABCDEFGH" not in str(caught.value)


async def test_no_auth_option_sends_no_authorization(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError):
        await make_adapter(upstream, context, options={"auth": "none"}).generate(
            make_request(), upstream_model="gpt-image-1"
        )
    assert "authorization" not in upstream.requests[0].headers


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (429, {"retry-after": "7"}, UpstreamUnavailable, 7.0),
        (503, {"retry-after-ms": "1500"}, UpstreamUnavailable, 1.5),
        (500, {}, UpstreamError, None),
        (502, {}, UpstreamError, None),
        (504, {}, UpstreamTimeout, None),
    ],
)
async def test_server_side_failures(
    upstream: MockOpenAIUpstream,
    context: AdapterContext,
    status: int,
    headers: dict[str, str],
    expected: type[UpstreamError],
    retry_after: float | None,
) -> None:
    upstream.fail_next(status, headers=headers)

    with pytest.raises(expected) as caught:
        await make_adapter(upstream, context).generate(make_request(), upstream_model="gpt-image-1")
    assert type(caught.value) is expected
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b'{"data": []}', b'{"data": [{"b64_json": "@@@"}]}'],
)
async def test_unusable_success_answers(
    upstream: MockOpenAIUpstream, context: AdapterContext, body: bytes
) -> None:
    upstream.fail_next(200, body)

    with pytest.raises(UpstreamError):
        await make_adapter(upstream, context).generate(make_request(), upstream_model="gpt-image-1")


def noise_png(px: int) -> bytes:
    """Incompressible pixels: a PNG of ~3 bytes per pixel, like a photo-sized answer."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (px, px), os.urandom(px * px * 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("escaped_slashes", [False, True], ids=["plain", "slashes-escaped"])
async def test_a_large_b64_answer_arrives_unchanged(
    upstream: MockOpenAIUpstream, context: AdapterContext, escaped_slashes: bool
) -> None:
    png = noise_png(384)
    b64 = base64.b64encode(png)
    answer = orjson.dumps(
        {
            "created": 1,
            "data": [{"b64_json": b64.decode(), "revised_prompt": 'a "b64_json": fox'}],
            "quality": "high",
            "usage": {"input_tokens": 3, "output_tokens": 40, "total_tokens": 43},
        }
    )
    if escaped_slashes:  # `\/` is valid JSON for `/`: the full parse reads it
        answer = answer.replace(b"/", b"\\/")
    upstream.fail_next(200, answer)

    result = await make_adapter(upstream, context).generate(
        make_request(), upstream_model="gpt-image-1"
    )

    [image] = result.images
    assert (bytes(image.b64), image.data) == (b64, png)
    assert image.revised_prompt == 'a "b64_json": fox'
    assert (result.quality, result.usage and result.usage.total_tokens) == ("high", 43)


@pytest.mark.parametrize("damage", [b"@", b" ", b"=", b"\\n"])
async def test_large_invalid_base64_is_refused(
    upstream: MockOpenAIUpstream, context: AdapterContext, damage: bytes
) -> None:
    b64 = base64.b64encode(noise_png(128))
    broken = b64[:5000] + damage + b64[5000:]
    upstream.fail_next(200, b'{"data": [{"b64_json": "' + broken + b'"}]}')

    with pytest.raises(UpstreamError, match="invalid base64"):
        await make_adapter(upstream, context).generate(make_request(), upstream_model="gpt-image-1")


async def test_timeout(upstream: MockOpenAIUpstream, context: AdapterContext) -> None:
    upstream.latency_s = 3
    adapter = make_adapter(upstream, context, timeout_s=0.2)
    started = time.perf_counter()

    with pytest.raises(UpstreamTimeout, match=r"within 0\.2 s"):
        await adapter.generate(make_request(), upstream_model="gpt-image-1")
    assert time.perf_counter() - started < 2


async def test_connection_refused(context: AdapterContext) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = OpenAIAdapter(
        ProviderConfig(
            allow_private_network=True,
            adapter="openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="k",
        ),
        context,
    )

    with pytest.raises(
        UpstreamUnavailable, match=r"cannot reach 127\.0\.0\.1:\d+ \(ConnectError\)"
    ):
        await adapter.generate(make_request(), upstream_model="gpt-image-1")


async def test_fan_out_makes_n_single_image_calls(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    upstream.max_n = 1
    adapter = make_adapter(upstream, context, options={"fan_out": True})

    result = await adapter.generate(make_request(n=3, seed=10), upstream_model="gpt-image-1")

    assert len(result.images) == 3
    assert len({i.data for i in result.images}) == 3
    bodies = [r.json for r in upstream.requests]
    assert all(b is not None and b["n"] == 1 for b in bodies)
    assert sorted(b["seed"] for b in bodies if b is not None) == [10, 11, 12]
    assert result.usage is not None
    assert result.usage.output_tokens == 3 * upstream_tokens_per_image(128 * 256)


def upstream_tokens_per_image(pixels: int) -> int:
    return 1056 * pixels // (1024 * 1024)


async def test_fan_out_returns_what_succeeded(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    upstream.fail_next(500)
    adapter = make_adapter(upstream, context, options={"fan_out": True})

    result = await adapter.generate(make_request(n=3), upstream_model="gpt-image-1")

    assert len(result.images) == 2


async def test_fan_out_all_failed_raises_one_error(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    upstream.fail_next(429, times=3)
    adapter = make_adapter(upstream, context, options={"fan_out": True})

    with pytest.raises(UpstreamUnavailable):
        await adapter.generate(make_request(n=3), upstream_model="gpt-image-1")


async def test_without_fan_out_n_over_the_servers_limit_is_rejected(
    upstream: MockOpenAIUpstream, context: AdapterContext
) -> None:
    upstream.max_n = 1
    with pytest.raises(UpstreamError, match="Invalid 'n'"):
        await make_adapter(upstream, context).generate(
            make_request(n=2), upstream_model="gpt-image-1"
        )


ECHOING_ERRORS = [
    (400, openai_error(f"Bad value for key {UPSTREAM_KEY}", "invalid_request_error", None)),
    (500, openai_error(f"Internal error (auth Bearer {UPSTREAM_KEY})", "server_error", None)),
    (429, {"error": f"slow down {UPSTREAM_KEY}"}),
    (502, f"gateway exploded; key={UPSTREAM_KEY}".encode()),
    (400, openai_error(f"blocked for {UPSTREAM_KEY}", "x", "moderation_blocked")),
]


@pytest.mark.parametrize(("status", "body"), ECHOING_ERRORS)
async def test_no_error_message_carries_the_key(
    upstream: MockOpenAIUpstream, context: AdapterContext, status: int, body: object
) -> None:
    upstream.fail_next(status, body)

    with pytest.raises(GatewayError) as caught:
        await make_adapter(upstream, context).generate(make_request(), upstream_model="gpt-image-1")
    rendered = f"{caught.value} {caught.value.body()}"
    assert UPSTREAM_KEY not in rendered
    assert "SECRET" not in rendered
    assert "[redacted]" in rendered
