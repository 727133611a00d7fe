"""The Gemini adapter: its pure halves, then the class against a real-HTTP Gemini mock."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import orjson
import pytest

from app.adapters.base import AdapterContext, ImageRequest
from app.adapters.gemini import (
    GeminiAdapter,
    build_call,
    build_image_config,
    map_error,
    nearest_aspect_ratio,
    parse_response,
)
from app.catalog.schema import ProviderConfig
from app.errors import (
    ContentBlocked,
    GatewayError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.images.codec import image_size, sniff_format
from tests.mocks.gemini_upstream import MockGeminiUpstream, google_error

KEY = "AIzaSy-gemini-SECRET-0123456789"
GOOGLE = ProviderConfig(allow_private_network=True, adapter="gemini", api_key=KEY)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff" + b"\x00" * 16


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="a banana in a tuxedo",
        n=1,
        output_format="png",
        sizing="tier",
        size="2048x1152",
        params={"aspect_ratio": "16:9", "resolution": "2K"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def answer(*parts: dict[str, object], **extra: object) -> bytes:
    candidate = {"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP"}
    return orjson.dumps({"candidates": [candidate], **extra})


def inline(data: bytes, **extra: object) -> dict[str, object]:
    return {
        "inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}
    } | extra


# -- build_call -------------------------------------------------------------------------------
def test_generation_call() -> None:
    call = build_call(
        make_request(seed=5), upstream_model="gemini-3-pro-image-preview", provider=GOOGLE
    )

    assert call.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-3-pro-image-preview:generateContent"
    )
    assert call.headers == {"x-goog-api-key": KEY}
    assert call.json == {
        "contents": [{"role": "user", "parts": [{"text": "a banana in a tuxedo"}]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
            "seed": 5,
        },
    }


def test_edit_images_come_before_the_prompt_and_mask_is_not_sent() -> None:
    call = build_call(
        make_request(images=(PNG, JPEG), mask=PNG), upstream_model="m", provider=GOOGLE
    )

    assert call.json is not None
    parts = call.json["contents"][0]["parts"]
    assert parts == [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
        {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(JPEG).decode()}},
        {"text": "a banana in a tuxedo"},
    ]


def test_forwarded_fields_land_where_gemini_expects_them() -> None:
    provider = ProviderConfig(
        allow_private_network=True,
        adapter="gemini",
        api_key=KEY,
        base_url="https://proxy.example/",
        headers={"X-Team": "a"},
        options={"response_modalities": ["TEXT", "IMAGE"], "api_version": "v1alpha"},
    )
    request = make_request(
        params={"aspect_ratio": "auto", "resolution": "1K", "temperature": 0.4, "topP": None},
        extra={"safetySettings": [{"category": "X"}], "candidateCount": 4, "prompt": "hijack"},
    )
    call = build_call(request, upstream_model="models/gemini-x", provider=provider)

    assert call.url == "https://proxy.example/v1alpha/models/gemini-x:generateContent"
    assert call.headers == {"x-goog-api-key": KEY, "X-Team": "a"}
    assert call.json is not None
    assert call.json["safetySettings"] == [{"category": "X"}]
    assert call.json["generationConfig"] == {
        "temperature": 0.4,
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"imageSize": "1K"},  # "auto" aspect: the model picks
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sizing": "aspect", "params": {"aspect_ratio": "9:16"}}, {"aspectRatio": "9:16"}),
        ({"sizing": "aspect", "params": {"aspect_ratio": "auto"}}, {}),
        ({"sizing": "pixel", "size": "1920x1080", "params": {}}, {"aspectRatio": "16:9"}),
        ({"sizing": "pixel", "size": "1000x1250", "params": {}}, {"aspectRatio": "4:5"}),
        ({"sizing": "preset", "size": "1024x1536", "params": {}}, {"aspectRatio": "2:3"}),
        ({"sizing": "preset", "size": "auto_2K", "params": {}}, {}),
        ({"sizing": "none", "size": None, "params": {}}, {}),
    ],
)
def test_sizing(changes: dict[str, object], expected: dict[str, str]) -> None:
    assert build_image_config(make_request(**changes)) == expected


def test_half_tier_and_big_seeds_fit_gemini() -> None:
    request = make_request(params={"aspect_ratio": "1:1", "resolution": "0.5K"}, seed=2**31 + 7)
    call = build_call(request, upstream_model="gemini-3.1-flash-image-preview", provider=GOOGLE)

    assert call.json is not None
    assert call.json["generationConfig"]["imageConfig"] == {
        "aspectRatio": "1:1",
        "imageSize": "512",
    }
    assert call.json["generationConfig"]["seed"] == 7


def test_nearest_aspect_ratio() -> None:
    assert nearest_aspect_ratio(2560, 1080, ("1:1", "16:9", "21:9")) == "21:9"
    assert nearest_aspect_ratio(100, 100, ("auto", "4:3", "1:1")) == "1:1"
    assert nearest_aspect_ratio(1, 8, ("1:1", "1:4", "1:8")) == "1:8"  # options.aspect_ratios


# -- parse_response ---------------------------------------------------------------------------
def test_parse_skips_thoughts_and_reads_usage() -> None:
    usage = {
        "promptTokenCount": 270,
        "candidatesTokenCount": 1120,
        "thoughtsTokenCount": 150,
        "totalTokenCount": 1540,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 12},
            {"modality": "IMAGE", "tokenCount": 258},
        ],
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
    }
    body = answer(
        inline(JPEG, thought=True), {"text": "Here it is"}, inline(PNG), usageMetadata=usage
    )

    parsed = parse_response(body)

    assert [i.data for i in parsed.images] == [PNG]
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (270, 1270)
    assert parsed.usage.total_tokens == 1540
    assert parsed.usage.input_tokens_details == {"text_tokens": 12, "image_tokens": 258}
    assert parsed.usage.output_tokens_details == {"image_tokens": 1120}


def test_parse_accepts_snake_case_and_file_links() -> None:
    snake = {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(PNG).decode()}}
    link = {"file_data": {"mime_type": "image/png", "file_uri": "https://cdn.example/x.png"}}

    parsed = parse_response(answer(snake, link))

    assert [(i.data, i.url) for i in parsed.images] == [
        (PNG, None),
        (None, "https://cdn.example/x.png"),
    ]
    assert parsed.usage is None


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}}, r"blocked the prompt \(SAFETY\)"),
        ({"prompt_feedback": {"block_reason": "OTHER"}}, r"blocked the prompt \(OTHER\)"),
        ({"candidates": [{"finishReason": "IMAGE_SAFETY"}]}, r"withheld.*IMAGE_SAFETY"),
        (
            {"candidates": [{"finishReason": "PROHIBITED_CONTENT", "finishMessage": f"no {KEY}"}]},
            "PROHIBITED_CONTENT",
        ),
    ],
)
def test_moderation_signals(body: dict[str, object], match: str) -> None:
    with pytest.raises(ContentBlocked, match=match) as caught:
        parse_response(orjson.dumps(body), api_key=KEY)
    assert KEY not in caught.value.message


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>oops</html>", "not a Gemini response"),
        (b"{}", r"without an image \(no candidates\)"),
        (answer({"text": "I cannot draw that."}), r"\(STOP\): I cannot draw that"),
        (orjson.dumps({"candidates": [{"finishReason": "NO_IMAGE"}]}), "NO_IMAGE"),
        (answer({"inlineData": {"mimeType": "image/png", "data": "@@@"}}), "invalid base64"),
        (answer({"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}}), "without an image"),
    ],
)
def test_unusable_answers(body: bytes, match: str) -> None:
    with pytest.raises(UpstreamError, match=match) as caught:
        parse_response(body)
    assert type(caught.value) is UpstreamError


# -- map_error --------------------------------------------------------------------------------
def error_for(status: int, body: object, headers: dict[str, str] | None = None) -> GatewayError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return map_error(
        status,
        httpx.Headers(headers or {}),
        raw,
        host="generativelanguage.googleapis.com",
        api_key=KEY,
    )


def test_bad_key_answer_is_a_credentials_error() -> None:
    body = google_error(
        400,
        "INVALID_ARGUMENT",
        f"API key not valid ({KEY})",
        details=[{"reason": "API_KEY_INVALID"}],
    )
    for status, payload in ((400, body), (403, google_error(403, "PERMISSION_DENIED", KEY))):
        error = error_for(status, payload)
        assert type(error) is UpstreamError and error.retryable is True
        assert "rejected the gateway's credentials" in error.message
        assert KEY not in error.message and "SECRET" not in error.message


def test_rate_limit_uses_google_retry_info() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
    )
    error = error_for(429, body)
    assert type(error) is UpstreamUnavailable
    assert error.retry_after == 37.0
    assert "HTTP 429 RESOURCE_EXHAUSTED" in error.message
    assert error_for(429, body, {"retry-after": "3"}).retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "body", "expected", "retryable"),
    [
        (400, google_error(400, "INVALID_ARGUMENT", "bad"), UpstreamError, False),
        (404, google_error(404, "NOT_FOUND", "no model"), UpstreamError, False),
        (500, google_error(500, "INTERNAL", "oops"), UpstreamError, True),
        (503, google_error(503, "UNAVAILABLE", "overloaded"), UpstreamUnavailable, True),
        (504, google_error(504, "DEADLINE_EXCEEDED", "slow"), UpstreamTimeout, True),
        (502, b"<html>bad gateway</html>", UpstreamError, True),
        (500, [google_error(500, "INTERNAL", "list-shaped")], UpstreamError, True),
    ],
)
def test_error_statuses(
    status: int, body: object, expected: type[UpstreamError], retryable: bool
) -> None:
    error = error_for(status, body)
    assert type(error) is expected
    assert isinstance(error, UpstreamError) and error.retryable is retryable


def test_error_messages_are_redacted() -> None:
    error = error_for(500, google_error(500, "INTERNAL", f"failed with key {KEY}"))
    assert KEY not in error.message and "[redacted]" in error.message


# -- the adapter against the mock -------------------------------------------------------------
pytest_anyio = pytest.mark.anyio


@pytest.fixture(scope="module")
def _gemini_server() -> Iterator[MockGeminiUpstream]:
    with MockGeminiUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture
def gemini(_gemini_server: MockGeminiUpstream) -> MockGeminiUpstream:
    _gemini_server.reset()
    return _gemini_server


def make_adapter(
    upstream: MockGeminiUpstream, context: AdapterContext, **config: object
) -> GeminiAdapter:
    settings: dict[str, object] = {
        "adapter": "gemini",
        "base_url": upstream.base_url,
        "api_key": KEY,
        "timeout_s": 10,
    }
    settings.update(config)
    return GeminiAdapter(
        ProviderConfig.model_validate({"allow_private_network": True, **settings}), context
    )


PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"


@pytest_anyio
async def test_tier_generation(gemini: MockGeminiUpstream, context: AdapterContext) -> None:
    gemini.thought_images = 2

    result = await make_adapter(gemini, context).generate(make_request(), upstream_model=PRO)

    [image] = result.images
    assert sniff_format(image.data) == "png"
    assert image_size(image.data) == (256, 144)  # 2K at the mock's 1/8 scale, 16:9
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (5, 1120 + 150)
    [sent] = gemini.requests
    assert sent.path == f"/v1beta/models/{PRO}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.json is not None
    assert sent.json["generationConfig"]["imageConfig"] == {
        "aspectRatio": "16:9",
        "imageSize": "2K",
    }


@pytest_anyio
async def test_half_tier_and_wide_ratio(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    request = make_request(params={"aspect_ratio": "4:1", "resolution": "0.5K"})

    result = await make_adapter(gemini, context).generate(
        request, upstream_model="gemini-3.1-flash-image-preview"
    )

    assert image_size(result.images[0].data) == (64, 16)  # 512 px at the mock's 1/8 scale


@pytest_anyio
async def test_fan_out_makes_n_concurrent_single_image_calls(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    request = make_request(n=3, seed=10, sizing="aspect", params={"aspect_ratio": "1:1"})

    result = await make_adapter(gemini, context).generate(request, upstream_model=FLASH)

    assert len(result.images) == 3
    assert len({i.data for i in result.images}) == 3
    seeds = sorted(r.json["generationConfig"]["seed"] for r in gemini.requests if r.json)
    assert seeds == [10, 11, 12]
    assert result.usage is not None and result.usage.output_tokens == 3 * 1290


@pytest_anyio
async def test_fan_out_returns_what_succeeded(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    gemini.fail_next(500)

    result = await make_adapter(gemini, context).generate(make_request(n=3), upstream_model=PRO)

    assert len(result.images) == 2


@pytest_anyio
async def test_fan_out_all_rate_limited(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    gemini.fail_next(429, google_error(429, "RESOURCE_EXHAUSTED", "quota"), times=2)

    with pytest.raises(UpstreamUnavailable, match="RESOURCE_EXHAUSTED"):
        await make_adapter(gemini, context).generate(make_request(n=2), upstream_model=PRO)


@pytest_anyio
async def test_edit_sends_reference_images(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    adapter = make_adapter(gemini, context)
    source = (await adapter.generate(make_request(), upstream_model=PRO)).images[0].data
    gemini.reset()

    result = await adapter.generate(
        make_request(images=(source, source), sizing="pixel", size="1024x1024", params={}),
        upstream_model=FLASH,
    )

    assert result.usage is not None
    assert result.usage.input_tokens_details == {"text_tokens": 5, "image_tokens": 516}
    [sent] = gemini.requests
    assert sent.json is not None
    parts = sent.json["contents"][0]["parts"]
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[:2]] == [source, source]
    assert sent.json["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1"}


@pytest_anyio
@pytest.mark.parametrize("mode", ["snake", "file"])
async def test_other_result_shapes(
    gemini: MockGeminiUpstream, context: AdapterContext, mode: str
) -> None:
    gemini.mode = mode  # type: ignore[assignment]
    gemini.image_format = "webp"

    result = await make_adapter(gemini, context).generate(make_request(), upstream_model=PRO)

    assert sniff_format(result.images[0].data) == "webp"
    downloads = [r for r in gemini.requests if r.path.startswith("/files/")]
    assert len(downloads) == (1 if mode == "file" else 0)
    assert all("x-goog-api-key" not in r.headers for r in downloads)  # never leak the key


@pytest_anyio
async def test_image_over_the_size_limit(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    tiny = AdapterContext(http=context.http, max_download_bytes=100)

    with pytest.raises(UpstreamError, match="limit"):
        await make_adapter(gemini, tiny).generate(make_request(), upstream_model=PRO)


@pytest_anyio
@pytest.mark.parametrize(
    ("prompt", "match"),
    [("BLOCKPROMPT x", "PROHIBITED_CONTENT"), ("BLOCKIMAGE y", "IMAGE_SAFETY")],
)
async def test_moderation_is_content_blocked(
    gemini: MockGeminiUpstream, context: AdapterContext, prompt: str, match: str
) -> None:
    with pytest.raises(ContentBlocked, match=match) as caught:
        await make_adapter(gemini, context).generate(
            make_request(prompt=prompt), upstream_model=PRO
        )
    assert caught.value.status == 400 and caught.value.code == "CONTENT_BLOCKED"


@pytest_anyio
async def test_text_only_answer(gemini: MockGeminiUpstream, context: AdapterContext) -> None:
    with pytest.raises(UpstreamError, match="only describe it in words"):
        await make_adapter(gemini, context).generate(
            make_request(prompt="TEXTONLY"), upstream_model=PRO
        )


@pytest_anyio
async def test_wrong_key_never_echoed(gemini: MockGeminiUpstream, context: AdapterContext) -> None:
    wrong = "AIzaSy-wrong-key-ABCDEFGHIJKLMNOP"
    with pytest.raises(UpstreamError) as caught:
        await make_adapter(gemini, context, api_key=wrong).generate(
            make_request(), upstream_model=PRO
        )
    assert "rejected the gateway's credentials (HTTP 400)" in caught.value.message
    assert caught.value.retryable is True
    assert wrong not in str(caught.value) and "ABCDEFGH" not in str(caught.value)


@pytest_anyio
async def test_rejected_request_is_not_retryable(
    gemini: MockGeminiUpstream, context: AdapterContext
) -> None:
    with pytest.raises(UpstreamError, match="Unsupported image size") as caught:
        await make_adapter(gemini, context).generate(make_request(), upstream_model=FLASH)
    assert type(caught.value) is UpstreamError and caught.value.retryable is False


@pytest_anyio
@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (429, {"retry-after": "7"}, UpstreamUnavailable, 7.0),
        (503, {}, UpstreamUnavailable, None),
        (500, {}, UpstreamError, None),
        (504, {}, UpstreamTimeout, None),
    ],
)
async def test_server_side_failures(
    gemini: MockGeminiUpstream,
    context: AdapterContext,
    status: int,
    headers: dict[str, str],
    expected: type[UpstreamError],
    retry_after: float | None,
) -> None:
    gemini.fail_next(status, google_error(status, "X", f"failure with {KEY}"), headers=headers)

    with pytest.raises(expected) as caught:
        await make_adapter(gemini, context).generate(make_request(), upstream_model=PRO)
    assert type(caught.value) is expected
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after
    assert KEY not in caught.value.message


@pytest_anyio
async def test_timeout(gemini: MockGeminiUpstream, context: AdapterContext) -> None:
    gemini.latency_s = 3
    started = time.perf_counter()

    with pytest.raises(UpstreamTimeout, match=r"within 0\.2 s"):
        await make_adapter(gemini, context, timeout_s=0.2).generate(
            make_request(), upstream_model=PRO
        )
    assert time.perf_counter() - started < 2


@pytest_anyio
async def test_connection_refused(context: AdapterContext) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = GeminiAdapter(
        ProviderConfig(
            allow_private_network=True,
            adapter="gemini",
            base_url=f"http://127.0.0.1:{port}",
            api_key=KEY,
        ),
        context,
    )

    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        await adapter.generate(make_request(), upstream_model=PRO)
