"""Routes as a policy in the request path (issue 11): the `Router` chooses, retries and falls
back; its breaker takes a failing provider out; every request's attempts are in the request
log (`route`), visible in the admin API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Env
from tests.e2e.helpers import balance
from tests.support.metrics import scrape

FALLBACK = pytest.mark.gateway(
    models="""
  with-fallback:
    routes:
      - {provider: mockai, upstream_model: dall-e-2}
      - {provider: local}
    parameters:
      width:  {type: integer, min: 64, max: 512, default: 64}
      height: {type: integer, min: 64, max: 512, default: 64}
    pricing:
      per_image: 0.003
  with-retries:
    routes:
      - {provider: mockai, upstream_model: dall-e-2, retries: 2}
    parameters:
      image_size: {type: enum, values: [256x256], default: 256x256}
    pricing:
      per_image: 0.004
""",
)


def logged_requests(env: Env) -> list[dict[str, Any]]:
    with env.admin() as admin:
        response = admin.get("/requests", params={"account_id": env.account_id})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def provider_calls(env: Env) -> int:
    return sum(1 for r in env.upstream.requests if r.path.endswith("/images/generations"))


@FALLBACK
def test_a_failing_provider_is_fallen_back_from_then_cooled_down(env: Env) -> None:
    before = balance(env)
    client = env.client()
    env.upstream.fail_next(500, times=5)  # the breaker opens after 5 straight failures
    for _ in range(5):
        assert client.images.generate(model="with-fallback", prompt="x").data[0].b64_json
    assert provider_calls(env) == 5
    cooled = client.images.generate(model="with-fallback", prompt="x")
    assert cooled.data[0].b64_json
    assert provider_calls(env) == 5  # skipped while it cools down, not called a sixth time
    routes = [row["route"] for row in logged_requests(env)]  # newest first
    assert routes[0] == "mockai:SKIPPED_COOLDOWN>local:ok"
    assert routes[1:] == ["mockai:UPSTREAM_ERROR>local:ok"] * 5
    assert balance(env) == before - 6 * 3000  # failed attempts cost nothing


@FALLBACK
def test_retries_on_one_route_are_traced_and_billed_once(env: Env) -> None:
    before = balance(env)
    env.upstream.fail_next(503, times=2)
    result = env.client().images.generate(model="with-retries", prompt="x")
    assert result.data[0].b64_json
    assert provider_calls(env) == 3
    [row] = logged_requests(env)
    assert row["route"] == "mockai:UPSTREAM_UNAVAILABLE>mockai:UPSTREAM_UNAVAILABLE>mockai:ok"
    assert balance(env) == before - 4000


@FALLBACK
def test_route_choice_and_fallbacks_are_in_the_metrics(env: Env) -> None:
    client = env.client()
    before = scrape(env.gateway.url)
    env.upstream.fail_next(500, times=1)
    assert client.images.generate(model="with-fallback", prompt="x").data[0].b64_json  # falls back
    assert client.images.generate(model="with-fallback", prompt="y").data[0].b64_json  # first route
    after = scrape(env.gateway.url)

    def attempts(provider: str, outcome: str) -> float:
        return after.delta(
            before,
            "image_gateway_route_attempts_total",
            model="with-fallback",
            provider=provider,
            outcome=outcome,
        )

    assert attempts("mockai", "ok") == 1
    assert attempts("local", "ok") == 1
    failed = after.delta(
        before, "image_gateway_route_attempts_total", model="with-fallback", provider="mockai"
    )
    assert failed == 2  # one failure, one success
    fallbacks = "image_gateway_route_fallbacks_total"
    assert after.delta(before, fallbacks, model="with-fallback") == 1
