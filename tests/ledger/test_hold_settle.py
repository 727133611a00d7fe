"""hold -> settle: charges, refunds, refusals; the books balance after every scenario."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import AuthenticationError, Conflict, InsufficientBalance, PermissionDenied
from app.ledger import Ledger
from tests.support.books import assert_books_balance
from tests.support.factories import make_account, make_key

pytestmark = pytest.mark.anyio


def rid() -> str:
    return "req_" + uuid.uuid4().hex


async def request_row(engine: AsyncEngine, request_id: str) -> dict[str, object]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT * FROM request_log WHERE id = :id"), {"id": request_id}
            )
        ).one()
    return dict(row._mapping)


async def kinds(ledger: Ledger, account_id: str) -> list[tuple[str, int]]:
    rows, _ = await ledger.ledger_page(account_id, limit=500, cursor=None)
    return [(row.kind, row.amount_micros) for row in reversed(rows)]


@dataclass(frozen=True, slots=True)
class Payer:
    """An account with a key, holding for requests to model "m"."""

    ledger: Ledger
    account: str
    key: str
    secret: str

    async def hold(
        self,
        amount_micros: int,
        *,
        request_id: str | None = None,
        key_id: str | None = None,
        **details: Any,
    ) -> int:
        """`Ledger.hold` for this account, by its key unless another is given, under a fresh
        request id unless one is given; returns the balance after."""
        return await self.ledger.hold(
            request_id=request_id or rid(),
            account_id=self.account,
            key_id=key_id or self.key,
            model="m",
            amount_micros=amount_micros,
            **details,
        )


async def payer(engine: AsyncEngine, ledger: Ledger, balance_micros: int, **key: Any) -> Payer:
    account = await make_account(engine, balance_micros)
    key_id, secret = await make_key(engine, account, **key)
    return Payer(ledger, account, key_id, secret)


async def test_hold_then_settle_at_full_cost(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    request_id = rid()

    after = await buyer.hold(268_000, request_id=request_id, user="u1", client_request_id="c1")
    assert after == 732_000
    pending = await request_row(engine, request_id)
    assert (pending["state"], pending["held_micros"], pending["user"]) == ("pending", 268_000, "u1")
    await assert_books_balance(engine, buyer.account)

    outcome = await ledger.settle(
        request_id=request_id, cost_micros=268_000, images=2, latency_ms=12
    )
    assert outcome.settled
    assert (outcome.held_micros, outcome.cost_micros, outcome.refunded_micros) == (
        268_000,
        268_000,
        0,
    )
    assert outcome.balance_after_micros is None
    row = await request_row(engine, request_id)
    assert (row["state"], row["cost_micros"], row["images"], row["status_code"]) == (
        "settled",
        268_000,
        2,
        200,
    )
    assert row["finished_at"] is not None
    assert await kinds(ledger, buyer.account) == [("topup", 1_000_000), ("charge", -268_000)]
    assert await assert_books_balance(engine, buyer.account) == 732_000


async def test_fewer_images_refunds_the_difference(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    request_id = rid()
    await buyer.hold(402_000, request_id=request_id)

    outcome = await ledger.settle(request_id=request_id, cost_micros=134_000, images=1)

    assert (outcome.cost_micros, outcome.refunded_micros, outcome.balance_after_micros) == (
        134_000,
        268_000,
        866_000,
    )
    assert await kinds(ledger, buyer.account) == [
        ("topup", 1_000_000),
        ("charge", -402_000),
        ("refund", 268_000),
    ]
    assert await assert_books_balance(engine, buyer.account) == 866_000


async def test_failed_request_is_refunded_in_full(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 500_000)
    request_id = rid()
    await buyer.hold(500_000, request_id=request_id)
    assert await assert_books_balance(engine, buyer.account) == 0

    outcome = await ledger.settle(
        request_id=request_id, cost_micros=0, images=0, status_code=502, error_code="UPSTREAM_ERROR"
    )

    assert outcome.refunded_micros == 500_000
    row = await request_row(engine, request_id)
    assert (row["state"], row["status_code"], row["error_code"], row["cost_micros"]) == (
        "settled",
        502,
        "UPSTREAM_ERROR",
        0,
    )
    rows, _ = await ledger.ledger_page(buyer.account, limit=1, cursor=None)
    assert rows[0].kind == "refund" and rows[0].note == "request failed (UPSTREAM_ERROR)"
    assert rows[0].request_id == request_id and rows[0].key_id == buyer.key and rows[0].model == "m"
    assert await assert_books_balance(engine, buyer.account) == 500_000


async def test_settle_twice_is_harmless(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    request_id = rid()
    await buyer.hold(300_000, request_id=request_id)
    first = await ledger.settle(request_id=request_id, cost_micros=0, images=0, status_code=500)
    second = await ledger.settle(request_id=request_id, cost_micros=0, images=0, status_code=500)
    assert first.settled and first.refunded_micros == 300_000
    assert not second.settled and second.state == "already_settled"
    assert second.refunded_micros == 0
    assert await assert_books_balance(engine, buyer.account) == 1_000_000


async def test_settle_of_unknown_request_does_nothing(ledger: Ledger) -> None:
    outcome = await ledger.settle(request_id="req_nope", cost_micros=1, images=1)
    assert outcome.state == "not_found"


async def test_cost_above_hold_is_clamped(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    request_id = rid()
    await buyer.hold(100_000, request_id=request_id)
    outcome = await ledger.settle(request_id=request_id, cost_micros=150_000, images=1)
    assert (outcome.cost_micros, outcome.refunded_micros) == (100_000, 0)
    assert await assert_books_balance(engine, buyer.account) == 900_000


async def test_insufficient_balance_message_is_exact(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 100_000)
    with pytest.raises(InsufficientBalance) as caught:
        await buyer.hold(134_000)
    assert caught.value.status == 402 and caught.value.code == "INSUFFICIENT_BALANCE"
    assert caught.value.message == "balance $0.1 is below this request's price $0.134"
    assert await assert_books_balance(engine, buyer.account) == 100_000


async def test_whole_dollar_amounts_print_plainly(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 0)
    with pytest.raises(
        InsufficientBalance, match=r"^balance \$0 is below this request's price \$10$"
    ):
        await buyer.hold(10_000_000)


async def test_exact_balance_can_be_spent_to_zero(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 134_000)
    assert await buyer.hold(134_000) == 0
    assert await assert_books_balance(engine, buyer.account) == 0


async def test_zero_hold_checks_and_logs_but_moves_nothing(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    buyer = await payer(engine, ledger, 0)
    request_id = rid()
    assert await buyer.hold(0, request_id=request_id) == 0
    assert (await request_row(engine, request_id))["state"] == "pending"
    outcome = await ledger.settle(request_id=request_id, cost_micros=0, images=1)
    assert outcome.settled and outcome.refunded_micros == 0
    assert await kinds(ledger, buyer.account) == []
    await assert_books_balance(engine, buyer.account)

    await ledger.update_account(buyer.account, status="suspended")
    with pytest.raises(PermissionDenied):
        await buyer.hold(0)


async def test_suspended_account_is_refused(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    await ledger.update_account(buyer.account, status="suspended")
    request_id = rid()
    with pytest.raises(PermissionDenied) as caught:
        await buyer.hold(1, request_id=request_id)
    assert caught.value.code == "ACCOUNT_SUSPENDED"
    assert await assert_books_balance(engine, buyer.account) == 1_000_000
    await ledger.update_account(buyer.account, status="active")
    await buyer.hold(1, request_id=request_id)


async def test_revoked_key_is_refused(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000, revoked=True)
    with pytest.raises(PermissionDenied) as caught:
        await buyer.hold(1)
    assert caught.value.code == "KEY_REVOKED" and caught.value.status == 403
    assert await assert_books_balance(engine, buyer.account) == 1_000_000


async def test_rotated_secret_is_refused_at_once(engine: AsyncEngine, ledger: Ledger) -> None:
    """A process may still cache the old secret; the hold matches the key's current hash."""
    buyer = await payer(engine, ledger, 1_000_000)
    current = hashlib.sha256(buyer.secret.encode()).hexdigest()
    await buyer.hold(1, key_hash=current)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE api_keys SET key_hash = :h WHERE id = :id"),
            {"h": "0" * 64, "id": buyer.key},
        )
    with pytest.raises(AuthenticationError) as caught:
        await buyer.hold(1, key_hash=current)
    assert caught.value.code == "INVALID_API_KEY" and "rotated" in caught.value.message
    assert await assert_books_balance(engine, buyer.account) == 1_000_000 - 1


