"""The one observability middleware: per-request facts, metrics, access line and server span.

Pure ASGI (no `BaseHTTPMiddleware`: no extra task, no body buffering). It sits inside
`RequestIdMiddleware`, so the request id is known; per request it costs a context variable,
a few metric updates and, when on, one log line.

    status   from `http.response.start` (a stream's status is 200 even when its error event
             carries a code: the code is in the `code` label and the access line)
    code     the error code the error handler or the settlement recorded
    stream   a `text/event-stream` response: counted in streams in flight until it ends

A request that raises past every handler (the outer error middleware answers 500) is counted
as 500 INTERNAL_ERROR; a client that went away before any answer as 499 CLIENT_CLOSED.
Probes and `/metrics` are not counted or logged: they are the scraper's noise, not traffic.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.money import micros_to_json
from app.observability import metrics, tracing
from app.observability.facts import RequestFacts, close_facts, open_facts

access_logger = logging.getLogger("image_gateway.access")

UNOBSERVED: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_PREFIXES: Final = (
    ("/v1/images/generations", "generations"),
    ("/v1/images/edits", "edits"),
    ("/v1/models", "models"),
    ("/v1/usage", "usage"),
    ("/admin/", "admin"),
    ("/console", "console"),
    ("/docs", "docs"),
    ("/openapi.json", "docs"),
)
_EVENT_STREAM: Final = b"text/event-stream"


def endpoint_of(path: str) -> str:
    """The `endpoint` label of a path: a fixed set, so unknown paths cannot grow the series."""
    for prefix, name in _PREFIXES:
        if path.startswith(prefix):
            return name
    return "other"


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name == b"content-type":
            return bool(value.startswith(_EVENT_STREAM))
    return False


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNOBSERVED:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        state = scope.get("state", {})
        facts = RequestFacts(
            request_id=state.get("request_id", ""),
            client_request_id=state.get("client_request_id"),
            method=scope["method"],
            path=path,
            endpoint=endpoint_of(path),
        )
        token = open_facts(facts)
        in_flight = metrics.in_flight_child(facts.endpoint)
        in_flight.inc()
        started = time.perf_counter()
        try:
            if tracing.enabled():
                await self._traced(scope, receive, send, facts)
            else:
                await self._observed(scope, receive, send, facts)
        finally:
            if facts.status is None:  # cancelled before answering: the client went away
                facts.status, facts.code = 499, facts.code or "CLIENT_CLOSED"
            elapsed = time.perf_counter() - started
            in_flight.dec()
            if facts.stream:
                metrics.streams_child(facts.endpoint).dec()
            metrics.record_request(facts, elapsed)
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    _access_message(facts, elapsed), extra=access_fields(facts, elapsed)
                )
            close_facts(token)

    async def _observed(
        self, scope: Scope, receive: Receive, send: Send, facts: RequestFacts
    ) -> None:
        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                facts.status = message["status"]
                if _is_event_stream(message):
                    facts.stream = True
                    metrics.streams_child(facts.endpoint).inc()
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except BaseException:
            if facts.status is None:
                facts.status = 500
                facts.code = facts.code or "INTERNAL_ERROR"
            raise

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, facts: RequestFacts
    ) -> None:
        with tracing.span(
            f"{facts.method} {facts.path}",
            {"http.request.method": facts.method, "url.path": facts.path},
            kind=SpanKind.SERVER,
            headers=_headers(scope),
        ) as span:
            try:
                await self._observed(scope, receive, send, facts)
            finally:
                if span is not None:
                    _describe(span, facts)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _describe(span: Any, facts: RequestFacts) -> None:
    span.set_attribute("http.response.status_code", facts.status or 0)
    span.set_attribute("gateway.request_id", facts.request_id)
    for name in ("model", "provider", "account_id", "key_id"):
        value = getattr(facts, name)
        if value is not None:
            span.set_attribute(f"gateway.{name}", value)
    if facts.code is not None:
        tracing.fail(span, facts.code)


def _access_message(facts: RequestFacts, elapsed_s: float) -> str:
    text = f"{facts.method} {facts.path} {facts.status}"
    if facts.code:
        text += f" {facts.code}"
    return f"{text} {elapsed_s * 1000:.0f}ms"


def access_fields(facts: RequestFacts, elapsed_s: float) -> dict[str, Any]:
    """The access line's structured fields (`extra` of the log record; JSON keys)."""
    return {
        "event": "access",
        "request_id": facts.request_id,
        "client_request_id": facts.client_request_id,
        "method": facts.method,
        "path": facts.path,
        "endpoint": facts.endpoint,
        "status": facts.status,
        "code": facts.code,
        "key_id": facts.key_id,
        "account_id": facts.account_id,
        "model": facts.model,
        "provider": facts.provider,
        "stream": facts.stream,
        "replayed": facts.replayed,
        "images": facts.images,
        "cost_usd": None if facts.cost_micros is None else micros_to_json(facts.cost_micros),
        "duration_ms": round(elapsed_s * 1000, 1),
        "upstream_ms": round(facts.upstream_s * 1000, 1),
        "gateway_ms": round(max(0.0, elapsed_s - facts.upstream_s) * 1000, 1),
    }
