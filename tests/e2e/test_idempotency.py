"""`Idempotency-Key` (SPEC 4) as SDK users and operators meet it, against a live gateway.

A repeat with the same key and body is answered from the stored response without calling the
provider or charging again; another body under the same key is 409; a failed request does
not burn its key; keys belong to one account; admin credits honour the header too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import Env
from tests.support import factories
from tests.support.books import assert_books_balance

PRICE = 11_000  # gpt-image-1, quality low, 1024x1024
BODY: dict[str, Any] = {"model": "gpt-image-1", "prompt": "a lighthouse", "quality": "low"}


def books(env: Env, account_id: str | None = None) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, account_id or env.account_id)

    return int(env.run(read))


def generate(client: openai.OpenAI, idempotency_key: str, **overrides: Any) -> Any:
    """The raw response (bytes and headers) of one SDK generation with the given key."""
    return client.images.with_raw_response.generate(
        **{**BODY, "size": "1024x1024", **overrides},
        extra_headers={"Idempotency-Key": idempotency_key},
    )


def unbilled(env: Env) -> list[dict[str, Any]]:
    """The request log's refused requests of the account, newest first."""
    with env.admin() as admin:
        response = admin.get(
            "/requests", params={"account_id": env.account_id, "state": "unbilled"}
        )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def generation_calls(env: Env) -> int:
    return sum(1 for r in env.upstream.requests if r.path.endswith("/images/generations"))


def test_a_repeat_is_replayed_not_recharged(env: Env) -> None:
    before = books(env)
    client = env.client()
    first = generate(client, "order-1")
    second = generate(client, "order-1")
    assert second.http_response.content == first.http_response.content
    assert second.parse().data[0].b64_json == first.parse().data[0].b64_json
    assert first.parse().to_dict()["usage"]["cost"]["total_cost"] == 0.011
    assert generation_calls(env) == 1
    assert books(env) == before - PRICE
    # a new key is a new request: generated and charged again
    third = generate(client, "order-2")
    assert third.parse().data[0].b64_json != first.parse().data[0].b64_json
    assert generation_calls(env) == 2
    assert books(env) == before - 2 * PRICE


def test_the_same_key_with_another_body_is_409(env: Env) -> None:
    client = env.client()
    generate(client, "order-1")
    before = books(env)
    with pytest.raises(openai.ConflictError) as info:
        generate(client, "order-1", prompt="another prompt")
    assert info.value.status_code == 409
    assert info.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert info.value.param == "Idempotency-Key"
    assert generation_calls(env) == 1
    assert books(env) == before
    [logged] = unbilled(env)
    assert logged["id"] == info.value.response.headers["x-request-id"]
    assert (logged["status"], logged["error_code"], logged["model"]) == (
        409,
        "IDEMPOTENCY_KEY_REUSED",
        "gpt-image-1",
    )


def test_an_overlong_key_is_a_400_on_every_backend(env: Env) -> None:
    before = books(env)
    client = env.client()
    with pytest.raises(openai.BadRequestError) as info:
        generate(client, "k" * 256)
    assert (info.value.code, info.value.param) == ("INVALID_PARAMETER", "Idempotency-Key")
    assert info.value.response.headers["x-should-retry"] == "false"
    assert [row["status"] for row in unbilled(env)] == [400]
    longest = "k" * 255
    first = generate(client, longest)
    assert generate(client, longest).http_response.content == first.http_response.content
    assert generation_calls(env) == 1
    assert books(env) == before - PRICE


def test_a_refused_request_does_not_burn_its_key(env: Env) -> None:
    """402 first; after a top-up the same key goes through, once."""

    async def poor(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, balance_micros=PRICE - 1)
        _, secret = await factories.make_key(engine, account_id)
        return account_id, secret

    account_id, secret = env.run(poor)
    client = env.client(secret)
    with pytest.raises(openai.APIStatusError) as info:
        generate(client, "topup-then-retry")
    assert (info.value.status_code, info.value.code) == (402, "INSUFFICIENT_BALANCE")
    with env.admin() as admin:
        credited = admin.post(f"/accounts/{account_id}/credits", json={"amount": "0.000001"})
        assert credited.status_code == 200, credited.text
    first = generate(client, "topup-then-retry")
    assert generate(client, "topup-then-retry").http_response.content == first.http_response.content
    assert generation_calls(env) == 1
    assert books(env, account_id) == 0