async def test_expired_key_is_refused(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(
        engine, ledger, 1_000_000, expires_at=datetime.now(UTC) - timedelta(seconds=5)
    )
    valid, _ = await make_key(
        engine, buyer.account, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    with pytest.raises(PermissionDenied) as caught:
        await buyer.hold(1)
    assert caught.value.code == "KEY_EXPIRED"
    await buyer.hold(1, key_id=valid)
    assert await assert_books_balance(engine, buyer.account) == 999_999


async def test_key_of_another_account_or_deleted_is_refused(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    other = await payer(engine, ledger, 1_000_000)
    with pytest.raises(AuthenticationError):
        await buyer.hold(1, key_id=other.key)
    with pytest.raises(AuthenticationError):
        await buyer.hold(1, key_id="key_gone")
    assert await assert_books_balance(engine, buyer.account) == 1_000_000


async def test_reused_request_id_moves_no_money(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 1_000_000)
    request_id = rid()
    await buyer.hold(100_000, request_id=request_id)
    with pytest.raises(Conflict) as caught:
        await buyer.hold(100_000, request_id=request_id)
    assert caught.value.code == "DUPLICATE_REQUEST_ID"
    assert await assert_books_balance(engine, buyer.account) == 900_000


async def test_log_unbilled(engine: AsyncEngine, ledger: Ledger) -> None:
    buyer = await payer(engine, ledger, 0)
    request_id = rid()
    await ledger.log_unbilled(
        request_id=request_id,
        account_id=buyer.account,
        key_id=buyer.key,
        model="m",
        status_code=402,
        error_code="INSUFFICIENT_BALANCE",
        latency_ms=3,
        user="u",
        client_request_id="c",
    )
    await ledger.log_unbilled(  # a second log of the same id is ignored
        request_id=request_id,
        account_id=None,
        key_id=None,
        model=None,
        status_code=400,
        error_code="X",
        latency_ms=None,
    )
    row = await request_row(engine, request_id)
    assert (row["state"], row["status_code"], row["error_code"], row["held_micros"]) == (
        "unbilled",
        402,
        "INSUFFICIENT_BALANCE",
        0,
    )
    assert (await ledger.settle(request_id=request_id, cost_micros=0, images=0)).state == "unbilled"
    assert await assert_books_balance(engine, buyer.account) == 0


async def test_a_cancelled_settle_still_refunds(engine: AsyncEngine, ledger: Ledger) -> None:
    """A client hanging up mid-settle must not leave the refund to the sweeper."""
    buyer = await payer(engine, ledger, 1_000_000)
    request_id = rid()
    await buyer.hold(300_000, request_id=request_id)
    settle = asyncio.ensure_future(
        ledger.settle(request_id=request_id, cost_micros=0, images=0, status_code=499)
    )
    await asyncio.sleep(0)  # let it start its statement
    settle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settle
    for _ in range(200):
        if (await request_row(engine, request_id))["state"] == "settled":
            break
        await asyncio.sleep(0.01)
    assert (await request_row(engine, request_id))["state"] == "settled"
    assert await assert_books_balance(engine, buyer.account) == 1_000_000
