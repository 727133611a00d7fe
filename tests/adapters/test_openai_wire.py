"""The OpenAI adapter's pure halves: request building, response parsing, error mapping."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import httpx
import pytest

from app.adapters.base import ImageRequest, TokenUsage
from app.adapters.openai import build_call, map_error, parse_response, sum_usage
from app.catalog.schema import ProviderConfig
from app.errors import ContentBlocked, UpstreamError, UpstreamTimeout, UpstreamUnavailable

OPENAI = ProviderConfig(allow_private_network=True, adapter="openai", api_key="sk-test")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def make_request(**changes: object) -> ImageRequest:
    base = ImageRequest(
        prompt="p", n=2, output_format="webp", sizing="tier", size="1536x1024", params={}
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_default_base_url_and_bearer() -> None:
    call = build_call(make_request(), upstream_model="gpt-image-1", provider=OPENAI)

    assert call.url == "https://api.openai.com/v1/images/generations"
    assert call.headers == {"Authorization": "Bearer sk-test"}
    assert call.params == {}
    assert call.json == {
        "model": "gpt-image-1",
        "prompt": "p",
        "n": 2,
        "size": "1536x1024",
        "output_format": "webp",
    }


def test_sizing_fields_are_translated_not_forwarded() -> None:
    request = make_request(
        params={"aspect_ratio": "3:2", "resolution": "1K", "width": 1, "image_size": "x"},
        extra={"size": "9x9", "height": 3},
    )
    call = build_call(request, upstream_model="gpt-image-1", provider=OPENAI)

    assert call.json is not None
    assert call.json["size"] == "1536x1024"
    assert not {"aspect_ratio", "resolution", "width", "height", "image_size"} & set(call.json)


def test_no_size_when_the_upstream_decides() -> None:
    call = build_call(make_request(size=None), upstream_model="gpt-image-1", provider=OPENAI)
    assert call.json is not None and "size" not in call.json


@pytest.mark.parametrize(
    ("model", "options", "gpt_image"),
    [
        ("gpt-image-1", {}, True),
        ("gpt-image-1-mini", {}, True),
        ("dall-e-3", {}, False),
        ("grok-2-image", {}, False),
        ("my-azure-deployment", {"image_api": "gpt-image"}, True),
        ("gpt-image-1", {"image_api": "legacy"}, False),
    ],
)
def test_output_format_or_response_format(
    model: str, options: dict[str, str], gpt_image: bool
) -> None:
    provider = OPENAI.model_copy(update={"options": options})
    body = build_call(make_request(), upstream_model=model, provider=provider).json
    assert body is not None
    if gpt_image:
        assert body["output_format"] == "webp" and "response_format" not in body
    else:
        assert body["response_format"] == "b64_json" and "output_format" not in body


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"api_key": None}, {}),
        ({"api_key": ""}, {}),
        ({"options": {"auth": "none"}}, {}),
        ({"options": {"auth": "api-key"}}, {"api-key": "sk-test"}),
        ({"api_version": "2025-04-01-preview"}, {"api-key": "sk-test"}),
        (
            {"api_version": "v", "options": {"auth": "bearer"}},
            {"Authorization": "Bearer sk-test"},
        ),
        ({"headers": {"Authorization": "Token abc"}}, {"Authorization": "Token abc"}),
    ],
)
def test_auth_headers(config: dict[str, object], expected: dict[str, str]) -> None:
    provider = OPENAI.model_copy(update=config)
    assert build_call(make_request(), upstream_model="m", provider=provider).headers == expected


def test_azure_base_url_and_query() -> None:
    provider = OPENAI.model_copy(
        update={
            "base_url": "https://res.openai.azure.com/openai/deployments/img/",
            "api_version": "2025-04-01-preview",
        }
    )
    call = build_call(make_request(), upstream_model="gpt-image-1", provider=provider)

    assert call.url == "https://res.openai.azure.com/openai/deployments/img/images/generations"
    assert call.params == {"api-version": "2025-04-01-preview"}


def test_fan_out_overrides_n_and_seed() -> None:
    call = build_call(make_request(seed=5), upstream_model="m", provider=OPENAI, n=1, seed=6)
    assert call.json is not None and (call.json["n"], call.json["seed"]) == (1, 6)


def test_edit_call_is_multipart_with_json_spelled_values() -> None:
    request = make_request(
        images=(PNG,),
        mask=PNG,
        params={"background": "transparent", "output_compression": 80},
        extra={"flag": True, "weights": [1, 2]},
    )
    call = build_call(request, upstream_model="gpt-image-1", provider=OPENAI)

    assert call.url.endswith("/images/edits")
    assert call.json is None
    assert call.data == {
        "model": "gpt-image-1",
        "prompt": "p",
        "n": "2",
        "size": "1536x1024",
        "output_format": "webp",
        "background": "transparent",
        "output_compression": "80",
        "flag": "true",
        "weights": "[1,2]",
    }
    assert call.files == [
        ("image", ("image_0.png", PNG, "image/png")),
        ("mask", ("mask.png", PNG, "image/png")),
    ]


def test_parse_b64_url_revised_prompt_and_usage() -> None:
    body = {
        "created": 1,
        "data": [
            {"b64_json": base64.b64encode(PNG).decode(), "revised_prompt": "better"},
            {"url": "https://cdn.example/x.png"},
            {"something": "else"},  # neither: skipped
        ],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "total_tokens": 30,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
            "output_tokens_details": {"image_tokens": 20, "text_tokens": 0},
        },
        "quality": "medium",  # what `auto` chose
        "background": "opaque",
    }
    parsed = parse_response(json.dumps(body).encode())

    assert [(p.data, p.url, p.revised_prompt) for p in parsed.images] == [
        (PNG, None, "better"),
        (None, "https://cdn.example/x.png", None),
    ]
    assert parsed.usage == TokenUsage(
        10, 20, 30, {"text_tokens": 10, "image_tokens": 0}, {"image_tokens": 20, "text_tokens": 0}
    )
    assert (parsed.quality, parsed.background) == ("medium", "opaque")


@pytest.mark.parametrize(
    "body", [b"", b"null", b"[]", b'{"data": null}', b'{"data": [{}]}', b'{"data": "x"}']
)
def test_parse_rejects_answers_without_images(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        parse_response(body)


def error_body(message: str, type_: str | None = None, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected", "retryable"),
    [
        (400, error_body("x", "invalid_request_error", "moderation_blocked"), ContentBlocked, None),
        (
            400,
            error_body("x", "invalid_request_error", "content_policy_violation"),
            ContentBlocked,
            None,
        ),
        (
            400,
            error_body("Blocked by the safety system", "image_generation_user_error"),
            ContentBlocked,
            None,
        ),
        (400, error_body("Image too small", "image_generation_user_error"), UpstreamError, False),
        (
            400,
            error_body("bad size", "invalid_request_error", "invalid_value"),
            UpstreamError,
            False,
        ),
        (404, error_body("model not found"), UpstreamError, False),
        (422, b"unprocessable", UpstreamError, False),
        (401, error_body("Incorrect API key provided: sk-...abcd"), UpstreamError, True),
        (403, b"forbidden", UpstreamError, True),
        (408, b"", UpstreamTimeout, True),
        (429, error_body("Rate limit reached"), UpstreamUnavailable, True),
        (503, b"overloaded", UpstreamUnavailable, True),
        (500, error_body("boom", "server_error"), UpstreamError, True),
        (504, b"", UpstreamTimeout, True),
        (302, b"", UpstreamError, True),
    ],
)
def test_map_error(
    status: int, body: bytes, expected: type[Exception], retryable: bool | None
) -> None:
    error = map_error(status, httpx.Headers(), body, host="api.example", api_key="sk-test")

    assert type(error) is expected
    if retryable is not None:
        assert isinstance(error, UpstreamError) and error.retryable is retryable


def test_rejection_message_names_the_provider_and_its_reason() -> None:
    error = map_error(
        400, httpx.Headers(), error_body("Invalid size 'x'."), host="api.example", api_key=None
    )
    assert error.message == "api.example rejected the request (HTTP 400): Invalid size 'x'."


def test_credentials_message_never_quotes_the_provider() -> None:
    error = map_error(
        401,
        httpx.Headers(),
        error_body("Incorrect API key provided: sk-live-abcdefgh"),
        host="api.example",
        api_key="sk-live-abcdefgh",
    )
    assert error.message == "api.example rejected the gateway's credentials (HTTP 401)"


def test_sum_usage() -> None:
    one = TokenUsage(1, 2, 3, {"text_tokens": 1})
    two = TokenUsage(10, 20, 30, {"text_tokens": 5, "image_tokens": 5}, {"image_tokens": 20})

    assert sum_usage([one, None, two]) == TokenUsage(
        11, 22, 33, {"text_tokens": 6, "image_tokens": 5}, {"image_tokens": 20}
    )
    assert sum_usage([None, None]) is None
