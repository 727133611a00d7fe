"""The SDK-types checker (`tests.support.sdk_contract`) refuses what a strict client refuses,
and the live gateway's bodies carry what OpenAI's own responses carry.

The checker's own tests feed it hand-written bodies (modelled on OpenAI's answers, not on our
renderer) with one thing broken at a time; the live tests drive the gateway with the SDK and
read what the checker saw.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import Env
from tests.e2e.helpers import decode
from tests.support.sdk_contract import (
    ContractCheckedApp,
    Message,
    Receive,
    Scope,
    Send,
    check_response,
)

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
JSON = "application/json"
SSE = "text/event-stream"

USAGE: dict[str, Any] = {
    "input_tokens": 12,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
    "output_tokens": 1056,
    "total_tokens": 1068,
    "cost": {"total_cost": 0.042},
}
IMAGES_BODY: dict[str, Any] = {
    "created": 1782595538,
    "model": "gpt-image-1",
    "background": "opaque",
    "output_format": "png",
    "quality": "medium",
    "size": "1024x1024",
    "data": [{"b64_json": "iVBORw0KGgo=", "index": 0}],
    "usage": USAGE,
}
COMPLETED_EVENT: dict[str, Any] = {
    "type": "image_generation.completed",
    "b64_json": "iVBORw0KGgo=",
    "created_at": 1782595538,
    "size": "1024x1024",
    "quality": "auto",
    "background": "opaque",
    "output_format": "png",
    "usage": USAGE,
}
PARTIAL_EVENT: dict[str, Any] = {
    **{k: v for k, v in COMPLETED_EVENT.items() if k != "usage"},
    "type": "image_generation.partial_image",
    "partial_image_index": 0,
}
ERROR_BODY: dict[str, Any] = {
    "error": {
        "message": "The model 'x' does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "MODEL_NOT_FOUND",
    }
}
MODEL: dict[str, Any] = {
    "id": "local-preview",
    "object": "model",
    "created": 1764000000,
    "owned_by": "image-gateway",
    "max_n": 4,
}


def changed(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `body` with the dotted `path` set to `value` (`...` deletes it)."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return body


def images(body: dict[str, Any], path: str = GENERATIONS) -> list[str]:
    kind, problems = check_response("POST", path, 200, JSON, orjson.dumps(body))
    assert kind == "images"
    return problems


def stream(
    *events: dict[str, Any], path: str = GENERATIONS, names: list[str] | None = None
) -> list[str]:
    names = names or [event["type"] for event in events]
    raw = b": keep-alive\n\n" + b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        for name, event in zip(names, events, strict=True)
    )
    kind, problems = check_response("POST", path, 200, SSE, raw)
    assert kind == "events"
    return problems


def test_a_body_like_openais_passes() -> None:
    assert images(IMAGES_BODY) == []
    assert (
        images(
            changed(
                IMAGES_BODY, "usage.output_tokens_details", {"image_tokens": 1056, "text_tokens": 0}
            )
        )
        == []
    )


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("created", ..., "created: Field required"),
        ("created", 1782595538.0, "created: Input should be a valid integer"),
        ("created", "1782595538", "created: Input should be a valid integer"),
        ("usage.input_tokens", ..., "usage.input_tokens: Field required"),
        ("usage.input_tokens_details", ..., "usage.input_tokens_details: Field required"),
        ("usage.input_tokens_details.text_tokens", ..., "text_tokens: Field required"),
        ("usage.total_tokens", "1068", "usage.total_tokens: Input should be a valid integer"),
        ("usage.output_tokens", True, "usage.output_tokens: Input should be a valid integer"),
        ("quality", "auto", "quality: Input should be"),  # events allow auto, bodies do not
        ("background", "auto", "background: Input should be"),
        ("output_format", "gif89", "output_format: Input should be"),
        ("data.0.b64_json", 7, "data.0.b64_json: Input should be a valid string"),
        ("usage", ..., "'usage' missing"),  # our promise: always there
        ("usage.cost", ..., "usage.cost.total_cost missing"),
        ("usage.cost.total_cost", "0.042", "usage.cost.total_cost missing or not a number"),
        ("size", ..., "'size' missing"),
        ("background", ..., "'background' missing"),
        ("output_format", ..., "'output_format' missing"),
        ("data", [], "no images in 'data'"),
    ],
)
def test_an_images_body_with_one_thing_wrong_is_refused(path: str, value: Any, says: str) -> None:
    problems = images(changed(IMAGES_BODY, path, value))
    assert len(problems) == 1 and says in problems[0], problems


def test_stream_events_like_openais_pass() -> None:
    assert stream(PARTIAL_EVENT, COMPLETED_EVENT) == []
    edit = [
        {**event, "type": event["type"].replace("image_generation", "image_edit")}
        for event in (PARTIAL_EVENT, COMPLETED_EVENT)
    ]
    assert stream(*edit, path=EDITS) == []


@pytest.mark.parametrize(
    ("events", "says"),
    [
        ([changed(COMPLETED_EVENT, "usage", ...)], "usage: Field required"),
        ([changed(COMPLETED_EVENT, "usage.cost", ...)], "usage.cost.total_cost missing"),
        (
            [changed(COMPLETED_EVENT, "created_at", 1.5)],
            "created_at: Input should be a valid integer",
        ),
        ([changed(COMPLETED_EVENT, "quality", "hd")], "quality: Input should be"),
        ([changed(COMPLETED_EVENT, "background", None)], "background: Input should be"),
        (
            [changed(PARTIAL_EVENT, "partial_image_index", ...)],
            "partial_image_index: Field required",
        ),
        (
            [changed(COMPLETED_EVENT, "type", "image_edit.completed")],
            "no SDK event type 'image_edit.completed'",
        ),
        ([changed(COMPLETED_EVENT, "type", "image_generation.done")], "no SDK event type"),
        (
            [
                {
                    "type": "error",
                    "error": {
                        "message": "m",
                        "type": "server_error",
                        "param": None,
                        "code": "boom",
                    },
                }
            ],
            "not an UPPER_CASE code",
        ),
        ([{"type": "error", "error": {"type": "server_error"}}], "error.message: Field required"),
    ],
)
def test_a_stream_event_with_one_thing_wrong_is_refused(
    events: list[dict[str, Any]], says: str
) -> None:
    problems = stream(*events)
    assert len(problems) == 1 and says in problems[0], problems


def test_an_event_named_otherwise_than_its_type_or_not_json_is_refused() -> None:
    problems = stream(COMPLETED_EVENT, names=["image_generation.partial_image"])
    assert len(problems) == 1 and "differs from the event name" in problems[0]
    _, problems = check_response("POST", GENERATIONS, 200, SSE, b"event: x\ndata: {nope\n\n")
    assert problems == ["event 0 (x): data is not JSON"]
    _, problems = check_response("POST", GENERATIONS, 200, SSE, b": keep-alive\n\n")
    assert problems == ["a stream that ended without any event"]
    # a client that hung up early may have seen no event at all
    assert check_response("POST", GENERATIONS, 200, SSE, b"", complete=False) == ("events", [])


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (changed(ERROR_BODY, "error.message", ...), JSON, "error.message: Field required"),
        (
            changed(ERROR_BODY, "error.param", 3),
            JSON,
            "error.param: Input should be a valid string",
        ),
        (changed(ERROR_BODY, "error.code", "model_not_found"), JSON, "not an UPPER_CASE code"),
        (changed(ERROR_BODY, "error.code", None), JSON, "not an UPPER_CASE code"),
        (changed(ERROR_BODY, "error.param", ...), JSON, "error.param missing (null is fine)"),
        ({"detail": "Not Found"}, JSON, "error: Field required"),
        (ERROR_BODY, "text/plain", "an error answered as text/plain"),
    ],
)
def test_an_error_body_the_sdks_cannot_read_is_refused(
    body: dict[str, Any], content_type: str, says: str
) -> None:
    assert check_response("GET", "/v1/anything", 404, JSON, orjson.dumps(ERROR_BODY)) == (
        "error",
        [],
    )
    kind, problems = check_response("GET", "/v1/anything", 404, content_type, orjson.dumps(body))
    assert kind == "error" and len(problems) == 1 and says in problems[0], problems


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("owned_by", ..., "owned_by: Field required"),
        ("object", "models", "object: Input should be 'model'"),
        ("created", "1764000000", "created: Input should be a valid integer"),
    ],
)
def test_a_model_entry_with_one_thing_wrong_is_refused(path: str, value: Any, says: str) -> None:
    assert check_response("GET", "/v1/models/local-preview", 200, JSON, orjson.dumps(MODEL)) == (
        "model",
        [],
    )
    entry = changed(MODEL, path, value)
    _, problems = check_response("GET", "/v1/models/local-preview", 200, JSON, orjson.dumps(entry))
    assert len(problems) == 1 and says in problems[0], problems
    listing = {"object": "list", "data": [MODEL, entry]}
    _, problems = check_response("GET", "/v1/models", 200, JSON, orjson.dumps(listing))
    assert len(problems) == 1 and says in problems[0], problems


def test_other_routes_are_not_judged_by_sdk_types() -> None:
    assert check_response("GET", "/admin/v1/accounts", 200, JSON, b"{}") == (None, [])
    assert check_response("GET", "/metrics", 200, "text/plain", b"# HELP") == (None, [])


def run_app(
    body_chunks: list[bytes], content_type: str, *, hang_up_after: int | None = None
) -> ContractCheckedApp:
    """A fake ASGI app answering `body_chunks` on POST /v1/images/generations, behind the
    checking wrapper; `hang_up_after`: the client is gone after that many chunks."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        for index, chunk in enumerate(body_chunks):
            if index == hang_up_after:
                raise OSError("client disconnected")
            await send(
                {
                    "type": "http.response.body",
                    "body": chunk,
                    "more_body": index < len(body_chunks) - 1,
                }
            )

    checked = ContractCheckedApp(app)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": GENERATIONS}
    try:
        asyncio.run(checked(scope, receive, send))
    except OSError:
        assert hang_up_after is not None
    # the wrapper passes everything through unchanged
    assert b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    ) == b"".join(body_chunks[:hang_up_after])
    return checked


