"""The operator's whole story (SPEC 4 and 5), end to end against a live gateway, told twice:
once through the admin HTTP API and once through the `image-gateway` CLI (which talks to the
database directly). Both create an account, credit it, make a key limited to some models with
an rpm, let the official SDK generate with it, read usage, the ledger and the request log, then
revoke and rotate keys and watch the SDK's calls stop.

Amounts are compared in integer micro-dollars: every USD figure the gateway prints is an exact
decimal, so `Decimal(str(x))` recovers it without float error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.e2e.conftest import Env
from tests.support.books import assert_books_balance

ALLOWED = ["local-preview", "gpt-image-1"]
CLI_KEY_CACHE_TTL_S = 0.5


def micros(usd: float | str) -> int:
    return int(Decimal(str(usd)) * 1_000_000)


def books(env: Env, account_id: str) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, account_id)

    return int(env.run(read))


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@dataclass(frozen=True)
class Call:
    request_id: str
    model: str
    images: int
    cost_micros: int


@dataclass(frozen=True)
class Story:
    calls: list[Call]
    refused_request_id: str

    @property
    def spent(self) -> int:
        return sum(call.cost_micros for call in self.calls)


def sdk_story(env: Env, secret: str) -> Story:
    """What a customer does with a fresh key: two generations it may make, one it may not."""
    client = env.client(secret)
    calls = []
    for model, kwargs, images in [
        ("local-preview", {"n": 2, "size": "256x256"}, 2),
        ("gpt-image-1", {"quality": "low", "size": "1024x1024"}, 1),
    ]:
        raw = client.images.with_raw_response.generate(model=model, prompt="a fox", **kwargs)
        result = raw.parse()
        assert len(result.data) == images
        cost = result.to_dict()["usage"]["cost"]["total_cost"]  # type: ignore[index]
        calls.append(Call(raw.headers["x-request-id"], model, images, micros(cost)))
    assert [call.cost_micros for call in calls] == [2_000, 11_000]  # the catalog's prices

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.images.generate(model="pixel-model", prompt="a fox")
    assert refused.value.code == "MODEL_NOT_ALLOWED"
    return Story(calls, refused.value.response.headers["x-request-id"])


def check_usage(usage: dict[str, Any], story: Story) -> None:
    assert usage["group_by"] == "model"
    rows = {row["group"]: row for row in usage["data"]}
    for call in story.calls:
        row = rows.pop(call.model)
        assert (row["requests"], row["images"], micros(row["cost"])) == (
            1,
            call.images,
            call.cost_micros,
        )
    # the refused request is counted (it was made) but delivered and cost nothing
    assert [(r["group"], r["requests"], r["images"], r["cost"]) for r in rows.values()] == [
        ("pixel-model", 1, 0, 0)
    ]
    total = usage["total"]
    assert (total["requests"], total["images"], micros(total["cost"])) == (
        3,
        sum(call.images for call in story.calls),
        story.spent,
    )


def check_ledger(ledger: dict[str, Any], story: Story, *, key_id: str, topups: list[int]) -> None:
    """Newest first: one charge per generation (its request id, key and model), then the
    top-ups; the balances chain."""
    rows = ledger["data"]
    assert ledger["next_cursor"] is None
    expected = [
        ("charge", -call.cost_micros, call.request_id, key_id, call.model)
        for call in reversed(story.calls)
    ] + [("topup", amount, None, None, None) for amount in reversed(topups)]
    assert [
        (r["kind"], micros(r["amount"]), r["request_id"], r["key_id"], r["model"]) for r in rows
    ] == expected
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    running = sum(topups) - story.spent
    for row in rows:
        assert micros(row["balance_after"]) == running
        running -= micros(row["amount"])
    assert running == 0


def check_request_log(log: dict[str, Any], story: Story, *, key_id: str) -> None:
    rows = log["data"]
    assert [r["id"] for r in rows] == [
        story.refused_request_id,
        *(call.request_id for call in reversed(story.calls)),
    ]
    refused, *settled = rows
    assert (refused["state"], refused["status"], refused["error_code"]) == (
        "unbilled",
        403,
        "MODEL_NOT_ALLOWED",
    )
    assert (refused["images"], refused["cost"], refused["model"]) == (0, 0, "pixel-model")
    for row, call in zip(settled, reversed(story.calls), strict=True):
        assert (row["state"], row["status"], row["error_code"]) == ("settled", 200, None)
        assert (row["model"], row["images"], micros(row["cost"])) == (
            call.model,
            call.images,
            call.cost_micros,
        )
        assert micros(row["held"]) == call.cost_micros
        assert row["key_id"] == key_id
        assert isinstance(row["latency_ms"], int) and row["latency_ms"] >= 0


def expect_refused(
    call: Callable[[], object], exc_class: type[openai.APIStatusError], code: str
) -> None:
    with pytest.raises(exc_class) as info:
        call()
    assert info.value.code == code, info.value.body


def generate(env: Env, secret: str) -> Callable[[], object]:
    return lambda: env.client(secret).images.generate(model="local-preview", prompt="x")


def wait_until_refused(
    call: Callable[[], object], exc_class: type[openai.APIStatusError], code: str
) -> float:
    """Seconds until `call` fails with `code` (it must, within the key cache TTL + slack)."""
    started = time.monotonic()
    while True:
        try:
            call()
        except exc_class as exc:
            assert exc.code == code, exc.body
            return time.monotonic() - started
        assert time.monotonic() - started < CLI_KEY_CACHE_TTL_S + 1.5, f"still no {code}"
        time.sleep(0.05)


# -- the admin API ---------------------------------------------------------------------------
def test_operator_flow_through_the_admin_api(env: Env) -> None:
    with env.admin() as admin:
        account = ok(admin.post("/accounts", json={"name": "Acme"}), 201)
        assert (account["balance"], account["status"]) == (0, "active")
        account_id = account["id"]
        credit = ok(
            admin.post(f"/accounts/{account_id}/credits", json={"amount": "5", "note": "PO 1"})
        )
        assert credit["balance"] == 5
        assert (credit["entry"]["kind"], credit["entry"]["note"]) == ("topup", "PO 1")

        key = ok(
            admin.post(
                f"/accounts/{account_id}/keys", json={"name": "ci", "models": ALLOWED, "rpm": 30}
            ),
            201,
        )
        assert key["key"].startswith("sk-") and key["key"].startswith(key["prefix"])
        assert (key["models"], key["rpm"], key["max_concurrency"]) == (ALLOWED, 30, None)
        listed = ok(admin.get("/keys", params={"account_id": account_id}))
        assert [k["id"] for k in listed["data"]] == [key["id"]]
        assert "key" not in listed["data"][0]

        story = sdk_story(env, key["key"])

        usage = ok(admin.get("/usage", params={"account_id": account_id, "group_by": "model"}))
        check_usage(usage, story)
        totals = (3, sum(call.images for call in story.calls), story.spent)
        for group_by, group in [("key", key["id"]), ("day", datetime.now(UTC).date().isoformat())]:
            grouped = ok(
                admin.get("/usage", params={"account_id": account_id, "group_by": group_by})
            )
            assert [
                (r["group"], r["requests"], r["images"], micros(r["cost"])) for r in grouped["data"]
            ] == [(group, *totals)]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        nothing = ok(admin.get("/usage", params={"account_id": account_id, "from": later}))
        assert nothing["total"] == {"group": None, "requests": 0, "images": 0, "cost": 0}
        ledger = ok(admin.get(f"/accounts/{account_id}/ledger"))
        check_ledger(ledger, story, key_id=key["id"], topups=[5_000_000])
        log = ok(admin.get("/requests", params={"account_id": account_id}))
        check_request_log(log, story, key_id=key["id"])
        balance = micros(ok(admin.get(f"/accounts/{account_id}"))["balance"])
        assert balance == 5_000_000 - story.spent == books(env, account_id)

        # revoke: this process forgets the cached key at once
        revoked = ok(admin.post(f"/keys/{key['id']}/revoke"))
        assert revoked["revoked_at"] is not None
        expect_refused(generate(env, key["key"]), openai.PermissionDeniedError, "KEY_REVOKED")

        # rotate: the old secret (cached by a call just before) fails at once, the new works
        other = ok(admin.post(f"/accounts/{account_id}/keys", json={"name": "batch"}), 201)
        generate(env, other["key"])()
        rotated = ok(admin.post(f"/keys/{other['id']}/rotate"))
        assert rotated["id"] == other["id"] and rotated["key"] != other["key"]
        expect_refused(generate(env, other["key"]), openai.AuthenticationError, "INVALID_API_KEY")
        generate(env, rotated["key"])()

        # delete: gone at once; the ledger still names the key its charges came from
        deleted = ok(admin.delete(f"/keys/{other['id']}"))
        assert (deleted["id"], deleted["deleted"]) == (other["id"], True)
        expect_refused(generate(env, rotated["key"]), openai.AuthenticationError, "INVALID_API_KEY")
        assert admin.get(f"/keys/{other['id']}").status_code == 404
        ledger = ok(admin.get(f"/accounts/{account_id}/ledger", params={"limit": 2}))
        assert [(r["kind"], r["key_id"]) for r in ledger["data"]] == [("charge", other["id"])] * 2

    assert books(env, account_id) == 5_000_000 - story.spent - 2 * 1_000


# -- the CLI ---------------------------------------------------------------------------------
@pytest.mark.gateway(settings={"key_cache_ttl_s": CLI_KEY_CACHE_TTL_S})
def test_operator_flow_through_the_cli(env: Env) -> None:
    runner = CliRunner()

    def cli_json(*args: str) -> Any:
        result = runner.invoke(cli, [*args, "--json"], env={"DATABASE_URL": env.database_url})
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout)

    account = cli_json("accounts", "create", "Acme", "--balance", "1.5")
    account_id = account["id"]
    assert (account["balance"], account["status"]) == (1.5, "active")
    credit = cli_json("accounts", "credit", account_id, "3.5", "--note", "PO 2")
    assert credit["balance"] == 5
    key = cli_json(
        "keys", "create", account_id, "--name", "ci", "--models", ",".join(ALLOWED),
        "--rpm", "30",
    )  # fmt: skip
    assert (key["models"], key["rpm"]) == (ALLOWED, 30)
    listed = cli_json("keys", "list", "--account-id", account_id)
    assert [k["id"] for k in listed["data"]] == [key["id"]]
    assert "key" not in listed["data"][0]

    story = sdk_story(env, key["key"])

    check_usage(cli_json("usage", "--account-id", account_id, "--group-by", "model"), story)
    shown = cli_json("accounts", "show", account_id)
    assert micros(shown["balance"]) == 5_000_000 - story.spent == books(env, account_id)
    # the CLI has no ledger or request-log commands (SPEC 5); the admin API reads them
    with env.admin() as admin:
        ledger = ok(admin.get(f"/accounts/{account_id}/ledger"))
        check_ledger(ledger, story, key_id=key["id"], topups=[1_500_000, 3_500_000])
        check_request_log(ok(admin.get("/requests", params={"key_id": key["id"]})), story,
                          key_id=key["id"])  # fmt: skip

    # revoke from another process: the gateway stops the key within its cache TTL. The
    # authentication path alone (models.list) proves the TTL; generations are refused anyway
    # (the ledger's charge statement re-checks the key).
    client = env.client(key["key"])
    client.models.list()  # cached as valid now
    assert cli_json("keys", "revoke", key["id"])["revoked_at"] is not None
    expect_refused(generate(env, key["key"]), openai.PermissionDeniedError, "KEY_REVOKED")
    waited = wait_until_refused(client.models.list, openai.PermissionDeniedError, "KEY_REVOKED")
    assert waited <= CLI_KEY_CACHE_TTL_S + 0.5

    # rotate from the CLI: the new secret works at once; the old one (still cached by this
    # gateway) can no longer be charged at once, since the hold matches the key's hash, and
    # stops authenticating at all within the TTL
    other = cli_json("keys", "create", account_id, "--name", "batch")
    generate(env, other["key"])()
    rotated = cli_json("keys", "rotate", other["id"])
    assert rotated["id"] == other["id"] and rotated["key"] != other["key"]
    expect_refused(generate(env, other["key"]), openai.AuthenticationError, "INVALID_API_KEY")
    generate(env, rotated["key"])()
    waited = wait_until_refused(
        env.client(other["key"]).models.list, openai.AuthenticationError, "INVALID_API_KEY"
    )
    assert waited <= CLI_KEY_CACHE_TTL_S + 0.5

    assert books(env, account_id) == 5_000_000 - story.spent - 2 * 1_000
