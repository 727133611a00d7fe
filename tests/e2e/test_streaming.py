"""`stream: true` (SPEC 1.4) through the official SDK and raw HTTP: event types and order,
partial images, keep-alive comments, errors before and after the first byte, and billing
identical to the non-streaming call (the books are checked after every test)."""

from __future__ import annotations

import base64
import io
import os
import time
from typing import Any

import httpx
import openai
import orjson
import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.e2e.helpers import PREVIEW_PARTIALS_MODEL, balance, decode
from tests.support import factories

SLOW_AND_PARTIAL = pytest.mark.gateway(
    settings={"stream_keepalive_s": 0.1},
    providers="""
  slowlocal:
    adapter: local-preview
    options: {latency_ms: 600}
""",
    models=PREVIEW_PARTIALS_MODEL
    + """
  slow-preview:
    routes: [{provider: slowlocal}]
    pricing:
      per_image: 0.001
""",
)


def test_stream_completed_events_and_usage(env: Env) -> None:
    before = balance(env)
    stream = env.client().images.generate(
        model="local-preview",
        prompt="a red fox",
        size="320x256",
        output_format="webp",
        n=2,
        stream=True,
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.completed"] * 2
    for index, event in enumerate(events):
        image = decode(event.b64_json)
        assert (image.format, image.size) == ("WEBP", (320, 256))
        assert (event.size, event.output_format, event.index) == ("320x256", "webp", index)  # type: ignore[attr-defined]
        assert event.created_at > 0
        # local-preview has no quality setting; its images have no alpha channel
        assert (event.quality, event.background) == ("auto", "opaque")
    # the SDK type requires usage on every completed event: zeros but on the last
    first, last = (event.to_dict()["usage"] for event in events)
    assert first["cost"]["total_cost"] == 0 and first["total_tokens"] == 0
    assert last["cost"]["total_cost"] == 0.002
    assert balance(env) == before - 2000  # billed exactly like the plain call


@SLOW_AND_PARTIAL
def test_stream_partial_images_then_completed(env: Env) -> None:
    stream = env.client().images.generate(
        model="preview-partials",
        prompt="a lighthouse",
        size="256x192",
        partial_images=2,
        stream=True,
    )
    events = list(stream)
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]  # type: ignore[union-attr]
    for event in events:
        assert decode(event.b64_json).size == (256, 192)
        assert event.size == "256x192"
    assert events[0].b64_json != events[1].b64_json != events[2].b64_json
    assert events[-1].to_dict()["usage"]["cost"]["total_cost"] == 0.002


def test_partial_images_ignored_on_models_without_them(env: Env) -> None:
    events = list(
        env.client().images.generate(
            model="local-preview", prompt="x", partial_images=3, stream=True
        )
    )
    assert [event.type for event in events] == ["image_generation.completed"]


def test_stream_through_openai_adapter_carries_token_usage(env: Env) -> None:
    before = balance(env)
    events = list(
        env.client().images.generate(
            model="gpt-image-1", prompt="a lamp", size="1024x1024", quality="low", stream=True
        )
    )
    assert [event.type for event in events] == ["image_generation.completed"]
    usage = events[0].to_dict()["usage"]
    assert usage["cost"]["total_cost"] == 0.011
    assert usage["output_tokens"] > 0
    assert events[0].quality == "low"
    assert balance(env) == before - 11_000


def test_a_large_image_reaches_the_client_byte_for_byte_plain_and_streamed(env: Env) -> None:
    """A photo-sized answer (its base64 passed through, never parsed as a string) arrives
    exactly as the provider sent it, in the JSON body and in the completed event alike."""
    b64 = base64.b64encode(noise_png(512)).decode()
    answer = {"created": 1, "data": [{"b64_json": b64}], "quality": "low", "background": "opaque"}
    env.upstream.fail_next(200, orjson.dumps(answer), times=2)
    client = env.client()

    plain = client.images.generate(model="gpt-image-1", prompt="x", size="1024x1024")
    events = list(
        client.images.generate(model="gpt-image-1", prompt="x", size="1024x1024", stream=True)
    )

    assert plain.data is not None and plain.data[0].b64_json == b64
    assert (plain.size, plain.quality, plain.background) == ("512x512", "low", "opaque")
    [event] = events
    assert event.type == "image_generation.completed"
    assert (event.b64_json, event.size, event.quality) == (b64, "512x512", "low")


