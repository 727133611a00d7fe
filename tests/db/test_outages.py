"""A database that stops answering is a prompt 503 with `Retry-After`, and the pool recovers.

A live gateway whose DATABASE_URL goes through a loopback `TcpProxy` to the test's Postgres, so
the test can freeze the path (a hung server or a partition: bytes stop moving, connections stay
open), cut it (every connection reset, new ones refused) or point it at a closed port, and then
bring it back. The same checks run against a Postgres table locked by another session and a
SQLite file locked by another writer. Every wait is bounded by the settings (1 s connect and
statement timeouts, 2 s pool checkout here), so each answer must come within a generous
`BOUND_S`; today's unbounded waits would hang until the test's own timeout.

The SDK is the client; after each outage the very next calls must succeed with no restart,
and the books must balance.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db.engine import make_engine
from tests.support import factories
from tests.support.books import assert_books_balance
from tests.support.live import LiveGateway, write_catalog
from tests.support.processes import free_port
from tests.support.tcp_proxy import TcpProxy

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  local-preview:
    owned_by: image-gateway
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 64, max: 512, multiple_of: 8, default: 64}
      height: {type: integer, min: 64, max: 512, multiple_of: 8, default: 64}
    pricing: {per_image: 0.001}
"""
PRICE = 1000
#: far above the 1-2 s limits set here, far below a hang
BOUND_S = 25.0
FAST_LIMITS = {
    "db_connect_timeout_s": 1.0,
    "db_statement_timeout_s": 1.0,
    "db_pool_timeout_s": 2.0,
    "db_pool_size": 2,
    # every request looks its key up again, so every request needs the database
    "key_cache_ttl_s": 0.0,
}


def run_db(url: str, work):  # type: ignore[no-untyped-def]
    async def wrapped():  # type: ignore[no-untyped-def]
        engine = make_engine(url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(wrapped())


def seed(url: str) -> tuple[str, str]:
    async def work(engine):  # type: ignore[no-untyped-def]
        account_id = await factories.make_account(engine, balance_micros=1_000_000)
        _, secret = await factories.make_key(engine, account_id)
        return account_id, secret

    result: tuple[str, str] = run_db(url, work)
    return result


def through(proxy: TcpProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


def generate(gateway: LiveGateway, secret: str) -> openai.types.ImagesResponse:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0, timeout=60)
    return client.images.generate(model="local-preview", prompt="a lighthouse")


def assert_prompt_503(gateway: LiveGateway, secret: str, *hidden: str) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        generate(gateway, secret)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.status_code == 503, error.response.text
    assert error.response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert int(error.response.headers["retry-after"]) >= 1
    for secret_part in hidden:
        assert secret_part not in error.response.text
    assert elapsed < BOUND_S, f"answered after {elapsed:.1f} s"


def assert_recovers(gateway: LiveGateway, secret: str) -> None:
    """The pool throws away what the outage broke: within a few calls, answers are 200."""
    for attempt in range(5):
        try:
            generate(gateway, secret)
            return
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc.response.text
            time.sleep(0.5 * (attempt + 1))
    generate(gateway, secret)


@pytest.fixture
def postgres_url(postgres_session_url: str) -> str:
    asyncio.run(_truncate(postgres_session_url))
    return postgres_session_url


async def _truncate(url: str) -> None:
    from tests.support.databases import truncate_postgres

    await truncate_postgres(url)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return write_catalog(tmp_path, CATALOG)


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    target = make_url(postgres_url)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as running:
        yield running


def test_a_frozen_postgres_answers_503_in_bounded_time_then_recovers(
    postgres_url: str, proxy: TcpProxy, catalog: Path
) -> None:
    account_id, secret = seed(postgres_url)
    with LiveGateway(
        database_url=through(proxy, postgres_url), catalog_path=catalog, **FAST_LIMITS
    ) as gateway:
        generate(gateway, secret)  # the pool holds live connections through the proxy
        proxy.freeze()
        assert_prompt_503(gateway, secret, str(proxy.port), "127.0.0.1")
        assert_prompt_503(gateway, secret, str(proxy.port))  # and again: no hang either
        proxy.restore()
        assert_recovers(gateway, secret)
    spent = 1_000_000 - run_db(postgres_url, lambda e: assert_books_balance(e, account_id))
    assert spent % PRICE == 0 and spent >= 2 * PRICE


def test_a_cut_and_then_unreachable_postgres_answers_503_then_recovers(
    postgres_url: str, proxy: TcpProxy, catalog: Path
) -> None:
    account_id, secret = seed(postgres_url)
    with LiveGateway(
        database_url=through(proxy, postgres_url), catalog_path=catalog, **FAST_LIMITS
    ) as gateway:
        generate(gateway, secret)
        proxy.cut()  # pooled connections reset; new ones refused
        assert_prompt_503(gateway, secret, str(proxy.port))
        assert_prompt_503(gateway, secret, str(proxy.port))
        proxy.restore()
        assert_recovers(gateway, secret)
    run_db(postgres_url, lambda e: assert_books_balance(e, account_id))


def test_a_closed_port_answers_503_naming_no_host(postgres_url: str, catalog: Path) -> None:
    _, secret = seed(postgres_url)
    port = free_port()  # nothing listens there
    url = make_url(postgres_url).set(port=port).render_as_string(False)
    with LiveGateway(database_url=url, catalog_path=catalog, **FAST_LIMITS) as gateway:
        assert_prompt_503(gateway, secret, str(port), "127.0.0.1", "Connect call failed")


def test_a_locked_postgres_table_answers_503_then_recovers(
    postgres_url: str, catalog: Path
) -> None:
    account_id, secret = seed(postgres_url)

    async def hold_lock(locked: asyncio.Event, release: asyncio.Event) -> None:
        engine = make_engine(postgres_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE"))
                locked.set()
                await release.wait()
        finally:
            await engine.dispose()

    with LiveGateway(database_url=postgres_url, catalog_path=catalog, **FAST_LIMITS) as gateway:
        generate(gateway, secret)
        with background_lock(hold_lock):
            assert_prompt_503(gateway, secret)
        assert_recovers(gateway, secret)
    spent = 1_000_000 - run_db(postgres_url, lambda e: assert_books_balance(e, account_id))
    assert spent == 2 * PRICE  # the refused request took nothing


def test_a_locked_sqlite_file_answers_503_then_recovers(database_url: str, catalog: Path) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the Postgres cases are above")
    account_id, secret = seed(database_url)
    path = make_url(database_url).database
    assert path
    with LiveGateway(database_url=database_url, catalog_path=catalog, **FAST_LIMITS) as gateway:
        generate(gateway, secret)
        writer = sqlite3.connect(path, timeout=1)
        try:
            writer.execute("BEGIN EXCLUSIVE")
            assert_prompt_503(gateway, secret)
        finally:
            writer.rollback()
            writer.close()
        assert_recovers(gateway, secret)
    spent = 1_000_000 - run_db(database_url, lambda e: assert_books_balance(e, account_id))
    assert spent == 2 * PRICE


class background_lock:
    """Run `hold(locked, release)` on its own loop in a thread until the block ends."""

    def __init__(self, hold) -> None:  # type: ignore[no-untyped-def]
        import threading

        self._hold = hold
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> None:
        self._thread.start()
        self._locked = asyncio.Event()
        self._release = asyncio.Event()

        async def start() -> None:
            self._locked = asyncio.Event()
            self._release = asyncio.Event()
            self._task = asyncio.ensure_future(self._hold(self._locked, self._release))
            await asyncio.wait_for(self._locked.wait(), 10)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=15)

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._release.set()
            await self._task

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
