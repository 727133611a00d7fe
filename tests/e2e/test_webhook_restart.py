"""Webhooks survive a restart: an event whose delivery failed while one gateway process ran
is delivered by the next process after it was stopped (the outbox is in the database), to a
real HTTPS receiver that verifies the Standard Webhooks signature."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import WebhookDelivery
from app.ledger import Ledger
from tests.support import factories
from tests.support.live import ADMIN_TOKEN
from tests.support.processes import GatewayProcess
from tests.support.served import assert_every_account_balances, run_db
from tests.support.webhook_receiver import WebhookReceiver

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  local-preview:
    routes: [{provider: local}]
    pricing: {per_image: 0.001}
"""
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
USD = 1_000_000


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gateway(tmp_path: Path, database_url: str, receiver: WebhookReceiver) -> GatewayProcess:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    return GatewayProcess(
        database_url=database_url,
        catalog=catalog,
        log_dir=tmp_path,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        GATEWAY_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on loopback
        GATEWAY_WEBHOOK_CA_BUNDLE=str(receiver.ca_path),
        GATEWAY_WEBHOOK_BACKOFF_S="0.2",
        GATEWAY_WEBHOOK_MAX_BACKOFF_S="0.5",
        GATEWAY_WEBHOOK_POLL_INTERVAL_S="0.1",
        GATEWAY_WEBHOOK_TIMEOUT_S="5",
        GATEWAY_WEBHOOK_LEASE_S="10",
    ).start()


async def deliveries(engine: AsyncEngine) -> list[tuple[str, int, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(WebhookDelivery.state, WebhookDelivery.attempts, WebhookDelivery.last_error)
        )
        return [(row.state, row.attempts, row.last_error) for row in rows]


def test_a_pending_delivery_is_sent_by_the_next_process(tmp_path: Path, database_url: str) -> None:
    async def seed(engine: AsyncEngine) -> str:
        account = await factories.make_account(engine, balance_micros=10 * USD)
        await Ledger(engine).update_account(account, low_balance_threshold_micros=5 * USD)
        return account

    account = run_db(database_url, seed)
    with WebhookReceiver(tmp_path, failing=True) as receiver:
        first = gateway(tmp_path, database_url, receiver)
        try:
            first.wait_ready()
            created = httpx.post(
                f"{first.url}/admin/v1/webhooks/endpoints",
                headers=ADMIN,
                json={"url": receiver.url, "event_types": ["balance.below_threshold"]},
            )
            assert created.status_code == 201, created.text
            receiver.secret = created.json()["secret"]
            credit = httpx.post(  # $10 -> $4: crosses the $5 threshold
                f"{first.url}/admin/v1/accounts/{account}/credits",
                headers=ADMIN,
                json={"amount": -6, "note": "correction"},
            )
            assert credit.status_code == 200, credit.text
            wait_for(lambda: len(receiver.received) >= 1, "a first (failed) attempt")
        finally:
            first.stop()
        [(state, attempts, error)] = run_db(database_url, deliveries)
        assert state == "pending" and attempts >= 1 and error == "HTTP 500"
        assert all(r.verified and r.status == 500 for r in receiver.received)

        receiver.failing = False
        second = gateway(tmp_path, database_url, receiver)
        try:
            second.wait_ready()
            wait_for(lambda: len(receiver.delivered) == 1, "the delivery after the restart")
            listed = httpx.get(f"{second.url}/admin/v1/webhooks/deliveries", headers=ADMIN)
            [delivery] = listed.json()["data"]
        finally:
            second.stop()
    assert delivery["status"] == "succeeded" and delivery["attempts"] == attempts + 1
    [got] = receiver.delivered
    assert got.payload["type"] == "balance.below_threshold"
    assert got.payload["data"] == {"account_id": account, "balance": 4.0, "threshold": 5.0}
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery["event_id"]}
    run_db(database_url, assert_every_account_balances)