def noise_png(px: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (px, px), os.urandom(px * px * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_upstream_failure_after_the_stream_started_is_an_error_event(env: Env) -> None:
    before = balance(env)
    env.upstream.latency_s = 0.3  # the response has started before the upstream answers
    env.upstream.fail_next(500, {"error": {"message": "boom", "type": "server_error"}})
    stream = env.client().images.generate(model="gpt-image-1", prompt="x", stream=True)
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert info.value.body["code"] == "UPSTREAM_ERROR"  # type: ignore[index]
    assert info.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert "param" in info.value.body  # type: ignore[operator]
    assert balance(env) == before  # refunded


def raw_stream(env: Env, body: dict[str, Any], **headers: str) -> tuple[httpx.Response, str]:
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{env.gateway.base_url}/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {env.secret}", **headers},
        ) as response,
    ):
        return response, response.read().decode()


@SLOW_AND_PARTIAL
def test_keep_alive_comments_while_waiting_on_the_upstream(env: Env) -> None:
    response, text = raw_stream(env, {"model": "slow-preview", "prompt": "x", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    first_event = text.index("event: image_generation.completed")
    assert text[:first_event].count(": keep-alive\n\n") >= 2
    assert text.rstrip().endswith("}")  # closed after the last event
    data = text[first_event:].split("\n")[1]
    assert data.startswith('data: {"type":"image_generation.completed"')


@SLOW_AND_PARTIAL
def test_client_disconnect_while_waiting_still_bills_what_the_provider_made(env: Env) -> None:
    """A hang-up stops the sending, not the work: billed as the plain call would be (the
    lifecycle tests check the Idempotency-Key replay of such a request)."""
    before = balance(env)
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{env.gateway.base_url}/images/generations",
            json={"model": "slow-preview", "prompt": "x", "stream": True},
            headers={"Authorization": f"Bearer {env.secret}"},
        ) as response,
    ):
        assert next(response.iter_lines()) == ": keep-alive"  # waiting on the upstream
    deadline = time.monotonic() + 10
    while balance(env) != before - 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert balance(env) == before - 1000  # the image was made: charged once, nothing pending


def test_errors_before_the_first_byte_are_json(env: Env) -> None:
    async def poor(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=500)
        _, secret = await factories.make_key(engine, account)
        return secret

    secret = env.run(poor)
    with pytest.raises(openai.APIStatusError) as info:
        env.client(secret).images.generate(model="local-preview", prompt="x", stream=True)
    assert (info.value.status_code, info.value.code) == (402, "INSUFFICIENT_BALANCE")  # type: ignore[attr-defined]
    assert info.value.response.headers["content-type"] == "application/json"

    with pytest.raises(openai.BadRequestError) as bad:
        env.client().images.generate(model="local-preview", prompt="x", n=9, stream=True)
    assert (bad.value.code, bad.value.param) == ("INVALID_PARAMETER", "n")

    with pytest.raises(openai.AuthenticationError):
        env.client("sk-wrong").images.generate(model="local-preview", prompt="x", stream=True)


def test_idempotent_stream_is_replayed_not_charged_again(env: Env) -> None:
    before = balance(env)
    body = {"model": "local-preview", "prompt": "once", "stream": True, "n": 2}
    first, first_text = raw_stream(env, body, **{"Idempotency-Key": "stream-1"})
    again, again_text = raw_stream(env, body, **{"Idempotency-Key": "stream-1"})
    assert first.status_code == again.status_code == 200
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again_text == first_text
    assert first_text.count("event: image_generation.completed") == 2
    assert balance(env) == before - 2000
