"""CPU per hold+settle pair on one `Ledger` (Postgres): process time, not wall clock.

    .venv/bin/python -m bench.money_cpu [--pairs N] [--concurrency C]

Creates (and drops) its own database on TEST_POSTGRES_URL's server. Reports the process CPU
(user + system) per pair: sequential pairs (the single statements) and C concurrent pairs on
one account (the batched statements)."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from app.db.engine import make_engine
from app.ledger import Ledger
from tests.support import databases
from tests.support.factories import make_account, make_key


async def _pairs(ledger: Ledger, account: str, key: str, n: int) -> None:
    for _ in range(n):
        request_id = "req_" + uuid.uuid4().hex
        await ledger.hold(
            request_id=request_id, account_id=account, key_id=key, model="m", amount_micros=10
        )
        await ledger.settle(request_id=request_id, cost_micros=10, images=1, latency_ms=1)


async def _measure(url: str, pairs: int, concurrency: int) -> None:
    engine = make_engine(url, pool_size=10)
    ledger = Ledger(engine)
    account = await make_account(engine, 10**9)
    key, _ = await make_key(engine, account)
    await _pairs(ledger, account, key, 50)  # warm: connections, prepared statements
    for label, tasks in (("sequential", 1), (f"concurrent x{concurrency}", concurrency)):
        per_task = pairs // tasks
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(_pairs(ledger, account, key, per_task) for _ in range(tasks)))
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        done = per_task * tasks
        print(
            f"{label:>16}: {done} pairs, CPU {cpu / done * 1e6:7.1f} us/pair, "
            f"wall {wall / done * 1e6:7.1f} us/pair"
        )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    name = f"igw_money_cpu_{os.getpid()}"
    url = databases.create_postgres_database(name)
    try:
        asyncio.run(_measure(url, args.pairs, args.concurrency))
    finally:
        databases.drop_postgres_database(name)


if __name__ == "__main__":
    main()
