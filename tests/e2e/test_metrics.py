"""`/metrics` moves exactly with real requests (SPEC 8), driven by the official SDK.

Each test scrapes before and after and compares deltas (the registry is per process, shared by
every in-process test). Money is cross-checked against the account's balance: the cost
counters must add up to what the ledger actually took.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.e2e.conftest import Env
from tests.e2e.helpers import balance
from tests.support import factories
from tests.support.metrics import Samples, scrape

GEN = "image_gateway_requests_total"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_requests_money_ledger_and_upstream_move_with_real_requests(env: Env) -> None:
    client = env.client()
    before, balance_before = scrape(env.gateway.url), balance(env)

    client.images.generate(model="local-preview", prompt="a lighthouse", n=2)
    client.images.generate(model="gpt-image-1", prompt="a harbour", quality="low")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.images.generate(model="no-such-model", prompt="x")
    env.upstream.fail_next(500, {"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(openai.APIStatusError) as failed:
        client.images.generate(model="gpt-image-1", prompt="a storm", quality="low")

    after, balance_after = scrape(env.gateway.url), balance(env)
    unknown_code = unknown.value.body["code"]  # type: ignore[index]
    failed_code = failed.value.body["code"]  # type: ignore[index]
    failed_status = str(failed.value.status_code)

    def requests(**labels: str) -> float:
        return after.delta(before, GEN, endpoint="generations", **labels)

    assert requests(model="local-preview", status="200", code="") == 1
    assert requests(model="gpt-image-1", status="200", code="") == 1
    assert requests(model="", status="400", code=unknown_code) == 1
    assert requests(model="gpt-image-1", status=failed_status, code=failed_code) == 1
    assert requests() == 4
    assert after.delta(before, "image_gateway_request_duration_seconds_count") == 4

    assert after.delta(before, "image_gateway_images_total", model="local-preview") == 2
    assert after.delta(before, "image_gateway_images_total", model="gpt-image-1") == 1
    charged_usd = after.delta(before, "image_gateway_cost_usd_total")
    assert charged_usd > 0
    assert math.isclose(charged_usd, (balance_before - balance_after) / 1_000_000, abs_tol=1e-9)

    ops = {
        op: after.delta(before, "image_gateway_ledger_operations_total", op=op)
        for op in ("hold", "settle", "refund", "sweep")
    }
    assert ops["hold"] == 3  # the unknown model never reached the ledger
    assert ops["settle"] == 3
    assert ops["refund"] >= 1  # the failed call was refunded in full
    assert ops["sweep"] == 0

    upstream_count = "image_gateway_upstream_duration_seconds_count"
    assert after.delta(before, upstream_count, provider="local") == 1
    assert after.delta(before, upstream_count, provider="mockai") == 2
    assert after.delta(before, "image_gateway_upstream_errors_total", provider="mockai") == 1
    assert after.value("image_gateway_in_flight", endpoint="generations") == 0


def test_in_flight_and_streams_in_flight_while_a_request_waits(env: Env) -> None:
    env.upstream.latency_s = 3.0
    client = env.client(timeout=60)
    done = threading.Event()

    def stream() -> None:
        try:
            for _ in client.images.generate(model="gpt-image-1", prompt="slow", stream=True):
                pass
        finally:
            done.set()

    worker = threading.Thread(target=stream)
    worker.start()

    def streaming_now() -> bool:
        samples = scrape(env.gateway.url)
        return (
            samples.value("image_gateway_streams_in_flight", endpoint="generations") == 1
            and samples.value("image_gateway_in_flight", endpoint="generations") == 1
        )

    wait_for(streaming_now)
    worker.join(60)
    assert done.is_set()
    after = scrape(env.gateway.url)
    assert after.value("image_gateway_streams_in_flight", endpoint="generations") == 0
    assert after.value("image_gateway_in_flight", endpoint="generations") == 0


def test_idempotent_replays_and_rate_limit_refusals(env: Env) -> None:
    async def limited_key(engine):  # type: ignore[no-untyped-def]
        return await factories.make_key(engine, env.account_id, rpm=1)

    _, limited_secret = env.run(limited_key)
    before = scrape(env.gateway.url)
    client = env.client()
    headers = {"Idempotency-Key": "metrics-replay-1"}
    first = client.images.generate(model="local-preview", prompt="once", extra_headers=headers)
    again = client.images.generate(model="local-preview", prompt="once", extra_headers=headers)
    assert again.data[0].b64_json == first.data[0].b64_json

    limited = env.client(limited_secret)
    limited.images.generate(model="local-preview", prompt="first")
    with pytest.raises(openai.RateLimitError):
        limited.images.generate(model="local-preview", prompt="second")
    after = scrape(env.gateway.url)

    assert after.delta(before, "image_gateway_idempotency_replays_total") == 1
    assert after.delta(before, "image_gateway_rate_limit_refusals_total", limit="rpm") == 1
    assert after.delta(before, GEN, status="429", code="RATE_LIMITED") == 1
    # the replay answered without a second hold
    assert after.delta(before, "image_gateway_ledger_operations_total", op="hold") == 2


def test_runtime_gauges_are_published(env: Env) -> None:
    def sampled() -> bool:
        samples = scrape(env.gateway.url)
        return (
            samples.value("image_gateway_event_loop_lag_seconds_count") > 0
            and samples.value("image_gateway_pool_size", pool="database") > 0
        )

    wait_for(sampled)
    samples = scrape(env.gateway.url)
    assert samples.value("image_gateway_pool_size", pool="upstream") > 0
    assert {"image_gateway_pool_in_use", "image_gateway_pool_waiting"} <= samples.names()


def test_probes_and_metrics_are_not_counted(env: Env) -> None:
    before = scrape(env.gateway.url)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(env.gateway.url + path).status_code == 200
    after = scrape(env.gateway.url)
    assert after.delta(before, GEN) == 0


TOKEN = "metrics-token-for-tests-0123456789"


@pytest.mark.gateway(settings={"metrics_token": TOKEN})
def test_metrics_token(env: Env) -> None:
    url = f"{env.gateway.url}/metrics"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "INVALID_METRICS_TOKEN"
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    env.client().images.generate(model="local-preview", prompt="counted")
    samples: Samples = scrape(env.gateway.url, token=TOKEN)
    assert samples.value(GEN, model="local-preview", status="200") >= 1
