"""Input no column can hold is a 400 naming its field, found before any SQL runs (both backends).

Postgres refuses a NUL character in text and integers beyond a column's type; SQLite stores
the NUL and refuses integers beyond 64 bits in the driver. Either way, until now the refusal came
from the database, after the request was accepted: 503 "the database is unavailable, retry"
(Postgres) or a 500 (SQLite), or, worse, silently stored. Also here: admin amounts are exact
decimal USD, bounded, and described as such in the OpenAPI document; integer cursors are plain
ASCII digits.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.money import MAX_AMOUNT_MICROS
from tests.admin.conftest import AdminTestGateway, assert_error, create_account, create_key

pytestmark = pytest.mark.anyio

MAX_USD = "1000000000"
MAX_USD_MICROS = 10**15


def cursor_of(*parts: str) -> str:
    raw = json.dumps(list(parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "/admin/v1/accounts", {"name": "a\x00b"}, "name"),
        ("POST", "/admin/v1/accounts", {"name": "a", "balance": "1e30"}, "balance"),
        ("POST", "/admin/v1/accounts", {"name": "a", "balance": 2**63}, "balance"),
        ("PATCH", "/admin/v1/accounts/{account}", {"name": "\x00"}, "name"),
        ("PATCH", "/admin/v1/accounts/{account}", {"timezone": "UTC\x00"}, "timezone"),
        ("POST", "/admin/v1/accounts/{account}/credits", {"amount": "1e30"}, "amount"),
        ("POST", "/admin/v1/accounts/{account}/credits", {"amount": -(2**64)}, "amount"),
        ("POST", "/admin/v1/accounts/{account}/credits", {"amount": 1, "note": "\x00"}, "note"),
        ("POST", "/admin/v1/accounts/{account}/keys", {"name": "k\x00"}, "name"),
        ("POST", "/admin/v1/accounts/{account}/keys",
         {"name": "k", "models": ["m\x00"]}, "models.0"),
        ("POST", "/admin/v1/accounts/{account}/keys", {"name": "k", "rpm": 2**40}, "rpm"),
        ("POST", "/admin/v1/accounts/{account}/keys",
         {"name": "k", "max_concurrency": 2**31}, "max_concurrency"),
        ("POST", "/admin/v1/accounts/{account}/keys",
         {"name": "k", "budgets": [{"period": "day", "amount": "1e25"}]}, "budgets.0.amount"),
        ("GET", "/admin/v1/accounts/acct%00x", None, "account_id"),
        ("GET", "/admin/v1/accounts/acct%00x/ledger", None, "account_id"),
        ("GET", "/admin/v1/accounts?q=a%00", None, "q"),
        ("GET", "/admin/v1/keys?account_id=a%00", None, "account_id"),
        ("GET", "/admin/v1/keys/key%00", None, "key_id"),
        ("GET", "/admin/v1/requests?model=x%00", None, "model"),
        ("GET", "/admin/v1/usage?key_id=%00", None, "key_id"),
        ("GET", "/admin/v1/usage?to=9999-12-31T23:00:00-05:00", None, "to"),
        ("GET", "/admin/v1/usage?from=0001-01-01T00:00:00%2B05:00", None, "from"),
        ("POST", "/admin/v1/accounts/{account}/keys",
         {"name": "k", "expires_at": "9999-12-31T23:00:00-05:00"}, "expires_at"),
    ],
)  # fmt: skip
async def test_unstorable_values_are_400s_naming_the_field(
    client: httpx.AsyncClient,
    gateway: AdminTestGateway,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    param: str,
) -> None:
    account = await create_account(client, balance=1)
    response = await client.request(method, path.format(account=account["id"]), json=body)
    assert_error(response, 400, "INVALID_PARAMETER", param)
    assert "retry-after" not in response.headers
    assert response.headers["x-should-retry"] == "false"
    # nothing was written: the account is as it was, and no other account appeared
    assert (await gateway.ledger.get_account(account["id"])).balance_micros == 1_000_000
    listed = (await client.get("/admin/v1/accounts")).json()["data"]
    assert [row["id"] for row in listed] == [account["id"]]


@pytest.mark.parametrize(
    "cursor",
    ["\u0663", "\u00b2", "+1", "-1", " 1", "1e3", "0x10", "1_0", "99999999999999999999",
     str(2**63), "1" * 40],
)  # fmt: skip
async def test_a_ledger_cursor_that_is_not_a_plain_ascii_integer_is_400(
    client: httpx.AsyncClient, cursor: str
) -> None:
    account = await create_account(client, balance=1)
    response = await client.get(
        f"/admin/v1/accounts/{account['id']}/ledger", params={"cursor": cursor}
    )
    assert_error(response, 400, "INVALID_PARAMETER", "cursor")


async def test_a_ledger_cursor_at_the_bigint_edge_is_a_valid_empty_page(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client, balance=1)
    response = await client.get(
        f"/admin/v1/accounts/{account['id']}/ledger", params={"cursor": str(2**63 - 1)}
    )
    assert response.status_code == 200, response.text
    assert [row["kind"] for row in response.json()["data"]] == ["topup"]


@pytest.mark.parametrize("path", ["/admin/v1/keys", "/admin/v1/accounts", "/admin/v1/requests"])
@pytest.mark.parametrize(
    "cursor",
    [cursor_of("2026-01-01T00:00:00+00:00", "id\x00"), cursor_of("\x00", "x"),
     base64.urlsafe_b64encode(b"[" * 3000).decode(), "%%%"],
)  # fmt: skip
async def test_other_cursors_that_hold_unstorable_values_are_400(
    client: httpx.AsyncClient, path: str, cursor: str
) -> None:
    response = await client.get(path, params={"cursor": cursor})
    assert_error(response, 400, "INVALID_PARAMETER", "cursor")


@pytest.mark.parametrize(
    ("amount", "micros"),
    [("0.25", 250_000), (25, 25_000_000), (25.5, 25_500_000), ("25.5", 25_500_000),
     (0.000001, 1), ("1e2", 100_000_000)],
)  # fmt: skip
async def test_admin_amounts_are_exact_decimal_usd(
    client: httpx.AsyncClient, gateway: AdminTestGateway, amount: object, micros: int
) -> None:
    account = await create_account(client)
    response = await client.post(
        f"/admin/v1/accounts/{account['id']}/credits", json={"amount": amount}
    )
    assert response.status_code == 200, response.text
    assert (await gateway.ledger.get_account(account["id"])).balance_micros == micros


async def test_a_json_number_is_never_read_as_a_float(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    # As a double this literal is 0.1 exactly (its repr is "0.1"); as written it is finer than
    # a micro-dollar, and a credit must be refused rather than silently rounded.
    account = await create_account(client)
    literal = b"0.1000000000000000055511151231257827"
    response = await client.post(
        f"/admin/v1/accounts/{account['id']}/credits",
        content=b'{"amount": ' + literal + b"}",
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "INVALID_PARAMETER", "amount")
    assert "micro-dollar" in response.json()["error"]["message"]
    response = await client.post(
        f"/admin/v1/accounts/{account['id']}/credits",
        content=b'{"amount": 999999999.999999}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert (await gateway.ledger.get_account(account["id"])).balance_micros == 999_999_999_999_999


async def test_amounts_beyond_the_bound_are_a_clear_400(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    response = await client.post(
        "/admin/v1/accounts", json={"name": "a", "balance": "1000000000.000001"}
    )
    assert_error(response, 400, "INVALID_PARAMETER", "balance")
    assert "1000000000" in response.json()["error"]["message"]

    # a balance may not be credited past MAX_AMOUNT_MICROS either (no BIGINT overflow, ever)
    account = await create_account(client, balance=MAX_USD)
    credits = f"/admin/v1/accounts/{account['id']}/credits"
    while True:
        balance = (await gateway.ledger.get_account(account["id"])).balance_micros
        step = min(MAX_USD_MICROS, MAX_AMOUNT_MICROS - balance)
        if step == 0:
            break
        response = await client.post(credits, json={"amount": str(Decimal(step) / 10**6)})
        assert response.status_code == 200, response.text
    response = await client.post(credits, json={"amount": "0.000001"})
    assert_error(response, 400, "INVALID_PARAMETER", "amount")
    assert "largest" in response.json()["error"]["message"]
    assert (await gateway.ledger.get_account(account["id"])).balance_micros == MAX_AMOUNT_MICROS
    response = await client.post(credits, json={"amount": "-" + MAX_USD})
    assert response.status_code == 200, response.text
    assert response.json()["balance"] == (MAX_AMOUNT_MICROS - MAX_USD_MICROS) / 10**6


async def test_the_openapi_document_shows_amounts_as_decimal_usd(
    client: httpx.AsyncClient,
) -> None:
    from fastapi.openapi.utils import get_openapi

    from app.admin.endpoints import router

    document = get_openapi(title="t", version="1", routes=router.routes)
    schemas = document["components"]["schemas"]
    for model, field in [("CreditCreate", "amount"), ("AccountCreate", "balance"),
                         ("BudgetIn", "amount")]:  # fmt: skip
        amount = schemas[model]["properties"][field]
        assert amount.get("type") != "integer", amount
        kinds = {option["type"] for option in amount["anyOf"]}
        assert kinds == {"number", "string"}, amount
        assert amount["examples"] == ["0.25", 25, 25.5]
    # the published examples are accepted as they are
    account = await create_account(client)
    for example in ["0.25", 25, 25.5]:
        response = await client.post(
            f"/admin/v1/accounts/{account['id']}/credits", json={"amount": example}
        )
        assert response.status_code == 200, response.text
    assert (await client.get(f"/admin/v1/accounts/{account['id']}")).json()["balance"] == 50.75


async def test_a_key_with_the_largest_limits_is_stored(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"], rpm=2**31 - 1, max_concurrency=2**31 - 1)
    assert key["rpm"] == 2**31 - 1
