"""OpenTelemetry tracing to an OTLP/HTTP endpoint: request -> ledger -> upstream spans.

A tiny OTLP/HTTP receiver on loopback (the protobuf `ExportTraceServiceRequest` POSTed to
`/v1/traces`, as the official exporter sends it) collects what the gateway exports; the
gateway is stopped first, which flushes its batch. A client `traceparent` makes the server
span its child, and the ledger and upstream spans are children of the server span.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support import factories
from tests.support.live import LiveGateway, write_catalog
from tests.support.served import run_db

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  tiny:
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 16, max: 64, default: 16}
      height: {type: integer, min: 16, max: 64, default: 16}
    pricing: {per_image: 0.001}
"""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Any] = []
        self.resources: list[dict[str, str]] = []
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.paths.append(self.path)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            self.server.resources.append(attributes)
            for scope_spans in resource_spans.scope_spans:
                self.server.spans.extend(scope_spans.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


def test_request_ledger_and_upstream_spans(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    async def seed(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=10_000_000)
        _, secret = await factories.make_key(engine, account)
        return secret

    secret = run_db(database_url, seed)
    with LiveGateway(
        database_url=database_url,
        catalog_path=write_catalog(tmp_path, CATALOG),
        otlp_endpoint=receiver.url,
        otel_service_name="gateway-under-test",
    ) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        client.images.generate(model="tiny", prompt="traced", extra_headers=traceparent)
        with pytest.raises(openai.BadRequestError):
            client.images.generate(model="missing", prompt="traced failure")
    # stopping the gateway flushed the exporter's batch

    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert receiver.resources[0]["service.name"] == "gateway-under-test"
    spans = receiver.spans
    servers = [s for s in spans if s.name == "POST /v1/images/generations"]
    assert len(servers) == 2
    traced = next(s for s in servers if s.trace_id.hex() == TRACE_ID)
    assert traced.parent_span_id.hex() == PARENT_ID
    assert attributes(traced)["http.response.status_code"] == 200
    assert attributes(traced)["gateway.model"] == "tiny"

    children = {s.name: s for s in spans if s.parent_span_id == traced.span_id}
    assert set(children) == {"ledger.hold", "upstream local", "ledger.settle"}
    assert all(child.trace_id == traced.trace_id for child in children.values())
    hold, upstream, settle = (
        children[n] for n in ("ledger.hold", "upstream local", "ledger.settle")
    )
    assert hold.end_time_unix_nano <= upstream.start_time_unix_nano
    assert upstream.end_time_unix_nano <= settle.start_time_unix_nano
    assert attributes(upstream)["gateway.provider"] == "local"

    failed = next(s for s in servers if s is not traced)
    assert failed.trace_id.hex() != TRACE_ID  # no traceparent: a trace of its own
    assert attributes(failed)["http.response.status_code"] == 400
    assert attributes(failed)["error.code"] == "MODEL_NOT_FOUND"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
