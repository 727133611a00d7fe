"""Provider health: a circuit breaker per provider, with half-open probes.

    closed ──(failure_threshold consecutive retryable failures)──▶ open (cooldown_s)
    open ──(cooldown over)──▶ half-open: ONE caller may probe; others still skip it
    half-open ──probe succeeds──▶ closed          half-open ──probe fails──▶ open again

Only retryable upstream failures count (5xx, 429, timeouts, transport errors): a content
refusal says nothing about the provider's health. `Breaker` is the contract the `Router`
uses; `CircuitBreaker` keeps the state in this process, `RedisCircuitBreaker`
(`app.images.shared_breaker`) shares it between replicas, so they agree on a cool-down and
let one probe through between them. `make_breaker` picks one from the settings.

Each transition to cooled-down or recovered is reported once to `on_transition(provider,
event, since)`, where `since` names the cool-down (the same for every replica that sees it),
so the `provider.cooled_down` / `provider.recovered` webhooks are written once (their dedupe
key carries it). A failing hook is logged, never raised into the request.

Time comes from the injected `clock` (seconds), so tests never sleep.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
Event = Literal["cooled_down", "recovered"]
Transition = Callable[[str, Event, str], Awaitable[None]]


class Breaker(Protocol):
    async def state(self, provider: str) -> State: ...

    async def try_acquire(self, provider: str) -> bool:
        """May a call go to `provider` now? In half-open, only the first caller (the probe)."""
        ...

    async def record_success(self, provider: str) -> None: ...

    async def record_failure(self, provider: str) -> None: ...

    async def release_probe(self, provider: str) -> None:
        """A probe that ended without a verdict (cancelled, non-retryable refusal)."""
        ...

    async def aclose(self) -> None: ...


async def notify(hook: Transition | None, provider: str, event: Event, since: str) -> None:
    if event == "recovered":
        logger.warning("provider %s recovered: its probe succeeded", provider)
    if hook is None:
        return
    try:
        await hook(provider, event, since)
    except Exception:  # a notification must never fail a request
        logger.exception("breaker transition hook failed")


@dataclass(slots=True)
class _Health:
    failures: int = 0
    opened_until: float | None = None
    probing: bool = False
    since: str = ""


class CircuitBreaker:
    """The in-process breaker: each replica judges its providers on its own."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._on_transition = on_transition
        self._health: dict[str, _Health] = {}

    async def state(self, provider: str) -> State:
        health = self._health.get(provider)
        if health is None or health.opened_until is None:
            return "closed"
        return "open" if self._clock() < health.opened_until else "half_open"

    async def try_acquire(self, provider: str) -> bool:
        state = await self.state(provider)
        if state == "closed":
            return True
        if state == "open":
            return False
        health = self._health[provider]
        if health.probing:
            return False
        health.probing = True
        return True

    async def record_success(self, provider: str) -> None:
        health = self._health.pop(provider, None)
        if health is not None and health.opened_until is not None:
            await notify(self._on_transition, provider, "recovered", health.since)

    async def record_failure(self, provider: str) -> None:
        health = self._health.setdefault(provider, _Health())
        health.failures += 1
        reopen = health.probing or (
            health.opened_until is None and health.failures >= self._threshold
        )
        health.probing = False
        if reopen:
            first = health.opened_until is None
            health.opened_until = self._clock() + self._cooldown_s
            logger.warning(
                "provider %s cooled down for %g s after %d failure(s)",
                provider,
                self._cooldown_s,
                health.failures,
            )
            if first:
                # this process's own cool-down: unique, since no other replica shares it
                health.since = f"{time.time_ns()}-{secrets.token_hex(4)}"
                await notify(self._on_transition, provider, "cooled_down", health.since)

    async def release_probe(self, provider: str) -> None:
        health = self._health.get(provider)
        if health is not None:
            health.probing = False

    async def aclose(self) -> None:
        return None


def make_breaker(
    redis_url: str | None,
    *,
    failure_threshold: int,
    cooldown_s: float,
    on_transition: Transition | None = None,
) -> Breaker:
    """Shared through Redis when `redis_url` is set, else in this process."""
    if redis_url:
        from app.images.shared_breaker import RedisCircuitBreaker

        return RedisCircuitBreaker.from_url(
            redis_url,
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            on_transition=on_transition,
        )
    return CircuitBreaker(
        failure_threshold=failure_threshold, cooldown_s=cooldown_s, on_transition=on_transition
    )
