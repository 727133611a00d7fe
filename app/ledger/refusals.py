"""Why the ledger refused something, as the client-facing errors of `app.errors`.

Amounts in messages are exact decimal USD from `app.money` (`$0.134`, `$10`), never floats.
"""

from __future__ import annotations

from app.errors import (
    AuthenticationError,
    GatewayError,
    InsufficientBalance,
    NotFound,
    PermissionDenied,
)
from app.ledger.repository import HoldFacts, HoldRequest
from app.money import micros_to_decimal


def usd(micros: int) -> str:
    """`$`-less exact decimal text of an amount: 134000 -> "0.134", 10_000_000 -> "10"."""
    return f"{micros_to_decimal(micros):f}"


def insufficient_balance_message(balance_micros: int, price_micros: int) -> str:
    return f"balance ${usd(balance_micros)} is below this request's price ${usd(price_micros)}"


def account_not_found(account_id: str) -> NotFound:
    return NotFound(f"No account with id {account_id!r}", code="ACCOUNT_NOT_FOUND")


def hold_refusal(facts: HoldFacts, hold: HoldRequest) -> GatewayError | None:
    """Why a hold matched no row, in the order a client can act on; None if it now would pass."""
    refusal = key_refusal(facts, account_id=hold.account_id, key_hash=hold.key_hash)
    if refusal is not None:
        return refusal
    if facts.balance_micros < hold.amount_micros:
        return InsufficientBalance(
            insufficient_balance_message(facts.balance_micros, hold.amount_micros)
        )
    return None


def key_refusal(facts: HoldFacts, *, account_id: str, key_hash: str | None) -> GatewayError | None:
    """Why this key may not act for `account_id` now (the hold's checks short of the balance)."""
    if not facts.key_exists or facts.key_account_id != account_id:
        return AuthenticationError("Incorrect API key provided.", code="INVALID_API_KEY")
    if key_hash is not None and facts.key_hash != key_hash:
        return AuthenticationError(
            "This API key's secret was rotated; use the new secret.", code="INVALID_API_KEY"
        )
    if facts.key_revoked:
        return PermissionDenied("This API key has been revoked.", code="KEY_REVOKED")
    if facts.key_expired:
        return PermissionDenied("This API key has expired.", code="KEY_EXPIRED")
    if facts.account_status is None:
        return account_not_found(account_id)
    if facts.account_status != "active":
        return PermissionDenied("This account is suspended.", code="ACCOUNT_SUSPENDED")
    return None
