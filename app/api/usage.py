"""`GET /v1/usage`: what the calling key may still spend (self-service, SPEC 9).

Only the caller's own key: its budgets with the current window's `spent` and `remaining`,
the account balance it draws on, and `spendable`, the smaller of the balance and every
budget's remaining amount (what the next requests can be charged at most). No other key's
data is ever shown; operators see every key through `GET /admin/v1/keys/{id}`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from app.admin.schemas import BudgetOut
from app.api.deps import CurrentKey, GatewayDep
from app.api.openapi import error_responses
from app.money import micros_to_json

router = APIRouter(prefix="/v1", tags=["usage"], responses=error_responses(401, 403, 429, 503))


class KeyUsageOut(BaseModel):
    object: Literal["key_usage"] = "key_usage"
    key_id: str
    name: str
    balance: float
    spendable: float
    budgets: list[BudgetOut]


@router.get("/usage")
async def key_usage(key: CurrentKey, gateway: GatewayDep) -> KeyUsageOut:
    account = await gateway.ledger.get_account(key.account_id)
    budgets = await gateway.keys.budget_usage(key.key_id)
    spendable = min(
        [account.balance_micros, *(usage.remaining_micros for usage in budgets)], default=0
    )
    return KeyUsageOut(
        key_id=key.key_id,
        name=key.name,
        balance=micros_to_json(account.balance_micros),
        spendable=micros_to_json(spendable),
        budgets=[BudgetOut.of(usage) for usage in budgets],
    )
