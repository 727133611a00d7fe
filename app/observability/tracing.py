"""Optional OpenTelemetry tracing: request -> ledger -> upstream spans, sent over OTLP/HTTP.

    POST /v1/images/generations            (server span, from the middleware; a client's
    ├── ledger.hold                         `traceparent` header makes it a child)
    ├── upstream <provider>                (one per attempt, from the route caller)
    └── ledger.settle

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set: then the app's
lifespan builds a `TracerProvider` with a batching OTLP/HTTP exporter and `span()` records;
otherwise `span()` yields None at once and the SDK and exporter are never imported. Spans
carry names, ids, models, providers, statuses and codes, never prompts, images or secrets.
The exporter reads the other standard `OTEL_EXPORTER_OTLP_*` variables (headers, timeout).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def start_tracing(url: str, *, service_name: str) -> None:
    """Trace this process's requests to `url` (an OTLP/HTTP traces endpoint)."""
    # imported here: a gateway without tracing never loads the SDK, protobuf or requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    global _tracer, _provider
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: __version__})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _provider = provider
    _tracer = provider.get_tracer("image_gateway", __version__)


def stop_tracing() -> None:
    """Export what is buffered and stop recording (the lifespan's end)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


Attributes = Mapping[str, str | int | float | bool]


@contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    headers: Mapping[str, str] | None = None,
) -> Iterator[Span | None]:
    """A span around a block (None inside when tracing is off). `headers`: a server span's
    incoming request headers, whose `traceparent` becomes its parent. An exception leaving
    the block is recorded on the span and marks it failed."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    parent = _propagator.extract(headers) if headers is not None else None
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


def fail(current: Span | None, code: str) -> None:
    """Mark a span failed with a gateway error code."""
    if current is not None:
        current.set_attribute("error.code", code)
        current.set_status(Status(StatusCode.ERROR, code))
