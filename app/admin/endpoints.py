"""The admin API (`/admin/v1`, SPEC section 5): accounts, credits, ledger, keys, usage, requests.

Routes are thin: parse, call a service, shape the answer. Every route is behind
`require_admin` (404 when `GATEWAY_ADMIN_TOKEN` is unset, 401 on a wrong token).

Decisions:
- `DELETE /keys/{id}` answers 200 `{"object": "api_key", "id": ..., "deleted": true}` (the
  OpenAI delete shape) and removes the row; ledger and request-log rows keep the key's id.
- Revoke, rotate and delete invalidate this process's authentication cache at once; other
  processes follow within `GATEWAY_KEY_CACHE_TTL_S`. Changing an account's status clears the
  whole cache (the account's keys are not known by hash here).
- Rotating a revoked key is 409 `KEY_REVOKED`: make a new key instead.
- A credit answers 200 with the new balance and the ledger row; `Idempotency-Key` replays
  carry `Idempotent-Replayed: true`.
- `GET /usage`: `from` inclusive, `to` exclusive; a time without a zone is UTC. `total` is
  always there; `data` holds one row per group with `group_by`, and is empty without it.
- `GET /requests`: `status` filters the HTTP status answered, `state` the billing state.
- `PATCH /accounts/{id}` also sets `low_balance_threshold` (USD; the `balance.below_threshold`
  webhook) and `pricing` (`app.catalog.account_pricing`); `null` clears either. A pricing
  change clears this process's key cache (keys carry their account's prices); other
  processes follow within `GATEWAY_KEY_CACHE_TTL_S`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from app.admin.catalog import router as catalog_router
from app.admin.decimal_json import DecimalJSONRoute
from app.admin.deps import (
    DEFAULT_PAGE_SIZE,
    AuthenticatorDep,
    Cursor,
    IdempotencyDep,
    KeysDep,
    LedgerDep,
    Limit,
    ReportsDep,
    SettingsDep,
    reject_unknown_query,
    reject_unstorable_parameters,
    require_admin,
)
from app.admin.reports import GroupBy, RequestFilter
from app.admin.schemas import (
    AccountCreate,
    AccountOut,
    AccountUpdate,
    CreditCreate,
    CreditOut,
    KeyCreate,
    KeyDeleted,
    KeyOut,
    KeyUpdate,
    KeyWithSecret,
    LedgerEntryOut,
    Page,
    RequestOut,
    UsageOut,
)
from app.admin.service import CreditRequest, CreditService, create_key_from
from app.api.openapi import error_responses
from app.catalog.account_pricing import parse_pricing
from app.db.storable import utc_instant
from app.errors import InvalidParameter

router = APIRouter(
    prefix="/admin/v1",
    tags=["admin"],
    dependencies=[
        Depends(require_admin),
        Depends(reject_unknown_query),
        Depends(reject_unstorable_parameters),
    ],
    responses=error_responses(400, 401, 404, 409, 429, 503),
    route_class=DecimalJSONRoute,
)

RequestState = Literal["pending", "settled", "swept", "unbilled"]


# accounts ----------------------------------------------------------------------------
@router.post("/accounts", status_code=201)
async def create_account(body: AccountCreate, ledger: LedgerDep) -> AccountOut:
    return AccountOut.of(await ledger.create_account(name=body.name, balance_micros=body.balance))


@router.get("/accounts")
async def list_accounts(
    reports: ReportsDep,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
    status: Literal["active", "suspended"] | None = None,
    q: Annotated[str | None, Query(description="exact id, or part of the name")] = None,
) -> Page[AccountOut]:
    records, next_cursor = await reports.list_accounts(
        limit=limit, cursor=cursor, status=status, search=q
    )
    return Page(data=[AccountOut.of(record) for record in records], next_cursor=next_cursor)


@router.get("/accounts/{account_id}")
async def get_account(account_id: str, ledger: LedgerDep) -> AccountOut:
    return AccountOut.of(await ledger.get_account(account_id))


@router.patch("/accounts/{account_id}")
async def update_account(
    account_id: str,
    body: AccountUpdate,
    request: Request,
    ledger: LedgerDep,
    authenticator: AuthenticatorDep,
) -> AccountOut:
    edits: dict[str, Any] = {}
    if "low_balance_threshold" in body.model_fields_set:
        edits["low_balance_threshold_micros"] = body.low_balance_threshold
    if "pricing" in body.model_fields_set:
        edits["pricing"] = _checked_pricing(body.pricing, request)
    record = await ledger.update_account(
        account_id, name=body.name, status=body.status, timezone=body.timezone, **edits
    )
    if body.status is not None or "pricing" in edits:
        authenticator.invalidate_all()
    return AccountOut.of(record)


@router.post("/accounts/{account_id}/credits", response_model=CreditOut)
async def credit_account(
    account_id: str,
    body: CreditCreate,
    request: Request,
    ledger: LedgerDep,
    idempotency: IdempotencyDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    credits = CreditService(ledger, idempotency, ttl_s=settings.idempotency_ttl_s)
    result = await credits.credit(
        CreditRequest(
            account_id=account_id,
            amount_micros=body.amount,
            note=body.note,
            method=request.method,
            path=request.url.path,
            body=await request.body(),
        ),
        idempotency_key=idempotency_key,
        render=lambda row: CreditOut.of(row).model_dump_json().encode(),
    )
    headers = {"idempotent-replayed": "true"} if result.replayed else None
    return Response(
        result.body,
        status_code=result.status_code,
        media_type="application/json",
        headers=headers,
    )


@router.get("/accounts/{account_id}/ledger")
async def account_ledger(
    account_id: str, ledger: LedgerDep, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> Page[LedgerEntryOut]:
    rows, next_cursor = await ledger.ledger_page(account_id, limit=limit, cursor=cursor)
    return Page(data=[LedgerEntryOut.of(row) for row in rows], next_cursor=next_cursor)


# keys --------------------------------------------------------------------------------
@router.post("/accounts/{account_id}/keys", status_code=201)
async def create_key(account_id: str, body: KeyCreate, keys: KeysDep) -> KeyWithSecret:
    record, secret = await create_key_from(keys, account_id, body)
    return KeyWithSecret.with_secret(record, secret, await keys.budget_usage(record.id))


@router.get("/keys")
async def list_keys(
    keys: KeysDep,
    account_id: str | None = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Page[KeyOut]:
    records, next_cursor = await keys.list_keys(account_id=account_id, limit=limit, cursor=cursor)
    return Page(data=[KeyOut.of(record) for record in records], next_cursor=next_cursor)


@router.get("/keys/{key_id}")
async def get_key(key_id: str, keys: KeysDep) -> KeyOut:
    record = await keys.get_key(key_id)
    return KeyOut.of(record, await keys.budget_usage(key_id))


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, keys: KeysDep) -> KeyOut:
    await keys.set_budgets(key_id, [budget.to_budget() for budget in body.budgets])
    return KeyOut.of(await keys.get_key(key_id), await keys.budget_usage(key_id))


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, keys: KeysDep, authenticator: AuthenticatorDep) -> KeyOut:
    record = await keys.revoke_key(key_id)
    authenticator.invalidate(record.key_hash)
    return KeyOut.of(record)


@router.post("/keys/{key_id}/rotate")
async def rotate_key(key_id: str, keys: KeysDep, authenticator: AuthenticatorDep) -> KeyWithSecret:
    old = await keys.get_key(key_id)
    record, secret = await keys.rotate_key(key_id)
    authenticator.invalidate(old.key_hash)
    return KeyWithSecret.with_secret(record, secret)


@router.delete("/keys/{key_id}")
async def delete_key(key_id: str, keys: KeysDep, authenticator: AuthenticatorDep) -> KeyDeleted:
    record = await keys.delete_key(key_id)
    authenticator.invalidate(record.key_hash)
    return KeyDeleted(id=record.id)


# reports -----------------------------------------------------------------------------
#: what `from` and `to` take: an ISO 8601 date (its midnight), or a date and time with an
#: optional zone (none is UTC). Nothing else: a bare number is not read as a Unix time.
INSTANT: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_FROM: Final = (
    "start, inclusive: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM] (UTC without a zone)"
)
_TO: Final = "end, exclusive, later than `from`; same forms as `from`"


def parse_instant(value: str, param: str) -> datetime:
    """A `from`/`to` value (already matched against `INSTANT`) as a UTC instant; a date or
    time that does not exist (2026-02-30, 24:00) is a 400 naming `param`."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(
            f"{param} is not a valid date or time: {value!r}.", param=param
        ) from None
    return utc_instant(parsed, param)


