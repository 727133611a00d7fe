"""Sending deliveries from the outbox: fan out, claim with a lease, sign, POST, record.

    every poll interval, in every replica:
      fan_out   new events ─▶ one pending delivery per subscribed endpoint
      claim     due deliveries, leased to this process (attempt += 1)
      send      POST the signed body (Standard Webhooks headers), bounded by timeout and
                response size; a 2xx is success, anything else a failed attempt
      record    succeeded | pending again at now + backoff | failed after max_attempts
    every scan interval: keys expiring within the window ─▶ `key.expiring` (once per expiry);
                         finished history older than the retention is deleted

Retries use exponential backoff with "equal jitter": the n-th retry waits
`d/2 + uniform(0, d/2)` with `d = min(max_backoff, backoff * 2^(n-1))`, so retries spread out
but never collapse to zero; a receiver's `Retry-After` (seconds) is honoured up to
`max_backoff`. A `410 Gone` fails the delivery at once (the receiver asked us to stop).

Everything time-related is injected (`clock`, `rng`), so tests step through a retry schedule
without waiting. A process that dies mid-send leaves a lease that runs out; the attempt is
then sent again by whoever claims it (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import GatewayError
from app.settings import Settings
from app.webhooks import events, signing
from app.webhooks.destinations import (
    DestinationPolicy,
    DestinationRefused,
    check_addresses,
    check_url_shape,
)
from app.webhooks.outbox import OutboxRepository
from app.webhooks.repository import ClaimedAttempt, WebhookRepository

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: at most this much of a receiver's answer is read (and 500 characters kept as last_error)
MAX_RESPONSE_BYTES = 64 * 1024
_ERROR_CHARS = 500
_CLAIM_BATCH = 50
_FAN_OUT_BATCH = 200
_SCAN_BATCH = 500
_STOP_GRACE_S = 5.0


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    timeout_s: float = 15.0
    max_attempts: int = 10
    backoff_s: float = 5.0
    max_backoff_s: float = 6 * 3600.0
    lease_s: float = 60.0
    key_expiry_window_s: float = 7 * 86_400.0
    retention_s: float = 35 * 86_400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            timeout_s=settings.webhook_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
            max_backoff_s=settings.webhook_max_backoff_s,
            lease_s=settings.webhook_lease_s,
            key_expiry_window_s=settings.webhook_key_expiry_window_s,
            retention_s=settings.webhook_retention_days * 86_400.0,
        )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    give_up: bool = False


def retry_delay(attempt: int, policy: DeliveryPolicy, rng: random.Random) -> float:
    """Seconds before retry number `attempt` (1 = the first retry), with equal jitter."""
    ceiling: float = min(policy.max_backoff_s, policy.backoff_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def make_client(*, timeout_s: float, ca_bundle: Path | None) -> httpx.AsyncClient:
    """The webhook client: its own pool, no redirects, no proxy variables, system trust plus
    the operator's CA bundle."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return httpx.AsyncClient(
        verify=context,
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        client: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        destinations: DestinationPolicy,
        policy: DeliveryPolicy,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self._engine = engine
        #: the client, or how to make it on the first send (TLS setup costs start-up CPU)
        self._client = client if isinstance(client, httpx.AsyncClient) else None
        self._make_client = None if isinstance(client, httpx.AsyncClient) else client
        self._destinations = destinations
        self.policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        #: this process's lease name
        self.owner = owner or f"dispatcher-{secrets.token_hex(6)}"

    def now(self) -> datetime:
        return self._clock()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            assert self._make_client is not None
            self._client = self._make_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # events ------------------------------------------------------------------------------
    async def emit(self, draft: events.EventDraft) -> bool:
        """Write one event to the outbox in its own transaction; False: a duplicate."""
        async with self._engine.begin() as conn:
            return await OutboxRepository(conn).insert_event(draft, now=self._clock())

    async def scan_expiring_keys(self) -> int:
        """Write `key.expiring` for keys expiring within the window; how many were new."""
        window = self.policy.key_expiry_window_s
        if window <= 0:
            return 0
        now = self._clock()
        new, after_id = 0, None
        while True:
            async with self._engine.connect() as conn:
                found = await OutboxRepository(conn).keys_expiring(
                    now=now,
                    until=now + timedelta(seconds=window),
                    limit=_SCAN_BATCH,
                    after_id=after_id,
                )
            for key_id, account_id, name, expires_at in found:
                draft = events.key_expiring(
                    account_id=account_id, key_id=key_id, name=name, expires_at=expires_at
                )
                new += await self.emit(draft)
            if len(found) < _SCAN_BATCH:
                return new
            after_id = found[-1][0]

    async def prune(self) -> int:
        """Drop finished history older than the retention (see `OutboxRepository.prune`)."""
        before = self._clock() - timedelta(seconds=self.policy.retention_s)
        async with self._engine.begin() as conn:
            return await OutboxRepository(conn).prune(before=before)

    # deliveries --------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Fan out new events and send every due attempt once; how many attempts were made."""
        while True:
            async with self._engine.begin() as conn:
                handled = await WebhookRepository(conn).fan_out(
                    now=self._clock(), limit=_FAN_OUT_BATCH
                )
            if handled < _FAN_OUT_BATCH:
                break
        sent = 0
        while True:
            claimed = await self._claim()
            if not claimed:
                return sent
            await asyncio.gather(*(self._attempt(item) for item in claimed))
            sent += len(claimed)
            if len(claimed) < _CLAIM_BATCH:
                return sent

    async def send_now(self, delivery_id: int) -> bool:
        """Attempt one delivery at once if it is due and unclaimed (the admin test-send)."""
        claimed = await self._claim(only_id=delivery_id)
        for item in claimed:
            await self._attempt(item)
        return bool(claimed)

    async def _claim(self, only_id: int | None = None) -> list[ClaimedAttempt]:
        async with self._engine.begin() as conn:
            return await WebhookRepository(conn).claim(
                owner=self.owner,
                now=self._clock(),
                lease_s=self.policy.lease_s,
                limit=_CLAIM_BATCH,
                only_id=only_id,
            )

    async def _attempt(self, item: ClaimedAttempt) -> None:
        try:
            result = await self.send(item)
        except Exception as exc:  # a bug here must not kill the loop; the lease will expire
            logger.exception("webhooks: attempt of delivery %s crashed", item.delivery_id)
            result = AttemptResult(ok=False, error=f"internal error: {type(exc).__name__}")
        await self._record(item, result)

    async def send(self, item: ClaimedAttempt) -> AttemptResult:
        """One signed POST; never raises for what the network or the receiver does."""
        try:
            host, port = check_url_shape(item.url, self._destinations)
            await check_addresses(host, port, self._destinations)
        except DestinationRefused as exc:
            return AttemptResult(ok=False, error=f"refused: {exc}")
        except GatewayError as exc:  # the URL no longer passes the policy (it changed)
            return AttemptResult(ok=False, error=f"refused: {exc.message}")
        body = events.render_body(item.event_type, item.event_created_at, item.data)
        timestamp = int(self._clock().timestamp())
        headers = signing.headers(item.secret, msg_id=item.event_id, timestamp=timestamp, body=body)
        headers["user-agent"] = "image-gateway-webhooks/1"
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                async with self.client.stream(
                    "POST", item.url, content=body, headers=headers
                ) as response:
                    answer = await _read_limited(response)
        except TimeoutError:
            return AttemptResult(ok=False, error=f"timed out after {self.policy.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return AttemptResult(ok=False, error=f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS])
        status = response.status_code
        if 200 <= status < 300:
            return AttemptResult(ok=True, status_code=status)
        snippet = answer.decode("utf-8", "replace")[:_ERROR_CHARS]
        return AttemptResult(
            ok=False,
            status_code=status,
            error=f"HTTP {status}" + (f": {snippet}" if snippet else ""),
            retry_after_s=_retry_after(response.headers.get("retry-after")),
            give_up=status == 410,
        )

    async def _record(self, item: ClaimedAttempt, result: AttemptResult) -> None:
        now = self._clock()
        next_at: datetime | None = None
        if result.ok:
            state = "succeeded"
        elif result.give_up or item.attempt >= self.policy.max_attempts:
            state = "failed"
        else:
            state = "pending"
            delay = retry_delay(item.attempt, self.policy, self._rng)
            if result.retry_after_s is not None:
                delay = min(max(delay, result.retry_after_s), self.policy.max_backoff_s)
            next_at = now + timedelta(seconds=delay)
        async with self._engine.begin() as conn:
            recorded = await WebhookRepository(conn).finish_attempt(
                delivery_id=item.delivery_id,
                owner=self.owner,
                attempt=item.attempt,
                state=state,
                next_attempt_at=next_at,
                status_code=result.status_code,
                error=result.error,
                now=now,
            )
        if not recorded:
            logger.warning(
                "webhooks: delivery %s attempt %d outlived its lease; outcome not recorded",
                item.delivery_id,
                item.attempt,
            )
        elif state != "succeeded":
            logger.warning(
                "webhooks: delivery %s to %s attempt %d failed (%s)%s",
                item.delivery_id,
                item.endpoint_id,
                item.attempt,
                result.error,
                f"; retry at {next_at:%H:%M:%S}" if next_at else "; giving up",
            )

    async def run_forever(
        self, *, poll_interval_s: float, scan_interval_s: float, stop: asyncio.Event
    ) -> None:
        """The background loop of every replica, until `stop` is set (between passes)."""
        loop = asyncio.get_running_loop()
        next_scan = loop.time()
        # the first pass waits one interval: start-up (and readiness) comes first
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll_interval_s)
        while not stop.is_set():
            try:
                if loop.time() >= next_scan:
                    next_scan = loop.time() + scan_interval_s
                    await self.scan_expiring_keys()
                    await self.prune()
                await self.run_once()
            except Exception:  # the database is down, say: keep trying
                logger.exception("webhooks: dispatch pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_interval_s)


async def _read_limited(response: httpx.Response) -> bytes:
    """At most `MAX_RESPONSE_BYTES` of the answer: a receiver cannot make us buffer more."""
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk
        if len(received) >= MAX_RESPONSE_BYTES:
            break
    return bytes(received[:MAX_RESPONSE_BYTES])


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


@contextlib.asynccontextmanager
async def running(
    dispatcher: Dispatcher, *, poll_interval_s: float, scan_interval_s: float
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the dispatcher's loop in the background for the duration of the block.

    At the end the loop is asked to stop and its pass in progress may finish (a query torn
    by cancellation is worse than a short wait); after `_STOP_GRACE_S` it is cancelled: an
    attempt cut short keeps its lease and is sent again by the next claimer.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(
        dispatcher.run_forever(
            poll_interval_s=poll_interval_s, scan_interval_s=scan_interval_s, stop=stop
        ),
        name="webhook-dispatcher",
    )
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=_STOP_GRACE_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
