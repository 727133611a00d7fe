from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from app.db.models import RequestLog
from app.ledger.service import Ledger
from tests.admin.conftest import AdminTestGateway, assert_error, create_account, create_key

pytestmark = pytest.mark.anyio


async def billed(
    ledger: Ledger,
    *,
    account_id: str,
    key_id: str,
    model: str,
    held: int,
    cost: int,
    images: int,
    status_code: int = 200,
    error_code: str | None = None,
) -> str:
    request_id = "req_" + secrets.token_hex(8)
    await ledger.hold(
        request_id=request_id,
        account_id=account_id,
        key_id=key_id,
        model=model,
        amount_micros=held,
    )
    await ledger.settle(
        request_id=request_id,
        cost_micros=cost,
        images=images,
        status_code=status_code,
        error_code=error_code,
        latency_ms=1234,
    )
    return request_id


@pytest.fixture
async def traffic(client: httpx.AsyncClient, gateway: AdminTestGateway) -> dict[str, Any]:
    """Two accounts, three keys, two models; successes, a failure, a refusal, a pending."""
    first = await create_account(client, name="one", balance=100)
    second = await create_account(client, name="two", balance=100)
    k1 = (await create_key(client, first["id"], name="k1"))["id"]
    k2 = (await create_key(client, first["id"], name="k2"))["id"]
    k3 = (await create_key(client, second["id"], name="k3"))["id"]
    ledger = gateway.ledger
    await billed(
        ledger, account_id=first["id"], key_id=k1, model="m-a", held=300_000, cost=268_000, images=2
    )
    await billed(
        ledger, account_id=first["id"], key_id=k2, model="m-b", held=50_000, cost=40_000, images=1
    )
    failed = await billed(
        ledger,
        account_id=first["id"],
        key_id=k1,
        model="m-a",
        held=134_000,
        cost=0,
        images=0,
        status_code=502,
        error_code="UPSTREAM_ERROR",
    )
    await billed(
        ledger,
        account_id=second["id"],
        key_id=k3,
        model="m-a",
        held=134_000,
        cost=134_000,
        images=1,
    )
    await ledger.log_unbilled(
        request_id="req_refused",
        account_id=first["id"],
        key_id=k1,
        model="m-b",
        status_code=402,
        error_code="INSUFFICIENT_BALANCE",
        latency_ms=3,
    )
    await ledger.hold(
        request_id="req_pending",
        account_id=first["id"],
        key_id=k2,
        model="m-b",
        amount_micros=10_000,
    )
    return {
        "first": first["id"],
        "second": second["id"],
        "k1": k1,
        "k2": k2,
        "k3": k3,
        "failed": failed,
    }


def by_group(body: dict[str, Any]) -> dict[str | None, tuple[int, int, float]]:
    return {row["group"]: (row["requests"], row["images"], row["cost"]) for row in body["data"]}


async def test_usage_totals_and_groups(client: httpx.AsyncClient, traffic: dict[str, Any]) -> None:
    body = (await client.get("/admin/v1/usage")).json()
    assert body["object"] == "usage" and body["group_by"] is None and body["data"] == []
    assert body["total"] == {"group": None, "requests": 6, "images": 4, "cost": 0.442}

    body = (await client.get("/admin/v1/usage", params={"group_by": "model"})).json()
    assert by_group(body) == {"m-a": (3, 3, 0.402), "m-b": (3, 1, 0.04)}
    assert body["total"]["cost"] == 0.442

    params = {"group_by": "key", "account_id": traffic["first"]}
    body = (await client.get("/admin/v1/usage", params=params)).json()
    assert by_group(body) == {traffic["k1"]: (3, 2, 0.268), traffic["k2"]: (2, 1, 0.04)}

    params = {"key_id": traffic["k1"], "model": "m-a"}
    body = (await client.get("/admin/v1/usage", params=params)).json()
    assert body["total"] == {"group": None, "requests": 2, "images": 2, "cost": 0.268}


