"""Admin API request and response bodies.

Money in JSON is a decimal number of USD. Input accepts a JSON number or a string
(`"0.25"`, `25`, `25.5`), parsed exactly by `app.money.parse_usd`; anything finer than one
micro-dollar, or beyond `MAX_USD` (1e9 USD) either way, is a 400 naming the field rather than
being rounded or overflowing a column. JSON numbers in admin bodies are decoded
as `Decimal`, never as floats (`app.admin.decimal_json`), so `0.1` is exactly 0.1. The OpenAPI
document describes such a field as "a number or a decimal string" (`UsdAmount`). Output uses
`micros_to_json`, whose float prints as the exact decimal.

Request bodies forbid unknown fields so a typo (`"balanse"`) is a 400, not a silent no-op.
Range checks that the services do anyway (key limits, expiry, non-zero credits) are left to
them, so the admin API and the CLI give the same answers.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from app.admin.reports import GroupBy, RequestRecord, UsageRow, usage_total
from app.db.storable import has_nul
from app.keys.repository import KeyRecord
from app.ledger.budgets import Budget, BudgetUsage
from app.ledger.records import AccountRecord, LedgerRow
from app.money import MAX_USD, MoneyError, micros_to_json, parse_usd

T = TypeVar("T")


def _usd_to_micros(value: Any) -> int:
    # PydanticCustomError: the message reaches the client without pydantic's "Value error, "
    if not isinstance(value, int | float | str | Decimal) or isinstance(value, bool):
        raise PydanticCustomError(
            "usd_amount", "must be a decimal number of USD, as a number or a string"
        )
    try:
        return parse_usd(value)
    except MoneyError as exc:
        raise PydanticCustomError("usd_amount", str(exc)) from exc


def _no_nul(value: str) -> str:
    if has_nul(value):
        raise PydanticCustomError("nul_character", "must not contain a NUL character")
    return value


#: how the OpenAPI document shows a USD amount: what a client may send, not our micro-dollars
USD_AMOUNT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number"},
        {"type": "string", "pattern": r"^[+-]?(\d+(\.\d*)?|\.\d+)$"},
    ],
    "title": "UsdAmount",
    "description": (
        "USD as a JSON number or a decimal string, at most 6 decimal places (one "
        f"micro-dollar), at most {MAX_USD} either way"
    ),
    "examples": ["0.25", 25, 25.5],
}

#: a USD amount in the body, as integer micro-dollars once validated
Micros = Annotated[int, BeforeValidator(_usd_to_micros), WithJsonSchema(USD_AMOUNT_SCHEMA)]
#: text that goes into a column: no NUL (Postgres refuses it)
Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_nul),
]


class AdminRequest(BaseModel):
    """An admin request body: an unknown field is a 400 (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")


class AccountCreate(AdminRequest):
    name: Name
    balance: Micros = Field(default=0, ge=0)


class AccountUpdate(AdminRequest):
    name: Name | None = None
    status: Literal["active", "suspended"] | None = None
    #: IANA zone of the account's calendar (day/month key budgets); validated by the ledger
    timezone: (
        Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
        | None
    ) = None
    #: USD: `balance.below_threshold` webhook event when a debit crosses it (null: off)
    low_balance_threshold: Micros | None = None
    #: the account's price list (`app.catalog.account_pricing`); null: catalog prices
    pricing: dict[str, Any] | None = None


class CreditCreate(AdminRequest):
    amount: Micros
    note: Annotated[str, StringConstraints(max_length=1000), AfterValidator(_no_nul)] | None = None


class BudgetIn(AdminRequest):
    """`{"period": "day" | "month" | "total", "amount": USD}` (SPEC 9)."""

    period: Literal["day", "month", "total"]
    amount: Micros = Field(gt=0)

    def to_budget(self) -> Budget:
        return Budget(self.period, self.amount)


class KeyCreate(AdminRequest):
    name: Text
    models: list[Text] | None = None
    rpm: int | None = None
    max_concurrency: int | None = None
    expires_at: AwareDatetime | None = None
    budgets: list[BudgetIn] | None = None


class KeyUpdate(AdminRequest):
    """PATCH a key's spend limits: the list replaces them all (`[]` removes every budget)."""

    budgets: list[BudgetIn]


class BudgetOut(BaseModel):
    period: str
    amount: float
    spent: float
    remaining: float
    #: the calendar window `spent` is for: "day:2026-12-02", "month:2026-12" or "total"
    window: str

    @classmethod
    def of(cls, usage: BudgetUsage) -> Self:
        return cls(
            period=usage.period,
            amount=micros_to_json(usage.amount_micros),
            spent=micros_to_json(usage.spent_micros),
            remaining=micros_to_json(usage.remaining_micros),
            window=usage.window,
        )


# responses ---------------------------------------------------------------------------
class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    next_cursor: str | None


class AccountOut(BaseModel):
    object: Literal["account"] = "account"
    id: str
    name: str
    balance: float
    status: str
    timezone: str
    low_balance_threshold: float | None = None
    pricing: dict[str, Any] | None = None
    created_at: datetime

    @classmethod
    def of(cls, record: AccountRecord) -> Self:
        threshold = record.low_balance_threshold_micros
        return cls(
            id=record.id,
            name=record.name,
            balance=micros_to_json(record.balance_micros),
            status=record.status,
            timezone=record.timezone,
            low_balance_threshold=None if threshold is None else micros_to_json(threshold),
            pricing=_pricing_out(record.pricing),
            created_at=record.created_at,
        )


def _pricing_out(stored: str | None) -> dict[str, Any] | None:
    """Stored account pricing as JSON: multipliers stay exact strings, prices are USD numbers
    like every amount of this API."""
    if not stored:
        return None
    pricing: dict[str, Any] = json.loads(stored)
    for entry in pricing.get("models", {}).values():
        if "per_image" in entry:
            entry["per_image"] = micros_to_json(parse_usd(entry["per_image"]))
    return pricing


class LedgerEntryOut(BaseModel):
    object: Literal["ledger_entry"] = "ledger_entry"
    id: int
    account_id: str
    key_id: str | None
    request_id: str | None
    kind: str
    amount: float
    balance_after: float
    model: str | None
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: LedgerRow) -> Self:
        return cls(
            id=row.id,
            account_id=row.account_id,
            key_id=row.key_id,
            request_id=row.request_id,
            kind=row.kind,
            amount=micros_to_json(row.amount_micros),
            balance_after=micros_to_json(row.balance_after_micros),
            model=row.model,
            note=row.note,
            created_at=row.created_at,
        )


