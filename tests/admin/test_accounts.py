from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest

from tests.admin.conftest import assert_error, create_account

pytestmark = pytest.mark.anyio


async def test_create_and_get(client: httpx.AsyncClient) -> None:
    account = await create_account(client, name="  Acme  ", balance="10.25")
    assert account["object"] == "account"
    assert account["name"] == "Acme"
    assert account["balance"] == 10.25
    assert account["status"] == "active"
    assert datetime.fromisoformat(account["created_at"]).tzinfo is not None
    response = await client.get(f"/admin/v1/accounts/{account['id']}")
    assert response.status_code == 200
    assert response.json() == account


async def test_initial_balance_is_the_first_ledger_row(client: httpx.AsyncClient) -> None:
    account = await create_account(client, balance=0.134)
    assert account["balance"] == 0.134
    rows = (await client.get(f"/admin/v1/accounts/{account['id']}/ledger")).json()["data"]
    assert [(row["kind"], row["amount"], row["balance_after"]) for row in rows] == [
        ("topup", 0.134, 0.134)
    ]


async def test_create_without_balance_starts_at_zero(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    assert account["balance"] == 0
    ledger = (await client.get(f"/admin/v1/accounts/{account['id']}/ledger")).json()
    assert ledger == {"object": "list", "data": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "a", "balance": "0.0000001"}, "balance"),
        ({"name": "a", "balance": -1}, "balance"),
        ({"name": "a", "balance": "ten"}, "balance"),
        ({"name": "a", "balance": True}, "balance"),
        ({"name": "a", "balanse": 1}, "balanse"),
    ],
)
async def test_create_validation_names_the_field(
    client: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    response = await client.post("/admin/v1/accounts", json=body)
    assert_error(response, 400, "INVALID_PARAMETER", param)


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/admin/v1/accounts", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/admin/v1/accounts/acct_missing"), 404, "ACCOUNT_NOT_FOUND")
    response = await client.patch("/admin/v1/accounts/acct_missing", json={"name": "x"})
    assert_error(response, 404, "ACCOUNT_NOT_FOUND")
    response = await client.get("/admin/v1/accounts/acct_missing/ledger")
    assert_error(response, 404, "ACCOUNT_NOT_FOUND")


async def test_list_paginates_in_creation_order(client: httpx.AsyncClient) -> None:
    created = []
    for i in range(5):
        created.append((await create_account(client, name=f"a{i}"))["id"])
        await asyncio.sleep(0.002)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/admin/v1/accounts", params=params)).json()
        assert body["object"] == "list" and len(body["data"]) <= 2
        seen += [account["id"] for account in body["data"]]
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert seen == created
    assert pages == 3


async def test_list_filters_by_status(client: httpx.AsyncClient) -> None:
    active = await create_account(client, name="a")
    suspended = await create_account(client, name="s")
    await client.patch(f"/admin/v1/accounts/{suspended['id']}", json={"status": "suspended"})
    body = (await client.get("/admin/v1/accounts", params={"status": "suspended"})).json()
    assert [account["id"] for account in body["data"]] == [suspended["id"]]
    body = (await client.get("/admin/v1/accounts", params={"status": "active"})).json()
    assert [account["id"] for account in body["data"]] == [active["id"]]


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"limit": "x"}, "limit")],
)
async def test_bad_limit_is_400(
    client: httpx.AsyncClient, params: dict[str, object], param: str
) -> None:
    for path in ("/admin/v1/accounts", "/admin/v1/keys", "/admin/v1/requests"):
        response = await client.get(path, params=params)  # type: ignore[arg-type]
        assert_error(response, 400, "INVALID_PARAMETER", param)


async def test_bad_cursor_is_400(client: httpx.AsyncClient) -> None:
    for path in ("/admin/v1/accounts", "/admin/v1/keys", "/admin/v1/requests"):
        response = await client.get(path, params={"cursor": "not-a-cursor"})
        assert_error(response, 400, "INVALID_PARAMETER", "cursor")