def test_the_wrapper_checks_bodies_sent_in_pieces() -> None:
    raw = orjson.dumps(changed(IMAGES_BODY, "usage.input_tokens", ...))
    checked = run_app([raw[:40], raw[40:]], JSON)
    assert checked.checked["images"] == 1
    assert (
        len(checked.violations) == 1
        and "usage.input_tokens: Field required" in checked.violations[0]
    )
    with pytest.raises(AssertionError, match="responses the SDK types refuse"):
        checked.assert_clean()

    good = run_app([raw[:0], orjson.dumps(IMAGES_BODY)], JSON)
    assert good.violations == [] and good.checked["images"] == 1
    assert good.samples["images"][0]["usage"] == USAGE
    good.assert_clean()


def test_the_wrapper_checks_the_events_a_client_saw_before_hanging_up() -> None:
    partial = (
        b"event: image_generation.partial_image\ndata: "
        + orjson.dumps(changed(PARTIAL_EVENT, "size", 3))
        + b"\n\n"
    )
    completed = (
        b"event: image_generation.completed\ndata: " + orjson.dumps(COMPLETED_EVENT) + b"\n\n"
    )
    checked = run_app([partial, completed], SSE, hang_up_after=1)
    assert checked.checked["events"] == 1
    assert len(checked.violations) == 1 and "size" in checked.violations[0]


