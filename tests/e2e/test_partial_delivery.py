"""n requested, fewer delivered: the client pays for the images it got (SPEC 4).

The `openai` adapter with `options.fan_out` makes n one-image calls to a server that allows
only n=1 (the mock's `max_n = 1`); when some of them fail, the rest are returned. The hold
covers all n; settlement refunds the undelivered ones, and `usage.cost.total_cost` says what
stayed charged.
"""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import Env
from tests.support.books import assert_books_balance

PRICE = 50_000  # fan-out-model: $0.05 per image

FAN_OUT = pytest.mark.gateway(
    providers="""
  one-at-a-time:
    adapter: openai
    base_url: {upstream}
    api_key: ${TEST_MOCK_UPSTREAM_KEY}
    options: {fan_out: true}
""",
    models="""
  fan-out-model:
    routes: [{provider: one-at-a-time, upstream_model: n1-model}]
    max_n: 4
    parameters:
      image_size: {type: enum, values: [auto, 512x512], default: 512x512}
    pricing:
      per_image: 0.05
""",
)


def books(env: Env) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, env.account_id)

    return int(env.run(read))


@FAN_OUT
def test_fewer_images_than_n_are_billed_as_delivered(env: Env) -> None:
    env.upstream.max_n = 1
    env.upstream.fail_next(500)  # one of the three one-image calls fails
    before = books(env)
    raw = env.client().images.with_raw_response.generate(
        model="fan-out-model", prompt="three foxes", n=3
    )
    result = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert len(result.data) == 2
    assert [item.index for item in result.data] == [0, 1]
    assert result.to_dict()["usage"]["cost"]["total_cost"] == 0.1
    calls = [r.json for r in env.upstream.requests]
    assert len(calls) == 3 and all(call and call["n"] == 1 for call in calls)
    assert books(env) == before - 2 * PRICE

    with env.admin() as admin:
        ledger = admin.get(f"/accounts/{env.account_id}/ledger", params={"limit": 2}).json()
        [logged] = admin.get("/requests", params={"key_id": env.key_id}).json()["data"]
    assert [(r["kind"], r["amount"], r["request_id"]) for r in ledger["data"]] == [
        ("refund", 0.05, request_id),
        ("charge", -0.15, request_id),
    ]
    assert (logged["id"], logged["state"], logged["images"]) == (request_id, "settled", 2)
    assert (logged["held"], logged["cost"]) == (0.15, 0.1)


@FAN_OUT
def test_none_delivered_is_a_502_and_free(env: Env) -> None:
    env.upstream.max_n = 1
    env.upstream.fail_next(500, times=2)
    before = books(env)
    with pytest.raises(openai.InternalServerError) as info:
        env.client().images.generate(model="fan-out-model", prompt="two foxes", n=2)
    assert (info.value.status_code, info.value.code) == (502, "UPSTREAM_ERROR")
    assert len(env.upstream.requests) == 2
    assert books(env) == before
