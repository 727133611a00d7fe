"""Schemathesis against the gateway's own `/openapi.json`: the document tells the truth.

A served gateway (its own process, the admin API on) is fuzzed operation by operation, public
and admin, authorised with a real API key and the admin token, with a fixed seed. Every
answer must be one the document promises: no 5xx, a documented status, content type, headers
and body schema (the error object included), and schema-invalid input rejected with a 4xx.
When the process has stopped, every account's books balance (`served_gateway`).

- `test_openapi_short`: part of every test run, 10 + 5 cases per operation (~300 in all).
- `test_openapi_long`: `-m fuzz_long` (run separately by `.ci/run`), 100 + 50 per operation.
"""

from __future__ import annotations

import base64
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from PIL import Image
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import databases
from tests.support.served import ServedGateway, served_gateway

SEED = 20261203
#: examples per operation: schema-valid, then schema-invalid (each about half as many)
SHORT_EXAMPLES = 10
LONG_EXAMPLES = 100
CATALOG = """
providers:
  local:
    adapter: local-preview
models:
  local-preview:
    routes: [{provider: local}]
    prompt_max_length: 1000
    max_n: 2
    output_formats: [png, jpeg, webp]
    parameters:
      width:  {type: integer, min: 64, max: 256, multiple_of: 8, default: 64}
      height: {type: integer, min: 64, max: 256, multiple_of: 8, default: 64}
      seed:   {type: integer, min: 0}
    edit: {supported: true, max_reference_images: 2}
    pricing:
      per_image: 0.001
"""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("fuzz")
    database_url = databases.fresh_sqlite_copy(sqlite_template, folder)
    # Schema-invalid cases include requests without credentials; from one address those would
    # spend the failure budgets at once and leave only 429s (throttling has its own tests).
    with served_gateway(
        folder,
        database_url,
        CATALOG,
        GATEWAY_ADMIN_FAILURE_BURST="1000000",
        GATEWAY_KEY_FAILURE_BURST="1000000",
        # webhook endpoints the fuzzer registers name random hosts: no delivery pass (which
        # would resolve them, i.e. DNS traffic off loopback) during the run
        GATEWAY_WEBHOOK_POLL_INTERVAL_S="300",
        GATEWAY_WEBHOOK_SCAN_INTERVAL_S="3600",
    ) as gateway:
        yield gateway
    # leaving the block stopped the process and checked every account's books


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 60)).save(buffer, "PNG")
    return buffer.getvalue()


TINY_PNG = _tiny_png()


def _aim(case: Case) -> None:
    """Point a schema-valid image request at the real model with a real reference image,
    so the fuzzer's other fields reach validation, pricing, the ledger and the renderer
    instead of stopping at MODEL_NOT_FOUND or INVALID_IMAGE. Still schema-valid."""
    if not (case.path.startswith("/v1/images/") and isinstance(case.body, dict)):
        return
    case.body["model"] = "local-preview"
    if case.path.endswith("/edits"):
        if case.media_type == "multipart/form-data":
            case.body["image"] = TINY_PNG
        else:
            uri = "data:image/png;base64," + base64.b64encode(TINY_PNG).decode()
            case.body["images"] = [{"image_url": uri}]


def _runner(
    cases: SearchStrategy[Case],
    count: int,
    auth: dict[str, str],
    statuses: Counter[int],
    *,
    aim: bool,
) -> Callable[[], None]:
    @seed(SEED)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=cases, aimed=st.booleans())
    def run(case: Case, aimed: bool) -> None:
        if aim and aimed:
            _aim(case)
        # the credentials go into the case itself, not only onto the wire: a schema-invalid
        # case whose one other fault was a mangled Authorization header is then judged as
        # the (valid) request actually sent, not as the header schemathesis generated
        case.headers.update(auth)
        response = case.call(timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=auth)

    return run  # type: ignore[no-any-return]


def fuzz(gateway: ServedGateway, examples: int) -> None:
    """Every operation, `examples` schema-valid cases and half as many invalid ones; fails
    with every operation's first failure (Hypothesis shrinks it) and prints the figures."""
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        auth = gateway.admin_auth if operation.path.startswith("/admin/") else gateway.auth
        for mode, count in (
            (GenerationMode.POSITIVE, examples),
            (GenerationMode.NEGATIVE, max(1, examples // 2)),
        ):
            try:
                cases = operation.as_strategy(generation_mode=mode)
                aim = mode == GenerationMode.POSITIVE
                _runner(cases, count, auth, statuses[operation.label], aim=aim)()
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    total = sum(sum(counts.values()) for counts in statuses.values())
    print(f"\nschemathesis: {operations} operations, {total} cases, {len(failures)} failing")
    for label, counts in statuses.items():
        print(f"  {label}: {dict(sorted(counts.items()))}")
    assert operations >= 20, "the admin API is missing from the document"
    assert not failures, "\n\n".join(failures)


def test_openapi_short(served: ServedGateway) -> None:
    fuzz(served, SHORT_EXAMPLES)


@pytest.mark.fuzz_long
def test_openapi_long(served: ServedGateway) -> None:
    fuzz(served, LONG_EXAMPLES)
