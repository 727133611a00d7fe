"""hold -> settle: charges, refunds, refusals; the books balance after every scenario."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

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


async def test_hold_then_settle_at_full_cost(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = rid()

    after = await ledger.hold(
        request_id=request_id,
        account_id=account,
        key_id=key,
        model="m",
        amount_micros=268_000,
        user="u1",
        client_request_id="c1",
    )
    assert after == 732_000
    pending = await request_row(engine, request_id)
    assert (pending["state"], pending["held_micros"], pending["user"]) == ("pending", 268_000, "u1")
    await assert_books_balance(engine, account)

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
    assert await kinds(ledger, account) == [("topup", 1_000_000), ("charge", -268_000)]
    assert await assert_books_balance(engine, account) == 732_000


async def test_fewer_images_refunds_the_difference(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=402_000
    )

    outcome = await ledger.settle(request_id=request_id, cost_micros=134_000, images=1)

    assert (outcome.cost_micros, outcome.refunded_micros, outcome.balance_after_micros) == (
        134_000,
        268_000,
        866_000,
    )
    assert await kinds(ledger, account) == [
        ("topup", 1_000_000),
        ("charge", -402_000),
        ("refund", 268_000),
    ]
    assert await assert_books_balance(engine, account) == 866_000


async def test_failed_request_is_refunded_in_full(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 500_000)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=500_000
    )
    assert await assert_books_balance(engine, account) == 0

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
    rows, _ = await ledger.ledger_page(account, limit=1, cursor=None)
    assert rows[0].kind == "refund" and rows[0].note == "request failed (UPSTREAM_ERROR)"
    assert rows[0].request_id == request_id and rows[0].key_id == key and rows[0].model == "m"
    assert await assert_books_balance(engine, account) == 500_000


async def test_settle_twice_is_harmless(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=300_000
    )
    first = await ledger.settle(request_id=request_id, cost_micros=0, images=0, status_code=500)
    second = await ledger.settle(request_id=request_id, cost_micros=0, images=0, status_code=500)
    assert first.settled and first.refunded_micros == 300_000
    assert not second.settled and second.state == "already_settled"
    assert second.refunded_micros == 0
    assert await assert_books_balance(engine, account) == 1_000_000


async def test_settle_of_unknown_request_does_nothing(ledger: Ledger) -> None:
    outcome = await ledger.settle(request_id="req_nope", cost_micros=1, images=1)
    assert outcome.state == "not_found"


async def test_cost_above_hold_is_clamped(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=100_000
    )
    outcome = await ledger.settle(request_id=request_id, cost_micros=150_000, images=1)
    assert (outcome.cost_micros, outcome.refunded_micros) == (100_000, 0)
    assert await assert_books_balance(engine, account) == 900_000


async def test_insufficient_balance_message_is_exact(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 100_000)
    key, _ = await make_key(engine, account)
    with pytest.raises(InsufficientBalance) as caught:
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=134_000
        )
    assert caught.value.status == 402 and caught.value.code == "INSUFFICIENT_BALANCE"
    assert caught.value.message == "balance $0.1 is below this request's price $0.134"
    assert await assert_books_balance(engine, account) == 100_000


async def test_whole_dollar_amounts_print_plainly(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 0)
    key, _ = await make_key(engine, account)
    with pytest.raises(
        InsufficientBalance, match=r"^balance \$0 is below this request's price \$10$"
    ):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=10_000_000
        )


async def test_exact_balance_can_be_spent_to_zero(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 134_000)
    key, _ = await make_key(engine, account)
    assert (
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=134_000
        )
        == 0
    )
    assert await assert_books_balance(engine, account) == 0


async def test_zero_hold_checks_and_logs_but_moves_nothing(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await make_account(engine, 0)
    key, _ = await make_key(engine, account)
    request_id = rid()
    assert (
        await ledger.hold(
            request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=0
        )
        == 0
    )
    assert (await request_row(engine, request_id))["state"] == "pending"
    outcome = await ledger.settle(request_id=request_id, cost_micros=0, images=1)
    assert outcome.settled and outcome.refunded_micros == 0
    assert await kinds(ledger, account) == []
    await assert_books_balance(engine, account)

    await ledger.update_account(account, status="suspended")
    with pytest.raises(PermissionDenied):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=0
        )


async def test_suspended_account_is_refused(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    await ledger.update_account(account, status="suspended")
    request_id = rid()
    with pytest.raises(PermissionDenied) as caught:
        await ledger.hold(
            request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=1
        )
    assert caught.value.code == "ACCOUNT_SUSPENDED"
    assert await assert_books_balance(engine, account) == 1_000_000
    await ledger.update_account(account, status="active")
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=1
    )


async def test_revoked_key_is_refused(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account, revoked=True)
    with pytest.raises(PermissionDenied) as caught:
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=1
        )
    assert caught.value.code == "KEY_REVOKED" and caught.value.status == 403
    assert await assert_books_balance(engine, account) == 1_000_000


async def test_rotated_secret_is_refused_at_once(engine: AsyncEngine, ledger: Ledger) -> None:
    """A process may still cache the old secret; the hold matches the key's current hash."""
    account = await make_account(engine, 1_000_000)
    key, secret = await make_key(engine, account)
    current = hashlib.sha256(secret.encode()).hexdigest()
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=1,
        key_hash=current,
    )  # fmt: skip
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE api_keys SET key_hash = :h WHERE id = :id"), {"h": "0" * 64, "id": key}
        )
    with pytest.raises(AuthenticationError) as caught:
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=1,
            key_hash=current,
        )  # fmt: skip
    assert caught.value.code == "INVALID_API_KEY" and "rotated" in caught.value.message
    assert await assert_books_balance(engine, account) == 1_000_000 - 1


async def test_expired_key_is_refused(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    expired, _ = await make_key(
        engine, account, expires_at=datetime.now(UTC) - timedelta(seconds=5)
    )
    valid, _ = await make_key(engine, account, expires_at=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(PermissionDenied) as caught:
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=expired, model="m", amount_micros=1
        )
    assert caught.value.code == "KEY_EXPIRED"
    await ledger.hold(
        request_id=rid(), account_id=account, key_id=valid, model="m", amount_micros=1
    )
    assert await assert_books_balance(engine, account) == 999_999


async def test_key_of_another_account_or_deleted_is_refused(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await make_account(engine, 1_000_000)
    other = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, other)
    with pytest.raises(AuthenticationError):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id=key, model="m", amount_micros=1
        )
    with pytest.raises(AuthenticationError):
        await ledger.hold(
            request_id=rid(), account_id=account, key_id="key_gone", model="m", amount_micros=1
        )
    assert await assert_books_balance(engine, account) == 1_000_000


async def test_reused_request_id_moves_no_money(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=100_000
    )
    with pytest.raises(Conflict) as caught:
        await ledger.hold(
            request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=100_000
        )
    assert caught.value.code == "DUPLICATE_REQUEST_ID"
    assert await assert_books_balance(engine, account) == 900_000


async def test_log_unbilled(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await make_account(engine, 0)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.log_unbilled(
        request_id=request_id,
        account_id=account,
        key_id=key,
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
    assert await assert_books_balance(engine, account) == 0


async def test_a_cancelled_settle_still_refunds(engine: AsyncEngine, ledger: Ledger) -> None:
    """A client hanging up mid-settle must not leave the refund to the sweeper."""
    account = await make_account(engine, 1_000_000)
    key, _ = await make_key(engine, account)
    request_id = rid()
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=300_000
    )
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
    assert await assert_books_balance(engine, account) == 1_000_000