class CreditOut(BaseModel):
    """A credit's result: the account's new balance and the ledger row that made it."""

    object: Literal["credit"] = "credit"
    account_id: str
    balance: float
    entry: LedgerEntryOut

    @classmethod
    def of(cls, row: LedgerRow) -> Self:
        return cls(
            account_id=row.account_id,
            balance=micros_to_json(row.balance_after_micros),
            entry=LedgerEntryOut.of(row),
        )


class KeyOut(BaseModel):
    """A key as listed: never the secret, only its display prefix."""

    object: Literal["api_key"] = "api_key"
    id: str
    account_id: str
    name: str
    prefix: str
    models: list[str] | None
    rpm: int | None
    max_concurrency: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    #: each budget with its current window's spend; only on single-key answers (not lists)
    budgets: list[BudgetOut] | None = None

    @classmethod
    def of(cls, record: KeyRecord, budgets: list[BudgetUsage] | None = None) -> Self:
        return cls(
            id=record.id,
            account_id=record.account_id,
            name=record.name,
            prefix=record.prefix,
            models=None if record.models is None else list(record.models),
            rpm=record.rpm,
            max_concurrency=record.max_concurrency,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            created_at=record.created_at,
            budgets=None if budgets is None else [BudgetOut.of(usage) for usage in budgets],
        )


class KeyWithSecret(KeyOut):
    """Create and rotate: the one response that carries the secret."""

    key: str

    @classmethod
    def with_secret(
        cls, record: KeyRecord, secret: str, budgets: list[BudgetUsage] | None = None
    ) -> Self:
        return cls(**KeyOut.of(record, budgets).model_dump(), key=secret)


class KeyDeleted(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    deleted: Literal[True] = True


class RequestOut(BaseModel):
    object: Literal["request"] = "request"
    id: str
    client_request_id: str | None
    account_id: str | None
    key_id: str | None
    model: str | None
    endpoint: str
    #: billing state: pending | settled | swept | unbilled
    state: str
    #: the HTTP status answered (None while pending)
    status: int | None
    error_code: str | None
    images: int
    held: float
    cost: float
    latency_ms: int | None
    user: str | None
    created_at: datetime
    finished_at: datetime | None
    #: the provider attempts in order ("openai:UPSTREAM_ERROR>fal:ok"; the last `ok` answered)
    route: str | None = None

    @classmethod
    def of(cls, record: RequestRecord) -> Self:
        return cls(
            id=record.id,
            client_request_id=record.client_request_id,
            account_id=record.account_id,
            key_id=record.key_id,
            model=record.model,
            endpoint=record.endpoint,
            state=record.state,
            status=record.status_code,
            error_code=record.error_code,
            images=record.images,
            held=micros_to_json(record.held_micros),
            cost=micros_to_json(record.cost_micros),
            latency_ms=record.latency_ms,
            user=record.user,
            created_at=record.created_at,
            finished_at=record.finished_at,
            route=record.route,
        )


class UsageRowOut(BaseModel):
    #: the model id, key id or UTC day ("YYYY-MM-DD"); absent without group_by
    group: str | None
    requests: int
    images: int
    cost: float

    @classmethod
    def of(cls, row: UsageRow) -> Self:
        return cls(
            group=row.group,
            requests=row.requests,
            images=row.images,
            cost=micros_to_json(row.cost_micros),
        )


class UsageOut(BaseModel):
    object: Literal["usage"] = "usage"
    group_by: GroupBy | None
    from_: datetime | None = Field(serialization_alias="from")
    to: datetime | None
    data: list[UsageRowOut]
    total: UsageRowOut

    @classmethod
    def build(
        cls,
        rows: list[UsageRow],
        *,
        group_by: GroupBy | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Self:
        """`total` always; `data` one row per group, and empty without `group_by`."""
        return cls(
            group_by=group_by,
            from_=since,
            to=until,
            data=[UsageRowOut.of(row) for row in rows] if group_by else [],
            total=UsageRowOut.of(usage_total(rows)),
        )
