"""The public API checked against the official SDK's own types, on every response a test sees.

`ContractCheckedApp` wraps the gateway's ASGI app (`LiveGateway` does it by default, so every
end-to-end test, whatever its client, is checked) and, as each response completes, checks its
body with pydantic's strict validation against openai-python's generated types:

    POST /v1/images/generations|edits   200 JSON ─▶ `ImagesResponse` (+ our additions below)
                                        200 SSE  ─▶ each event: `ImageGenStreamEvent` /
                                                     `ImageEditStreamEvent` by its `type`,
                                                     `event:` == `type`; `error` events
                                                     carry an `ErrorObject`
    GET  /v1/models                     200      ─▶ `{"object": "list", "data": [Model]}`
    GET  /v1/models/{id}                200      ─▶ `Model`
    any path                            4xx/5xx  ─▶ `{"error": ErrorObject}`, an UPPER_CASE code
                                                     (but an HTML page under `/console/`, the
                                                     operator console's browser UI)

Strict means what a typed client means: `created: 1.0` or `"n": "2"` are refused, a missing
required field is refused, enum fields take only the SDK's values. Extra fields are allowed
(the SDK's models keep them), so our additions (`model`, `data[].index`, `usage.cost`) pass;
what we promise beyond the SDK is checked explicitly: `usage` with a numeric
`cost.total_cost` on every body and completed event, `size`, `output_format` and
`background` on every image body.

Violations are collected, not raised inside the server (the client would only see a broken
connection): `LiveGateway` fails the test at teardown with the list (`assert_clean`).
`samples` keeps a few bodies of each kind (base64 shortened; stream events under
`event:<type>`) for the Node type check (`tests/e2e/test_node_sdk_types.py`).
"""

from __future__ import annotations

import re
import typing
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import pydantic
from openai.types import (
    ImageEditStreamEvent,
    ImageGenStreamEvent,
    ImagesResponse,
    Model,
)
from openai.types.shared import ErrorObject

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IMAGE_PATHS: Final = {
    "/v1/images/generations": ImageGenStreamEvent,
    "/v1/images/edits": ImageEditStreamEvent,
}
ERROR_CODE: Final = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: how many bodies of each kind `samples` keeps
MAX_SAMPLES: Final = 8
#: where the operator console (`app.console`) is mounted
CONSOLE_PATH: Final = "/console"


def _event_types(union: Any) -> dict[str, type[pydantic.BaseModel]]:
    """`{"image_generation.completed": ImageGenCompletedEvent, ...}` from the SDK's union."""
    members = typing.get_args(typing.get_args(union)[0])  # Annotated[Union[...], info]
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


EVENT_TYPES: Final = {path: _event_types(union) for path, union in IMAGE_PATHS.items()}


class _ErrorBody(pydantic.BaseModel):
    """What the SDKs read from an error response (`body["error"]`)."""

    error: ErrorObject


class _ErrorEvent(pydantic.BaseModel):
    type: typing.Literal["error"]
    error: ErrorObject


class _ModelList(pydantic.BaseModel):
    object: typing.Literal["list"]
    data: list[Model]


def _strict(model: type[pydantic.BaseModel], raw: bytes | str) -> str | None:
    try:
        model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as exc:
        return f"not a valid {model.__name__}: {_short(exc)}"
    return None


def _short(exc: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '<body>'}: {error['msg']}"
        for error in exc.errors()[:5]
    )


def _cost_problem(usage: Any) -> str | None:
    cost = usage.get("cost") if isinstance(usage, dict) else None
    total = cost.get("total_cost") if isinstance(cost, dict) else None
    if isinstance(total, bool) or not isinstance(total, int | float):
        return "usage.cost.total_cost missing or not a number"
    return None


def check_images_body(raw: bytes) -> list[str]:
    """A 200 JSON body of an image endpoint."""
    problem = _strict(ImagesResponse, raw)
    if problem:
        return [problem]
    body = orjson.loads(raw)
    promised = ("size", "output_format", "background")
    problems = [f"'{name}' missing" for name in promised if name not in body]
    if not body.get("data"):
        problems.append("no images in 'data'")
    if "usage" not in body:
        problems.append("'usage' missing")
    elif cost := _cost_problem(body["usage"]):
        problems.append(cost)
    return problems


