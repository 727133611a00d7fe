"""Deliveries from the outbox to a real HTTPS receiver on loopback that checks every
signature: success, retries on the backoff schedule (clock stepped by hand), giving up,
leases between replicas, and the destination policy re-checked at send time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.webhooks import events
from app.webhooks.destinations import DestinationPolicy
from app.webhooks.dispatcher import Dispatcher, make_client
from app.webhooks.repository import WebhookRepository
from tests.webhooks.conftest import POLICY, Hooks, make_dispatcher

pytestmark = pytest.mark.anyio


async def subscribe(hooks: Hooks, *types: str) -> str:
    endpoint = await hooks.service.create_endpoint(
        url=hooks.receiver.url, event_types=list(types or [events.PROVIDER_COOLED_DOWN])
    )
    hooks.receiver.secret = endpoint.secret
    return endpoint.id


async def cooled_down(hooks: Hooks, provider: str = "openai") -> events.EventDraft:
    draft = events.provider_transition(provider, "cooled_down", since=provider)
    assert await hooks.dispatcher.emit(draft)
    return draft


async def only_delivery(hooks: Hooks) -> object:
    records, _ = await hooks.service.list_deliveries(
        endpoint_id=None, state=None, limit=10, cursor=None
    )
    assert len(records) == 1
    return records[0]


async def test_a_delivery_is_signed_and_verified_by_the_receiver(hooks: Hooks) -> None:
    await subscribe(hooks)
    draft = await cooled_down(hooks)
    assert await hooks.dispatcher.run_once() == 1
    [got] = hooks.receiver.delivered
    assert got.verified and got.headers["webhook-id"] == draft.id
    assert got.headers["webhook-timestamp"] == str(int(hooks.clock.now.timestamp()))
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.payload == {
        "type": "provider.cooled_down",
        "timestamp": got.payload["timestamp"],
        "data": {"provider": "openai"},
    }
    delivery = await only_delivery(hooks)
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 204)
    assert await hooks.dispatcher.run_once() == 0  # sent once, not again


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(hooks: Hooks) -> None:
    await subscribe(hooks)
    hooks.receiver.fail_next = 2
    draft = await cooled_down(hooks)
    assert await hooks.dispatcher.run_once() == 1
    first = await only_delivery(hooks)
    assert (first.state, first.attempts, first.last_error) == ("pending", 1, "HTTP 500")
    wait = (first.next_attempt_at - hooks.clock.now).total_seconds()
    assert POLICY.backoff_s / 2 <= wait <= POLICY.backoff_s  # equal jitter around 10 s
    assert await hooks.dispatcher.run_once() == 0  # not due yet

    hooks.clock.advance(wait)
    assert await hooks.dispatcher.run_once() == 1
    second = await only_delivery(hooks)
    wait = (second.next_attempt_at - hooks.clock.now).total_seconds()
    assert second.attempts == 2 and POLICY.backoff_s <= wait <= 2 * POLICY.backoff_s

    hooks.clock.advance(wait)
    assert await hooks.dispatcher.run_once() == 1
    done = await only_delivery(hooks)
    assert (done.state, done.attempts, done.last_error) == ("succeeded", 3, None)
    ids = [r.headers["webhook-id"] for r in hooks.receiver.received]
    assert ids == [draft.id] * 3  # the same webhook-id on every attempt (idempotency key)
    assert [r.status for r in hooks.receiver.received] == [500, 500, 204]


async def test_a_delivery_gives_up_after_max_attempts_and_at_once_on_410(hooks: Hooks) -> None:
    await subscribe(hooks)
    hooks.receiver.failing = True
    await cooled_down(hooks)
    for _ in range(POLICY.max_attempts):
        assert await hooks.dispatcher.run_once() == 1
        hooks.clock.advance(POLICY.max_backoff_s)
    failed = await only_delivery(hooks)
    assert (failed.state, failed.attempts) == ("failed", POLICY.max_attempts)
    assert await hooks.dispatcher.run_once() == 0

    hooks.receiver.fail_status = 410
    await cooled_down(hooks, provider="fal")
    assert await hooks.dispatcher.run_once() == 1
    records, _ = await hooks.service.list_deliveries(
        endpoint_id=None, state="failed", limit=10, cursor=None
    )
    assert sorted(r.attempts for r in records) == [1, POLICY.max_attempts]


async def test_two_replicas_never_send_the_same_attempt(hooks: Hooks) -> None:
    await subscribe(hooks)
    drafts = [await cooled_down(hooks, provider=f"p{i}") for i in range(20)]
    other = make_dispatcher(hooks.engine, hooks.receiver, hooks.clock, owner="replica-b")
    try:
        sent = await asyncio.gather(hooks.dispatcher.run_once(), other.run_once())
    finally:
        await other.client.aclose()
    assert sum(sent) == 20
    ids = [r.headers["webhook-id"] for r in hooks.receiver.delivered]
    assert sorted(ids) == sorted(d.id for d in drafts)  # each exactly once


async def test_a_dead_senders_lease_runs_out_and_the_attempt_is_sent_again(hooks: Hooks) -> None:
    await subscribe(hooks)
    # an event whose first attempt a "dead" process claimed and never sent
    await cooled_down(hooks, provider="bfl")
    async with hooks.engine.begin() as conn:
        await WebhookRepository(conn).fan_out(now=hooks.clock.now, limit=10)
    async with hooks.engine.begin() as conn:
        [lost] = await WebhookRepository(conn).claim(
            owner="dead", now=hooks.clock.now, lease_s=POLICY.lease_s, limit=10
        )
    assert await hooks.dispatcher.run_once() == 0  # leased: nobody else sends it
    hooks.clock.advance(POLICY.lease_s + 1)
    assert await hooks.dispatcher.run_once() == 1
    assert len(hooks.receiver.delivered) == 1
    async with hooks.engine.begin() as conn:  # the dead sender's late verdict is refused
        late = await WebhookRepository(conn).finish_attempt(
            delivery_id=lost.delivery_id,
            owner="dead",
            attempt=lost.attempt,
            state="failed",
            next_attempt_at=None,
            status_code=None,
            error="late",
            now=hooks.clock.now,
        )
    assert late is False
    delivery = await hooks.service.get_delivery(lost.delivery_id)
    assert (delivery.state, delivery.attempts) == ("succeeded", 2)


async def test_private_addresses_are_refused_at_send_time_without_the_opt_in(
    hooks: Hooks,
) -> None:
    await subscribe(hooks)
    await cooled_down(hooks)
    strict = Dispatcher(
        hooks.engine,
        make_client(timeout_s=5, ca_bundle=hooks.receiver.ca_path),
        destinations=DestinationPolicy(),
        policy=POLICY,
        clock=hooks.clock,
    )
    try:
        assert await strict.run_once() == 1
    finally:
        await strict.client.aclose()
    delivery = await only_delivery(hooks)
    assert delivery.state == "pending" and "private, loopback" in (delivery.last_error or "")
    assert hooks.receiver.received == []
    assert delivery.next_attempt_at > hooks.clock.now + timedelta(seconds=1)


async def test_finished_history_is_pruned_after_the_retention_pending_work_is_not(
    hooks: Hooks,
) -> None:
    await subscribe(hooks)
    await cooled_down(hooks, provider="done")
    await hooks.dispatcher.run_once()  # delivered: finished history
    hooks.receiver.failing = True
    await cooled_down(hooks, provider="stuck")
    await hooks.dispatcher.run_once()  # failed once: still pending
    hooks.clock.advance(POLICY.retention_s - 60)
    assert await hooks.dispatcher.prune() == 0  # not old enough
    hooks.clock.advance(120)
    assert await hooks.dispatcher.prune() == 2  # the finished delivery and its event
    records, _ = await hooks.service.list_deliveries(
        endpoint_id=None, state=None, limit=10, cursor=None
    )
    assert [(r.state, r.attempts) for r in records] == [("pending", 1)]
