"""The events the gateway announces, and the JSON body each delivery carries.

    balance.below_threshold  a debit (a hold, a negative adjustment) took an account's balance
                             from at/above its `low_balance_threshold` to below it; once per
                             crossing, and at most once between two credits to the account
    budget.reached           a key's budget window was used up exactly, or refused a request;
                             once per key and window
    key.expiring             a key expires within `GATEWAY_WEBHOOK_KEY_EXPIRY_WINDOW_S`; once
                             per key and expiry instant (a periodic scan finds them)
    provider.cooled_down     the circuit breaker took a provider out after failures
    provider.recovered       its half-open probe succeeded
    webhook.test             sent by the admin API's test-send, to one endpoint only

The body follows the Standard Webhooks payload shape:
`{"type": ..., "timestamp": <event time, RFC 3339>, "data": {...}}`. Outbox rows store `data`
with amounts in integer micro-dollars (`*_micros`, written by SQL in the money statements);
`render_body` turns each into the USD number the admin API uses (`balance_micros` ->
`balance`), so receivers see one money format everywhere.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from app.money import micros_to_json

BALANCE_BELOW_THRESHOLD: Final = "balance.below_threshold"
BUDGET_REACHED: Final = "budget.reached"
KEY_EXPIRING: Final = "key.expiring"
PROVIDER_COOLED_DOWN: Final = "provider.cooled_down"
PROVIDER_RECOVERED: Final = "provider.recovered"
TEST: Final = "webhook.test"

#: what an endpoint may subscribe to (`webhook.test` is always delivered to its target)
EVENT_TYPES: Final[tuple[str, ...]] = (
    BALANCE_BELOW_THRESHOLD,
    BUDGET_REACHED,
    KEY_EXPIRING,
    PROVIDER_COOLED_DOWN,
    PROVIDER_RECOVERED,
)
_MICROS_SUFFIX = "_micros"


def new_event_id() -> str:
    """`msg_` + 24 hex characters: the `webhook-id` (no `.`, as the signature scheme needs)."""
    return "msg_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event about to be written to the outbox."""

    event_type: str
    data: dict[str, Any]
    account_id: str | None = None
    #: unique across the outbox: a second draft with the same key is dropped (once-only events)
    dedupe_key: str | None = None
    id: str = field(default_factory=new_event_id)


def balance_dedupe_key(account_id: str, threshold_micros: int, epoch: int) -> str:
    """`epoch`: the id of the account's latest credit ledger row (0: none), so a top-up
    re-arms the alert; a changed threshold is a new key too."""
    return f"{BALANCE_BELOW_THRESHOLD}:{account_id}:{threshold_micros}:{epoch}"


def budget_reached(
    *, account_id: str, key_id: str, period: str, window: str, amount_micros: int, reason: str
) -> EventDraft:
    return EventDraft(
        BUDGET_REACHED,
        {
            "account_id": account_id,
            "key_id": key_id,
            "period": period,
            "window": window,
            "amount_micros": amount_micros,
            "reason": reason,
        },
        account_id=account_id,
        dedupe_key=f"{BUDGET_REACHED}:{key_id}:{window}",
    )


def key_expiring(*, account_id: str, key_id: str, name: str, expires_at: datetime) -> EventDraft:
    instant = expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return EventDraft(
        KEY_EXPIRING,
        {"account_id": account_id, "key_id": key_id, "name": name, "expires_at": instant},
        account_id=account_id,
        dedupe_key=f"{KEY_EXPIRING}:{key_id}:{instant}",
    )


def provider_transition(provider: str, transition: str, *, since: str) -> EventDraft:
    """`since`: an instant identifying this cool-down (shared by every replica that sees it)."""
    event_type = PROVIDER_COOLED_DOWN if transition == "cooled_down" else PROVIDER_RECOVERED
    return EventDraft(
        event_type,
        {"provider": provider},
        dedupe_key=f"{event_type}:{provider}:{since}",
    )


def render_data(data: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for name, value in data.items():
        if name.endswith(_MICROS_SUFFIX) and isinstance(value, int):
            rendered[name.removesuffix(_MICROS_SUFFIX)] = micros_to_json(value)
        else:
            rendered[name] = value
    return rendered


def render_body(event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    timestamp = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": event_type, "timestamp": timestamp, "data": render_data(data)})
