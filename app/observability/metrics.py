"""Every Prometheus metric the gateway exports (SPEC 8), and the `/metrics` text.

    image_gateway_requests_total{endpoint,model,status,code}   one per answered request
    image_gateway_request_duration_seconds{endpoint}           gateway-added time: the whole
                                                               request less upstream waiting
    image_gateway_upstream_duration_seconds{provider}          one provider attempt
    image_gateway_upstream_errors_total{provider,code}         failed provider attempts
    image_gateway_images_total{model}, image_gateway_cost_usd_total{model}   settled
    image_gateway_in_flight{endpoint}, image_gateway_streams_in_flight{endpoint}
    image_gateway_ledger_operations_total{op}                  hold, settle, refund, sweep
    image_gateway_idempotency_replays_total                    stored answers replayed
    image_gateway_rate_limit_refusals_total{limit}             rpm, concurrency
    image_gateway_pool_size|in_use|waiting{pool}, image_gateway_pool_waits_total{pool}
    image_gateway_pool_wait_seconds_total{pool}                time callers spent queued
    image_gateway_database_errors_total                        the database failed a request
    image_gateway_event_loop_lag_seconds                       sampled scheduling delay

Labels stay bounded: `endpoint` is a fixed set (`middleware.endpoint_of`), `model` is a
catalog id (recorded only once the catalog resolved it), `code` is a gateway error code.

Worker processes: with `PROMETHEUS_MULTIPROC_DIR` set (by `serve --workers N`, see
`app.observability.multiproc`), prometheus-client keeps every value in per-process files in
that directory and `/metrics` merges them, so any worker answers for all of them. Counters and
histograms add up; gauges are `livesum` (the sum over live workers). The variable must be set
before prometheus-client is imported, which is why the supervisor sets it, not the app.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final


def _ensure_multiproc_dir() -> None:
    """prometheus-client reads PROMETHEUS_MULTIPROC_DIR itself, at import, and the first metric
    defined below would fail on a missing directory, crashing every command (the CLI too)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)


_ensure_multiproc_dir()

import prometheus_client  # noqa: E402  (after the directory exists)
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from app.observability.facts import RequestFacts  # noqa: E402

# `*_created` series double the output and no dashboard reads them
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX: Final = "image_gateway"
MICROS_PER_USD: Final = 1_000_000

