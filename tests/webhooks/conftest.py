"""Webhook test fixtures: a database engine, a hand-stepped clock, an HTTPS receiver on
loopback (its CA trusted by the dispatcher's client) and the service + dispatcher on top."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.webhooks.destinations import DestinationPolicy
from app.webhooks.dispatcher import DeliveryPolicy, Dispatcher, make_client
from app.webhooks.service import WebhookService
from tests.support.clock import FakeUtcClock
from tests.support.webhook_receiver import WebhookReceiver

#: the tests' receivers listen on loopback: opt in, as an operator would for in-cluster ones
LOOPBACK_OK = DestinationPolicy(allow_http=False, allow_private=True)
POLICY = DeliveryPolicy(timeout_s=5, max_attempts=4, backoff_s=10, max_backoff_s=60, lease_s=30)


@dataclass
class Hooks:
    engine: AsyncEngine
    clock: FakeUtcClock
    dispatcher: Dispatcher
    service: WebhookService
    receiver: WebhookReceiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(tmp_path) as receiver:
        yield receiver


def make_dispatcher(
    engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeUtcClock, *, owner: str
) -> Dispatcher:
    return Dispatcher(
        engine,
        make_client(timeout_s=POLICY.timeout_s, ca_bundle=receiver.ca_path),
        destinations=LOOPBACK_OK,
        policy=POLICY,
        clock=clock,
        rng=random.Random(7),
        owner=owner,
    )


@pytest.fixture
async def hooks(engine: AsyncEngine, receiver: WebhookReceiver) -> AsyncIterator[Hooks]:
    clock = FakeUtcClock()
    dispatcher = make_dispatcher(engine, receiver, clock, owner="replica-a")
    yield Hooks(
        engine, clock, dispatcher, WebhookService(engine, dispatcher, LOOPBACK_OK), receiver
    )
    await dispatcher.client.aclose()
