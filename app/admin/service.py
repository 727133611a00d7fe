"""Admin operations that are more than one service call (idempotent credits), or that the
admin API and the console share (creating a key from its validated body).

`Idempotency-Key` on `POST /accounts/{id}/credits` follows the ledger's `IdempotencyStore`
flow: the first request with a key runs and its exact response bytes are stored; a repeat with
the same method, path and body within the TTL (24 h by default) gets those bytes back without
crediting again; the same key with a different body is 409 `IDEMPOTENCY_KEY_REUSED`. A credit
that fails (unknown account, would go below zero) stores nothing, so the client may fix and
retry under the same key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.admin.schemas import KeyCreate
from app.errors import InvalidParameter
from app.keys.repository import KeyRecord
from app.keys.service import KeyService
from app.ledger.idempotency import MAX_KEY_LENGTH, IdempotencyStore, StoredResponse, request_hash
from app.ledger.records import LedgerRow
from app.ledger.service import Ledger

MAX_IDEMPOTENCY_KEY_LENGTH = MAX_KEY_LENGTH


@dataclass(frozen=True, slots=True)
class CreditRequest:
    account_id: str
    amount_micros: int
    note: str | None
    #: what identifies a repeat: method, path and raw body of the HTTP request
    method: str
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CreditResult:
    status_code: int
    body: bytes
    replayed: bool


class CreditService:
    def __init__(self, ledger: Ledger, store: IdempotencyStore, *, ttl_s: int) -> None:
        self._ledger = ledger
        self._store = store
        self._ttl_s = ttl_s

    async def credit(
        self,
        request: CreditRequest,
        *,
        idempotency_key: str | None,
        render: Callable[[LedgerRow], bytes],
    ) -> CreditResult:
        """Credit once per `idempotency_key`; `render` turns the ledger row into the body."""
        if idempotency_key is None:
            row = await self._credit(request)
            return CreditResult(200, render(row), replayed=False)
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InvalidParameter(
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        scope = f"admin:credits:{request.account_id}"
        claim = await self._store.begin(
            scope=scope,
            key=idempotency_key,
            request_hash=request_hash(request.method, request.path, request.body),
            ttl_s=self._ttl_s,
        )
        if isinstance(claim, StoredResponse):
            return CreditResult(claim.status_code, claim.body, replayed=True)
        try:
            body = render(await self._credit(request))
        except BaseException:
            await self._store.abandon(claim)
            raise
        await self._store.complete(claim, status_code=200, body=body, ttl_s=self._ttl_s)
        return CreditResult(200, body, replayed=False)

    async def _credit(self, request: CreditRequest) -> LedgerRow:
        return await self._ledger.credit(
            account_id=request.account_id, amount_micros=request.amount_micros, note=request.note
        )


async def create_key_from(
    keys: KeyService, account_id: str, body: KeyCreate
) -> tuple[KeyRecord, str]:
    """`POST /accounts/{id}/keys` (and the console's key form): the key and its secret."""
    return await keys.create_key(
        account_id=account_id,
        name=body.name,
        models=body.models,
        rpm=body.rpm,
        max_concurrency=body.max_concurrency,
        expires_at=body.expires_at,
        budgets=None if body.budgets is None else [b.to_budget() for b in body.budgets],
    )