# --- the live gateway -------------------------------------------------------------------------


def test_the_live_gateway_is_checked(env: Env) -> None:
    client = env.client()
    client.models.list()
    client.models.retrieve("local-preview")
    client.images.generate(model="local-preview", prompt="a fox", size="64x64")
    list(client.images.generate(model="local-preview", prompt="a fox", size="64x64", stream=True))
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert (missing.value.code, missing.value.param) == ("MODEL_NOT_FOUND", "model")
    contract = env.gateway.contract
    assert contract.checked == {"models": 1, "model": 1, "images": 1, "events": 1, "error": 1}
    assert contract.violations == []
    assert set(contract.samples) >= {
        "models",
        "model",
        "images",
        "error",
        "event:image_generation.completed",
    }


def test_openai_route_reports_what_openai_reports(env: Env) -> None:
    """quality `auto` answered with what the provider chose; usage with OpenAI's output
    details; background from the provider, since the image has an alpha channel."""
    result = env.client().images.generate(
        model="gpt-image-1", prompt="a glass", background="transparent"
    )  # type: ignore[call-arg]
    assert (result.quality, result.background, result.output_format) == (
        "medium",
        "transparent",
        "png",
    )
    assert decode(result.data[0].b64_json or "").mode == "RGBA"
    usage = result.usage
    assert usage is not None and usage.output_tokens_details is not None
    assert usage.output_tokens_details.image_tokens == usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert result.to_dict()["usage"]["cost"]["total_cost"] == 0.25  # quality auto: priced as auto

    low = env.client().images.generate(
        model="gpt-image-1",
        prompt="a glass",
        quality="low",
        output_format="jpeg",
        background="transparent",
    )  # type: ignore[call-arg]
    # a JPEG cannot be transparent, whatever was asked
    assert (low.quality, low.background, low.output_format) == ("low", "opaque", "jpeg")


def test_models_without_token_usage_report_zeros(env: Env) -> None:
    result = env.client().images.generate(model="local-preview", prompt="a fox", size="64x64", n=2)
    usage = result.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (0, 0, 0)
    assert (usage.input_tokens_details.image_tokens, usage.input_tokens_details.text_tokens) == (
        0,
        0,
    )
    assert usage.output_tokens_details is None  # not known: left out
    assert result.quality is None  # local-preview has no quality setting
    assert (result.background, result.output_format, result.size) == ("opaque", "png", "64x64")
    assert result.to_dict()["usage"]["cost"]["total_cost"] == 0.002