def parse_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of every complete event; comments and a cut-off tail are skipped."""
    events: list[tuple[str | None, str]] = []
    text = raw.decode("utf-8").replace("\r\n", "\n")
    blocks = text.split("\n\n")
    for block in blocks[:-1]:  # the last piece is empty or an event that never ended
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if data:
            events.append((name, "\n".join(data)))
    return events


def check_event_stream(path: str, raw: bytes, *, complete: bool = True) -> list[str]:
    """Every event of an image endpoint's stream (`complete`: the server ended it, rather
    than the client leaving early)."""
    problems: list[str] = []
    types = EVENT_TYPES[path]
    events = parse_sse(raw)
    if not events and complete:
        return ["a stream that ended without any event"]
    for index, (name, data) in enumerate(events):
        where = f"event {index} ({name})"
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            problems.append(f"{where}: data is not JSON")
            continue
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind != name:
            problems.append(f"{where}: 'type' {kind!r} differs from the event name")
        if kind == "error":
            model: type[pydantic.BaseModel] | None = _ErrorEvent
        else:
            model = types.get(str(kind))
        if model is None:
            problems.append(f"{where}: no SDK event type {kind!r} on {path}")
            continue
        if problem := _strict(model, data):
            problems.append(f"{where}: {problem}")
        elif kind == "error":
            problems += [f"{where}: {p}" for p in _error_problems(payload["error"])]
        elif str(kind).endswith(".completed") and (cost := _cost_problem(payload.get("usage"))):
            problems.append(f"{where}: {cost}")
    return problems


def check_error_body(raw: bytes) -> list[str]:
    problem = _strict(_ErrorBody, raw)
    if problem:
        return [problem]
    return _error_problems(orjson.loads(raw)["error"])


def _error_problems(error: dict[str, Any]) -> list[str]:
    # openai-node declares `param: string | null` and `code: string | null` as required
    problems = [
        f"error.{key} missing (null is fine)" for key in ("param", "code") if key not in error
    ]
    code = error.get("code")
    if not isinstance(code, str) or not ERROR_CODE.match(code):
        problems.append(f"error code {code!r} is not an UPPER_CASE code")
    return problems


#: operators' probes and metrics (SPEC 8): their own bodies (`/readyz`'s 503 lists its reasons),
#: not the OpenAI API's, so no SDK type covers them
OPERATIONS_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


def _in_console(path: str) -> bool:
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


def check_response(
    method: str, path: str, status: int, content_type: str, raw: bytes, *, complete: bool = True
) -> tuple[str | None, list[str]]:
    """(the kind of body it was, or None if no SDK type covers it; its violations).

    `complete`: the body was sent to its end (False: the client hung up first)."""
    json_body = content_type.startswith("application/json")
    if status >= 400:
        if method == "HEAD" or path in OPERATIONS_PATHS:
            return None, []
        if _in_console(path) and content_type.startswith("text/html"):
            # the operator console's pages are for a browser, not an SDK: a refusal there is
            # an HTML page by design; its JSON and event-stream answers are still checked
            return None, []
        if not json_body:
            return "error", [f"an error answered as {content_type or 'no content type'}"]
        return "error", check_error_body(raw)
    if status != 200:
        return None, []
    if method == "POST" and path in IMAGE_PATHS:
        if content_type.startswith("text/event-stream"):
            return "events", check_event_stream(path, raw, complete=complete)
        return "images", check_images_body(raw) if json_body else ["not JSON"]
    if method == "GET" and path == "/v1/models":
        return "models", [p for p in [_strict(_ModelList, raw)] if p]
    if method == "GET" and path.startswith("/v1/models/"):
        return "model", [p for p in [_strict(Model, raw)] if p]
    return None, []


@dataclass
class _Exchange:
    method: str
    path: str
    status: int = 0
    content_type: str = ""
    body: bytearray = field(default_factory=bytearray)
    checked: bool = False
    complete: bool = False


class ContractCheckedApp:
    """An ASGI app that passes everything through and checks each response as it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.violations: list[str] = []
        #: responses checked, by kind ("images", "events", "models", "model", "error")
        self.checked: Counter[str] = Counter()
        #: a few parsed bodies of each kind (base64 shortened), for the Node type check
        self.samples: dict[str, list[Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope["method"], scope["path"])

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                headers = dict(message.get("headers") or [])
                exchange.content_type = headers.get(b"content-type", b"").decode("latin-1")
            elif message["type"] == "http.response.body":
                exchange.body += message.get("body", b"")
                if not message.get("more_body", False):
                    exchange.complete = True
                    self._check(exchange)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if exchange.status and not exchange.checked:  # a stream the client left early
                self._check(exchange)

    def _check(self, exchange: _Exchange) -> None:
        exchange.checked = True
        raw = bytes(exchange.body)
        try:
            kind, problems = check_response(
                exchange.method,
                exchange.path,
                exchange.status,
                exchange.content_type,
                raw,
                complete=exchange.complete,
            )
        except Exception as exc:  # the checker must never break the server it watches
            kind, problems = "unreadable", [f"checker failed: {exc!r}"]
        if kind is None:
            return
        self.checked[kind] += 1
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        self.violations += [f"{where}: {problem}" for problem in problems]
        if not problems:
            self._keep_sample(kind, raw)

    def _keep_sample(self, kind: str, raw: bytes) -> None:
        if kind == "events":
            for _, data in parse_sse(raw):
                payload = shorten_base64(orjson.loads(data))
                bucket = self.samples.setdefault(f"event:{payload['type']}", [])
                if len(bucket) < MAX_SAMPLES:
                    bucket.append(payload)
            return
        bucket = self.samples.setdefault(kind, [])
        if len(bucket) < MAX_SAMPLES:
            bucket.append(shorten_base64(orjson.loads(raw)))

    def assert_clean(self) -> None:
        assert not self.violations, "responses the SDK types refuse:\n" + "\n".join(self.violations)


def shorten_base64(value: Any) -> Any:
    """The body with every `b64_json` / data-URI `url` cut to a few characters."""
    if isinstance(value, dict):
        return {
            key: item[:24]
            if key in ("b64_json", "url") and isinstance(item, str)
            else shorten_base64(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [shorten_base64(item) for item in value]
    return value