def test_a_repeat_while_the_first_runs_is_409_in_progress(env: Env) -> None:
    env.upstream.latency_s = 0.5
    before = books(env)
    client = env.client()
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(generate(client, "slow-1")))
    first.start()
    deadline = time.monotonic() + 5
    while generation_calls(env) == 0:  # the first request reached the provider
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.ConflictError) as info:
        generate(client, "slow-1")
    assert info.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS"
    first.join(10)
    replay = generate(client, "slow-1")
    assert replay.http_response.content == results[0].http_response.content
    assert generation_calls(env) == 1
    assert books(env) == before - PRICE


def test_a_failed_request_can_be_retried_with_its_key(env: Env) -> None:
    before = books(env)
    client = env.client()
    env.upstream.fail_next(500)
    with pytest.raises(openai.InternalServerError) as info:
        generate(client, "retry-me")
    assert (info.value.status_code, info.value.code) == (502, "UPSTREAM_ERROR")
    assert books(env) == before  # refunded
    retried = generate(client, "retry-me")
    assert retried.parse().data[0].b64_json
    again = generate(client, "retry-me")
    assert again.http_response.content == retried.http_response.content
    assert generation_calls(env) == 2  # the failure and the retry; the replay stayed local
    assert books(env) == before - PRICE


def test_keys_are_scoped_per_account(env: Env) -> None:
    async def other_account(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, balance_micros=1_000_000)
        _, secret = await factories.make_key(engine, account_id)
        return account_id, secret

    other_id, other_secret = env.run(other_account)
    mine = generate(env.client(), "shared-key")
    theirs = generate(env.client(other_secret), "shared-key")
    assert theirs.parse().data[0].b64_json != mine.parse().data[0].b64_json
    assert generation_calls(env) == 2
    assert books(env) == 10_000_000 - PRICE
    assert books(env, other_id) == 1_000_000 - PRICE

    # the same account's other keys share its keys (one balance, one order book)
    async def second_key(engine):  # type: ignore[no-untyped-def]
        return (await factories.make_key(engine, env.account_id))[1]

    replay = generate(env.client(env.run(second_key)), "shared-key")
    assert replay.http_response.content == mine.http_response.content
    assert generation_calls(env) == 2


def test_admin_credit_with_an_idempotency_key_is_applied_once(env: Env) -> None:
    before = books(env)
    path = f"/accounts/{env.account_id}/credits"
    with env.admin() as admin:
        headers = {"Idempotency-Key": "invoice-7"}
        first = admin.post(path, json={"amount": "2.5", "note": "invoice 7"}, headers=headers)
        second = admin.post(path, json={"amount": "2.5", "note": "invoice 7"}, headers=headers)
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.content == first.content
        assert second.headers.get("idempotent-replayed") == "true"
        assert "idempotent-replayed" not in first.headers
        assert first.json()["balance"] == (before + 2_500_000) / 1_000_000
        conflict = admin.post(path, json={"amount": "25"}, headers=headers)
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        ledger = admin.get(f"/accounts/{env.account_id}/ledger").json()["data"]
    assert [(r["kind"], r["amount"], r["note"]) for r in ledger] == [
        ("topup", 2.5, "invoice 7"),
        ("topup", 10, "initial balance"),
    ]
    assert books(env) == before + 2_500_000


def test_the_idempotency_header_needs_no_sdk(env: Env) -> None:
    """Plain HTTP clients get the same replay (and the stored status) as the SDK."""
    url = f"{env.gateway.base_url}/images/generations"
    headers = {"Authorization": f"Bearer {env.secret}", "Idempotency-Key": "raw-1"}
    body = {**BODY, "size": "1024x1024"}
    first = httpx.post(url, json=body, headers=headers, timeout=30)
    second = httpx.post(url, json=body, headers=headers, timeout=30)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.content == first.content
    assert generation_calls(env) == 1