async def test_usage_by_day_and_time_window(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    rows = [
        ("r1", datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC), 100_000, 1),
        ("r2", datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), 200_000, 2),
        ("r3", datetime(2026, 3, 2, 12, 0, tzinfo=UTC), 300_000, 1),
        ("r4", datetime(2026, 3, 4, 0, 0, tzinfo=UTC), 400_000, 1),
    ]
    async with gateway.engine.begin() as conn:
        for request_id, created_at, cost, images in rows:
            await conn.execute(
                insert(RequestLog).values(
                    id=request_id,
                    account_id="acct_x",
                    key_id="key_x",
                    model="m",
                    state="settled",
                    status_code=200,
                    images=images,
                    held_micros=cost,
                    cost_micros=cost,
                    created_at=created_at,
                    finished_at=created_at,
                )
            )
    body = (await client.get("/admin/v1/usage", params={"group_by": "day"})).json()
    assert by_group(body) == {
        "2026-03-01": (2, 3, 0.3),
        "2026-03-02": (1, 1, 0.3),
        "2026-03-04": (1, 1, 0.4),
    }
    params = {"group_by": "day", "from": "2026-03-01T12:00:00Z", "to": "2026-03-04T00:00:00Z"}
    body = (await client.get("/admin/v1/usage", params=params)).json()
    assert by_group(body) == {"2026-03-01": (1, 2, 0.2), "2026-03-02": (1, 1, 0.3)}
    assert body["from"].startswith("2026-03-01T12:00:00") and body["to"].startswith("2026-03-04")

    # a time without a zone is UTC; a date alone is its midnight
    body = (await client.get("/admin/v1/usage", params={"from": "2026-03-02"})).json()
    assert body["total"]["requests"] == 2


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        # what the schema does not allow is refused, not guessed at
        ({"from": "14353"}, "from"),  # not a Unix time
        ({"to": "1e9"}, "to"),
        ({"from": "2026-03-02T00:00:00.5+0100"}, "from"),  # the offset needs its colon
        ({"from": "2026-W09"}, "from"),  # ISO week dates: Python reads them, the schema not
        ({"from": "2026-02-30"}, "from"),  # the pattern's shape, but no such day
        ({"to": "2026-03-01T24:00"}, "to"),
        ([("key_id", "key_a"), ("key_id", "key_b")], "key_id"),  # not silently the last one
        ([("group_by", "day"), ("group_by", "day")], "group_by"),
    ],
)
async def test_usage_validation(
    client: httpx.AsyncClient, params: dict[str, str] | list[tuple[str, str]], param: str
) -> None:
    response = await client.get("/admin/v1/usage", params=params)
    assert_error(response, 400, "INVALID_PARAMETER", param)


async def test_usage_accepts_the_documented_date_and_time_forms(client: httpx.AsyncClient) -> None:
    for value, start in [
        ("2026-03-02", "2026-03-02T00:00:00"),
        ("2026-03-02 10:30", "2026-03-02T10:30:00"),
        ("2026-03-02T10:30:15.25Z", "2026-03-02T10:30:15.25"),
        ("2026-03-02T10:30:15+02:00", "2026-03-02T08:30:15"),
    ]:
        response = await client.get("/admin/v1/usage", params={"from": value})
        assert response.status_code == 200, (value, response.text)
        assert response.json()["from"].startswith(start), value


def test_the_usage_document_matches_what_the_route_takes() -> None:
    from fastapi import FastAPI

    from app.admin.endpoints import router
    from app.api.openapi import build_document

    app = FastAPI()
    app.include_router(router)
    document = build_document(app)
    parameters = document["paths"]["/admin/v1/usage"]["get"]["parameters"]
    schemas = {parameter["name"]: parameter["schema"] for parameter in parameters}
    for name in ("from", "to"):
        text = schemas[name]
        assert text["type"] == "string"  # absent or a value: a query string has no null
        assert "format" not in text  # not RFC 3339 date-time: a date alone is allowed
        assert re.fullmatch(text["pattern"].strip("^$"), "2026-03-02")
        assert not re.fullmatch(text["pattern"].strip("^$"), "14353")


async def test_requests_log_newest_first_with_filters(
    client: httpx.AsyncClient, traffic: dict[str, Any]
) -> None:
    body = (await client.get("/admin/v1/requests")).json()
    assert body["object"] == "list" and body["next_cursor"] is None
    assert len(body["data"]) == 6
    created = [row["created_at"] for row in body["data"]]
    assert created == sorted(created, reverse=True)

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/admin/v1/requests", params=params)).json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [row["id"] for row in body["data"]]

    failed = (await client.get("/admin/v1/requests", params={"status": 502})).json()["data"]
    assert [row["id"] for row in failed] == [traffic["failed"]]
    row = failed[0]
    assert row["error_code"] == "UPSTREAM_ERROR"
    assert (row["state"], row["images"], row["cost"], row["held"]) == ("settled", 0, 0, 0.134)
    assert row["latency_ms"] == 1234
    assert row["key_id"] == traffic["k1"] and row["model"] == "m-a"

    params = {"state": "pending"}
    pending = (await client.get("/admin/v1/requests", params=params)).json()["data"]
    assert [row["id"] for row in pending] == ["req_pending"]
    assert pending[0]["status"] is None

    params = {"account_id": traffic["second"]}
    assert len((await client.get("/admin/v1/requests", params=params)).json()["data"]) == 1
    params = {"key_id": traffic["k1"], "model": "m-b"}
    only = (await client.get("/admin/v1/requests", params=params)).json()["data"]
    assert [(row["id"], row["status"], row["state"]) for row in only] == [
        ("req_refused", 402, "unbilled")
    ]


async def test_requests_validation(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/v1/requests", params={"status": "bad"})
    assert_error(response, 400, "INVALID_PARAMETER", "status")
    response = await client.get("/admin/v1/requests", params={"state": "lost"})
    assert_error(response, 400, "INVALID_PARAMETER", "state")
