"""The raw money statements (`app.db.raw`, `app.ledger.hot`): same SQL, same error classes.

A `Ledger` whose engine goes through a loopback `TcpProxy` (as in `test_outages`): after a
warm-up (the pool holds connections with the statements prepared), an outage during the raw
hold or settle is `DatabaseUnavailable` (503 with Retry-After) and the broken connections are
invalidated; a statement timeout on a locked row is `DatabaseUnavailable` too but keeps its
connection; after the outage the very next statements work and the books balance.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.faults import DatabaseUnavailable
from app.db.raw import RawStatement
from app.ledger import Ledger
from tests.support import databases
from tests.support.books import assert_books_balance
from tests.support.factories import make_account, make_key
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio
BOUND_S = 25.0  # far above the 1 s limits set here, far below a hang


def test_binds_become_positional_and_casts_and_strings_stay() -> None:
    statement = RawStatement(
        "SELECT CAST(:a AS TEXT), :b, random()::text, ':' || 'x:y', :a WHERE k = :b_2"
    )
    assert (
        statement.sql
        == "SELECT CAST($1 AS TEXT), $2, random()::text, ':' || 'x:y', $1 WHERE k = $3"
    )
    assert statement.args({"b_2": 3, "a": 1, "b": 2}) == [1, 2, 3]


@pytest.fixture
def postgres_url(postgres_session_url: str) -> str:
    asyncio.run(databases.truncate_postgres(postgres_session_url))
    return postgres_session_url


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    target = make_url(postgres_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as running:
        yield running


@pytest.fixture
async def proxied(postgres_url: str, proxy: TcpProxy) -> AsyncIterator[AsyncEngine]:
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    engine = make_engine(
        url, pool_size=2, pool_timeout_s=2.0, connect_timeout_s=1.0, statement_timeout_s=1.0
    )
    yield engine
    await engine.dispose()


def invalidations(engine: AsyncEngine) -> list[object]:
    seen: list[object] = []
    event.listen(engine.sync_engine, "invalidate", lambda *_: seen.append(_))
    return seen


async def hold(ledger: Ledger, account: str, key: str, request_id: str | None = None) -> str:
    request_id = request_id or "req_" + uuid.uuid4().hex
    await ledger.hold(
        request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=1000
    )
    return request_id


async def settle(ledger: Ledger, request_id: str, cost: int = 1000) -> Any:
    return await ledger.settle(request_id=request_id, cost_micros=cost, images=1, latency_ms=1)


async def assert_unavailable(work: Any) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        await work
    assert caught.value.status == 503 and caught.value.retry_after == 2
    assert time.monotonic() - started < BOUND_S


async def recovered(ledger: Ledger, account: str, key: str) -> None:
    for attempt in range(5):
        try:
            await settle(ledger, await hold(ledger, account, key), cost=500)
            return
        except DatabaseUnavailable:
            await asyncio.sleep(0.2 * (attempt + 1))
    await settle(ledger, await hold(ledger, account, key), cost=500)


async def test_a_cut_during_raw_statements_is_503_and_the_pool_recovers(
    proxied: AsyncEngine, proxy: TcpProxy
) -> None:
    ledger = Ledger(proxied)
    account = await make_account(proxied, 1_000_000)
    key, _ = await make_key(proxied, account)
    pending = await hold(ledger, account, key)
    await settle(ledger, await hold(ledger, account, key))  # warm: connections, statements
    invalidated = invalidations(proxied)

    proxy.cut()  # the pooled connections are reset under the raw statements
    await assert_unavailable(hold(ledger, account, key))
    await assert_unavailable(settle(ledger, pending))
    assert invalidated, "a broken connection went back to the pool"
    proxy.restore()

    await recovered(ledger, account, key)
    outcome = await settle(ledger, pending, cost=0)  # its refund still happens, once
    assert outcome.refunded_micros == 1000
    await assert_books_balance(proxied, account)


async def test_a_frozen_database_during_a_raw_hold_is_503_in_bounded_time(
    proxied: AsyncEngine, proxy: TcpProxy
) -> None:
    ledger = Ledger(proxied)
    account = await make_account(proxied, 1_000_000)
    key, _ = await make_key(proxied, account)
    await settle(ledger, await hold(ledger, account, key))
    invalidated = invalidations(proxied)

    proxy.freeze()
    await assert_unavailable(hold(ledger, account, key))
    assert invalidated, "a connection that never answered went back to the pool"
    proxy.restore()

    await recovered(ledger, account, key)
    await assert_books_balance(proxied, account)


async def test_a_statement_timeout_on_a_raw_hold_is_503_and_keeps_the_connection(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url, pool_size=2, statement_timeout_s=1.0)
    other = make_engine(postgres_url)
    try:
        ledger = Ledger(engine)
        account = await make_account(engine, 1_000_000)
        key, _ = await make_key(engine, account)
        await settle(ledger, await hold(ledger, account, key))
        invalidated = invalidations(engine)
        async with other.begin() as locker:
            await locker.execute(
                text("SELECT 1 FROM accounts WHERE id = :id FOR UPDATE"), {"id": account}
            )
            await assert_unavailable(hold(ledger, account, key))
        assert not invalidated, "a cancelled statement's working connection was thrown away"
        await settle(ledger, await hold(ledger, account, key))
        assert await assert_books_balance(engine, account) == 1_000_000 - 2000
    finally:
        await engine.dispose()
        await other.dispose()
