"""Provider health: a circuit breaker per provider, with half-open probes.

    closed ──(failure_threshold consecutive retryable failures)──▶ open (cooldown_s)
    open ──(cooldown over)──▶ half-open: ONE caller may probe; others still skip it
    half-open ──probe succeeds──▶ closed          half-open ──probe fails──▶ open again

Only retryable upstream failures count (5xx, 429, timeouts, transport errors): a content
refusal says nothing about the provider's health. The state here is in-process; every
transition is reported to `on_transition` (webhooks, logs, metrics hook there).

Time comes from the injected `clock` (monotonic seconds), so tests never sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
Transition = Callable[[str, Literal["cooled_down", "recovered"]], None]


@dataclass(slots=True)
class _Health:
    failures: int = 0
    opened_until: float | None = None
    probing: bool = False


class CircuitBreaker:
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

    def state(self, provider: str) -> State:
        health = self._health.get(provider)
        if health is None or health.opened_until is None:
            return "closed"
        return "open" if self._clock() < health.opened_until else "half_open"

    def try_acquire(self, provider: str) -> bool:
        """May a call go to `provider` now? In half-open, only the first caller (the probe)."""
        state = self.state(provider)
        if state == "closed":
            return True
        if state == "open":
            return False
        health = self._health[provider]
        if health.probing:
            return False
        health.probing = True
        return True

    def record_success(self, provider: str) -> None:
        health = self._health.get(provider)
        if health is None:
            return
        was_open = health.opened_until is not None
        self._health.pop(provider)
        if was_open:
            logger.warning("provider %s recovered: its probe succeeded", provider)
            self._notify(provider, "recovered")

    def record_failure(self, provider: str) -> None:
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
                self._notify(provider, "cooled_down")

    def release_probe(self, provider: str) -> None:
        """A probe that ended without a verdict (cancelled, non-retryable refusal)."""
        health = self._health.get(provider)
        if health is not None:
            health.probing = False

    def _notify(self, provider: str, event: Literal["cooled_down", "recovered"]) -> None:
        if self._on_transition is not None:
            try:
                self._on_transition(provider, event)
            except Exception:  # a notification must never fail a request
                logger.exception("breaker transition hook failed")