@router.get("/usage", response_model_by_alias=True)
async def usage(
    reports: ReportsDep,
    account_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    from_: Annotated[str | None, Query(alias="from", pattern=INSTANT, description=_FROM)] = None,
    to: Annotated[str | None, Query(pattern=INSTANT, description=_TO)] = None,
    group_by: GroupBy | None = None,
) -> UsageOut:
    since = None if from_ is None else parse_instant(from_, "from")
    until = None if to is None else parse_instant(to, "to")
    if since is not None and until is not None and until <= since:
        raise InvalidParameter("'to' must be later than 'from'.", param="to")
    filters = RequestFilter(
        account_id=account_id, key_id=key_id, model=model, since=since, until=until
    )
    rows = await reports.usage(filters, group_by=group_by)
    return UsageOut.build(rows, group_by=group_by, since=since, until=until)


@router.get("/requests")
async def list_requests(
    reports: ReportsDep,
    account_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    state: RequestState | None = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Page[RequestOut]:
    filters = RequestFilter(
        account_id=account_id, key_id=key_id, model=model, status_code=status, state=state
    )
    records, next_cursor = await reports.list_requests(filters, limit=limit, cursor=cursor)
    return Page(data=[RequestOut.of(record) for record in records], next_cursor=next_cursor)


def _checked_pricing(raw: dict[str, Any] | None, request: Request) -> str | None:
    """Validated account pricing as stored (JSON text), or None to clear it; model ids are
    checked against the catalog in force (where the app has one)."""
    if raw is None:
        return None
    try:
        pricing = parse_pricing(raw)
        catalog = getattr(request.app.state.gateway, "catalog", None)
        if catalog is not None:
            pricing.check_models(catalog.models)
    except ValueError as exc:
        raise InvalidParameter(str(exc), param="pricing") from exc
    return pricing.to_json()


# catalog ------------------------------------------------------------------------------
router.include_router(catalog_router)  # POST /admin/v1/catalog/reload (`app.admin.catalog`)
