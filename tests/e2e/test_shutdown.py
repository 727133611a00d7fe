"""SIGTERM drains (rule 9 of the lifecycle issue): a real gateway process is told to stop
while a plain request and a stream wait on the provider.

- the plain request finishes and is settled (charged once);
- a stream whose provider answers within the grace period ends normally, charged;
- a stream still waiting when the grace period is over ends with `event: error`
  (SERVICE_UNAVAILABLE) and its hold is refunded: the connection is closed, never cut.

The provider is the mock OpenAI upstream in this process; its `gate` decides when it answers.
`served_gateway` checks afterwards that the process stopped with every account's books
balanced and nothing left pending.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.mocks.openai_upstream import MockOpenAIUpstream
from tests.support.books import assert_books_balance
from tests.support.served import ServedGateway, run_db, served_gateway

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
PRICE = 11_000  # gpt-image-1, quality low, 1024x1024
BODY: dict[str, Any] = {
    "model": "gpt-image-1",
    "prompt": "a lighthouse",
    "quality": "low",
    "size": "1024x1024",
}
CATALOG = """
providers:
  mockai:
    adapter: openai
    allow_private_network: true
    base_url: {upstream}
    api_key: {key}
models:
  gpt-image-1:
    routes: [{{provider: mockai}}]
    max_n: 4
    parameters:
      image_size: {{type: enum, values: [auto, 1024x1024], default: auto}}
      quality: {{type: enum, values: [low, auto], default: auto}}
    pricing:
      per_image: {{by: quality, values: {{low: 0.011, auto: 0.25}}}}
"""


@pytest.fixture
def upstream() -> Iterator[MockOpenAIUpstream]:
    with MockOpenAIUpstream(api_key=UPSTREAM_KEY) as mock:
        mock.gate = threading.Event()
        yield mock
        mock.gate.set()


@pytest.fixture
def gateway(
    tmp_path: Path, database_url: str, upstream: MockOpenAIUpstream
) -> Iterator[ServedGateway]:
    catalog = CATALOG.format(upstream=upstream.base_url, key=UPSTREAM_KEY)
    with served_gateway(
        tmp_path, database_url, catalog, balance_micros=1_000_000, GATEWAY_SHUTDOWN_GRACE_S="1"
    ) as served:
        yield served


def calls(upstream: MockOpenAIUpstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/images/generations"))


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def balance(gateway: ServedGateway) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, gateway.account_id)

    return int(run_db(gateway.database_url, read))


def in_background(
    gateway: ServedGateway, body: dict[str, Any]
) -> tuple[threading.Thread, dict[str, Any]]:
    """POST a generation from a thread; the dict gets its status and text (or the error)."""
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            response = httpx.post(
                f"{gateway.url}/v1/images/generations",
                content=orjson.dumps(body),
                headers={**gateway.auth, "Content-Type": "application/json"},
                timeout=60,
            )
            result["status"], result["text"] = response.status_code, response.text
        except httpx.HTTPError as exc:  # a cut connection ends up here
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, result


def test_sigterm_lets_plain_requests_finish_and_ends_late_streams_with_an_error(
    gateway: ServedGateway, upstream: MockOpenAIUpstream
) -> None:
    before = balance(gateway)
    plain, plain_result = in_background(gateway, BODY)
    stream, stream_result = in_background(gateway, {**BODY, "stream": True})
    wait_for(lambda: calls(upstream) == 2, "both requests to reach the provider")
    assert gateway.process.process is not None
    gateway.process.process.send_signal(signal.SIGTERM)
    stream.join(30)  # the grace period (1 s) runs out while the provider still works
    assert not stream.is_alive()
    assert "error" not in stream_result, stream_result.get("error")
    assert stream_result["status"] == 200
    text: str = stream_result["text"]
    assert "image_generation.completed" not in text
    last_event = text.strip().split("\n\n")[-1]
    assert last_event.startswith("event: error\n")
    error = orjson.loads(last_event.split("\n")[1].removeprefix("data: "))["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert upstream.gate is not None
    upstream.gate.set()  # now the provider answers the plain request
    plain.join(30)
    assert plain_result.get("status") == 200, plain_result
    assert orjson.loads(plain_result["text"])["data"][0]["b64_json"]
    gateway.process.process.wait(30)
    assert balance(gateway) == before - PRICE  # the plain request only; the stream refunded


def test_sigterm_lets_a_stream_that_finishes_within_the_grace_period_end_normally(
    gateway: ServedGateway, upstream: MockOpenAIUpstream
) -> None:
    before = balance(gateway)
    stream, stream_result = in_background(gateway, {**BODY, "stream": True})
    wait_for(lambda: calls(upstream) == 1, "the stream to reach the provider")
    assert gateway.process.process is not None
    gateway.process.process.send_signal(signal.SIGTERM)
    assert upstream.gate is not None
    upstream.gate.set()
    stream.join(30)
    assert stream_result.get("status") == 200, stream_result
    assert "event: image_generation.completed" in stream_result["text"]
    assert "event: error" not in stream_result["text"]
    gateway.process.process.wait(30)
    assert balance(gateway) == before - PRICE