async def test_max_limit_is_accepted(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin/v1/accounts", params={"limit": 500})).status_code == 200


async def test_patch_name_and_status(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.patch(
        f"/admin/v1/accounts/{account['id']}", json={"name": "renamed", "status": "suspended"}
    )
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["status"]) == ("renamed", "suspended")
    response = await client.patch(f"/admin/v1/accounts/{account['id']}", json={})
    assert response.json()["status"] == "suspended"
    response = await client.patch(f"/admin/v1/accounts/{account['id']}", json={"status": "gone"})
    assert_error(response, 400, "INVALID_PARAMETER", "status")


async def test_credit_and_adjustment(client: httpx.AsyncClient) -> None:
    account = await create_account(client, balance="1")
    path = f"/admin/v1/accounts/{account['id']}/credits"
    response = await client.post(path, json={"amount": "2.5", "note": "invoice 7"})
    assert response.status_code == 200, response.text
    credit = response.json()
    assert credit["object"] == "credit"
    assert credit["balance"] == 3.5
    assert credit["entry"]["kind"] == "topup"
    assert credit["entry"]["amount"] == 2.5
    assert credit["entry"]["note"] == "invoice 7"

    response = await client.post(path, json={"amount": -0.5})
    assert response.json()["balance"] == 3.0
    assert response.json()["entry"]["kind"] == "adjustment"

    assert_error(await client.post(path, json={"amount": -4}), 400, "INVALID_PARAMETER", "amount")
    assert_error(await client.post(path, json={"amount": 0}), 400, "INVALID_PARAMETER", "amount")
    response = await client.post(path, json={"amount": "0.0000005"})
    assert_error(response, 400, "INVALID_PARAMETER", "amount")
    assert "finer than one micro-dollar" in response.json()["error"]["message"]
    assert "Value error" not in response.json()["error"]["message"]
    assert_error(await client.post(path, json={}), 400, "INVALID_PARAMETER", "amount")
    fetched = (await client.get(f"/admin/v1/accounts/{account['id']}")).json()
    assert fetched["balance"] == 3.0

    response = await client.post("/admin/v1/accounts/acct_missing/credits", json={"amount": 1})
    assert_error(response, 404, "ACCOUNT_NOT_FOUND")


async def test_credit_is_idempotent(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    path = f"/admin/v1/accounts/{account['id']}/credits"
    headers = {"Idempotency-Key": "topup-42"}
    first = await client.post(path, json={"amount": "5"}, headers=headers)
    second = await client.post(path, json={"amount": "5"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert (await client.get(f"/admin/v1/accounts/{account['id']}")).json()["balance"] == 5

    reused = await client.post(path, json={"amount": "6"}, headers=headers)
    assert_error(reused, 409, "IDEMPOTENCY_KEY_REUSED")

    # another key, or no key, credits again
    await client.post(path, json={"amount": "5"}, headers={"Idempotency-Key": "topup-43"})
    await client.post(path, json={"amount": "5"})
    assert (await client.get(f"/admin/v1/accounts/{account['id']}")).json()["balance"] == 15


async def test_a_failed_credit_does_not_burn_the_idempotency_key(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    path = f"/admin/v1/accounts/{account['id']}/credits"
    headers = {"Idempotency-Key": "fix-me"}
    response = await client.post(path, json={"amount": "-1"}, headers=headers)
    assert_error(response, 400, "INVALID_PARAMETER", "amount")
    response = await client.post(path, json={"amount": "-1"}, headers=headers)
    assert_error(response, 400, "INVALID_PARAMETER", "amount")


async def test_idempotency_keys_are_scoped_per_account(client: httpx.AsyncClient) -> None:
    first = await create_account(client, name="one")
    second = await create_account(client, name="two")
    headers = {"Idempotency-Key": "same"}
    for account in (first, second):
        response = await client.post(
            f"/admin/v1/accounts/{account['id']}/credits", json={"amount": 1}, headers=headers
        )
        assert response.status_code == 200
        assert response.json()["account_id"] == account["id"]


async def test_ledger_is_newest_first_and_paginated(client: httpx.AsyncClient) -> None:
    account = await create_account(client, balance=1)
    path = f"/admin/v1/accounts/{account['id']}"
    for amount in ("0.1", "0.2", "0.3"):
        await client.post(f"{path}/credits", json={"amount": amount})
    amounts: list[float] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get(f"{path}/ledger", params=params)).json()
        amounts += [row["amount"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert amounts == [0.3, 0.2, 0.1, 1]
    row = (await client.get(f"{path}/ledger", params={"limit": 1})).json()["data"][0]
    assert set(row) == {
        "object", "id", "account_id", "key_id", "request_id", "kind", "amount",
        "balance_after", "model", "note", "created_at",
    }  # fmt: skip
    assert row["balance_after"] == 1.6