_GATEWAY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UPSTREAM_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter(
    f"{PREFIX}_requests",
    "Requests answered, by endpoint, model, HTTP status and error code ('' for success).",
    ["endpoint", "model", "status", "code"],
)
REQUEST_DURATION = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Gateway-added time: the whole request less the time spent waiting on providers.",
    ["endpoint"],
    buckets=_GATEWAY_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    f"{PREFIX}_upstream_duration_seconds",
    "One provider attempt, from the call to its result or failure (polling and downloads "
    "included).",
    ["provider"],
    buckets=_UPSTREAM_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    f"{PREFIX}_upstream_errors",
    "Failed provider attempts, by provider and gateway error code.",
    ["provider", "code"],
)
ROUTE_ATTEMPTS = Counter(
    f"{PREFIX}_route_attempts",
    "The router's choices, one per route tried or skipped: by model, provider and outcome "
    "('ok', the failure's error code, or SKIPPED_COOLDOWN for a provider its breaker holds out).",
    ["model", "provider", "outcome"],
)
ROUTE_FALLBACKS = Counter(
    f"{PREFIX}_route_fallbacks",
    "Requests answered by another provider than the first one their route policy chose.",
    ["model"],
)
IMAGES = Counter(f"{PREFIX}_images", "Images delivered and charged, by model.", ["model"])
COST_USD = Counter(f"{PREFIX}_cost_usd", "Money charged for settled requests (USD).", ["model"])
IN_FLIGHT = Gauge(
    f"{PREFIX}_in_flight",
    "Requests being answered now.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
STREAMS_IN_FLIGHT = Gauge(
    f"{PREFIX}_streams_in_flight",
    "Server-sent event streams open now.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
LEDGER_OPERATIONS = Counter(
    f"{PREFIX}_ledger_operations",
    "Ledger movements: hold (a price taken), settle (a hold finished by its request), refund "
    "(a settle or sweep that gave money back), sweep (an orphaned hold refunded).",
    ["op"],
)
IDEMPOTENCY_REPLAYS = Counter(
    f"{PREFIX}_idempotency_replays", "Stored responses replayed for a repeated Idempotency-Key."
)
RATE_LIMIT_REFUSALS = Counter(
    f"{PREFIX}_rate_limit_refusals",
    "Requests refused by a key's rate limit (429), by the limit hit.",
    ["limit"],
)
POOL_SIZE = Gauge(
    f"{PREFIX}_pool_size",
    "Connections in the pool (summed over workers).",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    f"{PREFIX}_pool_in_use",
    "Connections in use (sampled).",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    f"{PREFIX}_pool_waiting",
    "Callers waiting for a connection (sampled); > 0 for long: raise the pool size.",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_WAITS = Counter(
    f"{PREFIX}_pool_waits",
    "Callers that found the pool full and had to wait.",
    ["pool"],
)
POOL_WAIT_SECONDS = Counter(
    f"{PREFIX}_pool_wait_seconds",
    "Seconds callers spent queued for a connection, all together (exact, not sampled): "
    "its rate is the average queue length, divided by the rate of waits the average wait.",
    ["pool"],
)
DATABASE_ERRORS = Counter(
    f"{PREFIX}_database_errors",
    "Requests or ledger statements that failed because the database was unavailable.",
)
EVENT_LOOP_LAG = Histogram(
    f"{PREFIX}_event_loop_lag_seconds",
    "How late the event loop ran a timer (sampled): CPU-bound work on the loop shows here.",
    buckets=_LAG_BUCKETS,
)


class _Children:
    """A metric's labelled children, cached: `.labels()` validates and takes a lock on every
    call, a few microseconds the per-request path need not pay (label sets are bounded)."""

    def __init__(self, metric: Counter | Gauge | Histogram) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


requests_child = _Children(REQUESTS)
duration_child = _Children(REQUEST_DURATION)
in_flight_child = _Children(IN_FLIGHT)
streams_child = _Children(STREAMS_IN_FLIGHT)

_SETTLE = LEDGER_OPERATIONS.labels("settle")
_REFUND = LEDGER_OPERATIONS.labels("refund")
_HOLD = LEDGER_OPERATIONS.labels("hold")
_SWEEP = LEDGER_OPERATIONS.labels("sweep")


def record_request(facts: RequestFacts, elapsed_s: float) -> None:
    status = str(facts.status or 0)
    requests_child(facts.endpoint, facts.model or "", status, facts.code or "").inc()
    duration_child(facts.endpoint).observe(max(0.0, elapsed_s - facts.upstream_s))


def record_hold() -> None:
    _HOLD.inc()


def record_settle(*, model: str, cost_micros: int, images: int, refund_micros: int) -> None:
    _SETTLE.inc()
    if refund_micros > 0:
        _REFUND.inc()
    if images > 0:
        IMAGES.labels(model).inc(images)
    if cost_micros > 0:
        COST_USD.labels(model).inc(cost_micros / MICROS_PER_USD)


def record_sweep(*, refund_micros: int) -> None:
    _SWEEP.inc()
    if refund_micros > 0:
        _REFUND.inc()


def record_upstream(provider: str, seconds: float, error_code: str | None) -> None:
    UPSTREAM_DURATION.labels(provider).observe(seconds)
    if error_code is not None:
        UPSTREAM_ERRORS.labels(provider, error_code).inc()


def record_routes(model: str, attempts: list[tuple[str, str]]) -> None:
    """One request's route trace: every attempt, and whether another provider answered."""
    for provider, outcome in attempts:
        ROUTE_ATTEMPTS.labels(model, provider, outcome).inc()
    if attempts and attempts[-1][1] == "ok" and attempts[-1][0] != attempts[0][0]:
        ROUTE_FALLBACKS.labels(model).inc()


def exposition(multiproc_dir: Path | None) -> tuple[bytes, str]:
    """The `/metrics` body and content type: this process's registry, or every worker's."""
    if multiproc_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
