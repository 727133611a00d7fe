"""Accounts, admin credits and the paginated ledger."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import Conflict, InvalidParameter, NotFound
from app.ledger import Ledger
from tests.support.books import assert_books_balance

pytestmark = pytest.mark.anyio


async def test_create_account_writes_the_initial_balance_as_a_topup(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await ledger.create_account(name="Acme", balance_micros=5_000_000)
    assert re.fullmatch(r"acct_[0-9a-f]{24}", account.id)
    assert (account.name, account.balance_micros, account.status) == ("Acme", 5_000_000, "active")
    assert account.created_at.tzinfo is not None
    rows, cursor = await ledger.ledger_page(account.id, limit=10, cursor=None)
    assert cursor is None
    assert [(r.kind, r.amount_micros, r.balance_after_micros, r.note) for r in rows] == [
        ("topup", 5_000_000, 5_000_000, "initial balance")
    ]
    assert await ledger.get_account(account.id) == account
    await assert_books_balance(engine, account.id)


async def test_create_account_without_balance_has_no_ledger_rows(ledger: Ledger) -> None:
    account = await ledger.create_account(name="Empty", account_id="acct_fixed")
    assert account.id == "acct_fixed"
    assert await ledger.ledger_page(account.id, limit=10, cursor=None) == ([], None)
    assert await ledger.balance_and_ledger_sum(account.id) == (0, 0)
    with pytest.raises(Conflict):
        await ledger.create_account(name="Again", account_id="acct_fixed")
    with pytest.raises(InvalidParameter):
        await ledger.create_account(name="Negative", balance_micros=-1)


async def test_get_and_update_account(ledger: Ledger) -> None:
    with pytest.raises(NotFound) as caught:
        await ledger.get_account("acct_missing")
    assert caught.value.code == "ACCOUNT_NOT_FOUND"
    account = await ledger.create_account(name="A")
    renamed = await ledger.update_account(account.id, name="B", status="suspended")
    assert (renamed.name, renamed.status) == ("B", "suspended")
    assert (await ledger.update_account(account.id)).name == "B"
    with pytest.raises(InvalidParameter) as invalid:
        await ledger.update_account(account.id, status="deleted")
    assert invalid.value.param == "status"
    with pytest.raises(NotFound):
        await ledger.update_account("acct_missing", name="x")


async def test_credit_positive_negative_zero_and_below_zero(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = (await ledger.create_account(name="A", balance_micros=1_000_000)).id

    topup = await ledger.credit(account_id=account, amount_micros=250_000, note="wire")
    assert (topup.kind, topup.amount_micros, topup.balance_after_micros, topup.note) == (
        "topup",
        250_000,
        1_250_000,
        "wire",
    )
    adjustment = await ledger.credit(account_id=account, amount_micros=-1_000_000, note=None)
    assert (adjustment.kind, adjustment.balance_after_micros) == ("adjustment", 250_000)
    goodwill = await ledger.credit(
        account_id=account, amount_micros=1, note="goodwill", kind="adjustment"
    )
    assert goodwill.kind == "adjustment"

    with pytest.raises(InvalidParameter) as below:
        await ledger.credit(account_id=account, amount_micros=-250_002, note=None)
    assert below.value.param == "amount" and "below zero" in below.value.message
    with pytest.raises(InvalidParameter) as zero:
        await ledger.credit(account_id=account, amount_micros=0, note=None)
    assert zero.value.param == "amount"
    with pytest.raises(InvalidParameter):
        await ledger.credit(account_id=account, amount_micros=-1, note=None, kind="topup")
    with pytest.raises(NotFound):
        await ledger.credit(account_id="acct_missing", amount_micros=1, note=None)

    to_zero = await ledger.credit(account_id=account, amount_micros=-250_001, note=None)
    assert to_zero.balance_after_micros == 0
    assert await assert_books_balance(engine, account) == 0


async def test_ledger_pages_newest_first_with_a_cursor(engine: AsyncEngine, ledger: Ledger) -> None:
    account = (await ledger.create_account(name="A")).id
    for amount in range(1, 8):
        await ledger.credit(account_id=account, amount_micros=amount, note=str(amount))

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        rows, cursor = await ledger.ledger_page(account, limit=3, cursor=cursor)
        seen += [row.amount_micros for row in rows]
        pages += 1
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    assert pages == 3
    exact, cursor = await ledger.ledger_page(account, limit=7, cursor=None)
    assert len(exact) == 7 and cursor is None

    with pytest.raises(InvalidParameter):
        await ledger.ledger_page(account, limit=0, cursor=None)
    with pytest.raises(InvalidParameter):
        await ledger.ledger_page(account, limit=501, cursor=None)
    with pytest.raises(InvalidParameter):
        await ledger.ledger_page(account, limit=10, cursor="abc")
    with pytest.raises(NotFound):
        await ledger.ledger_page("acct_missing", limit=10, cursor=None)
    assert await assert_books_balance(engine, account) == 28
