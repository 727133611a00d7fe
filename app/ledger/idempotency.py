"""`Idempotency-Key` records: a repeated request gets the stored response and is not re-run.

Flow at the request boundary:

    claim = await store.begin(scope=..., key=..., request_hash=request_hash(...), ttl_s=...)
    if isinstance(claim, StoredResponse): return the stored status and body
    try: run the request (hold, upstream, settle) -> response
    except: await store.abandon(claim)   # nothing was charged; the client may retry
    else:   await store.complete(claim, status_code=..., body=..., ttl_s=...)

`begin` is ONE statement on both backends: `INSERT ... ON CONFLICT DO UPDATE ... WHERE <the
existing row is dead> RETURNING`. Exactly one of N concurrent callers gets a row back and owns
the key (a `Claim` with a fresh fencing token, `owner`); the others read the row that won and
get a replay or a 409. A row is dead, and so replaced, when:

- it is `done` and its replay window ran out (`expires_at`, ttl_s after it completed), or
- it is still `in_progress` after its lease (`lease_expires_at`): its process died between
  begin and complete/abandon. The lease is the hold timeout (`lease_s`), the time after which
  the sweeper refunds a dead process's hold, and at least as long as any request may run; so
  a request still running keeps its key `in_progress` whatever the replay TTL is, and a
  taken-over request cannot be charged twice.

`complete` and `abandon` only touch the row if it still carries the caller's token: a request
that lost its claim (its lease ran out and another request took the key over) can never
overwrite or delete the new owner's record; they say whether they did anything.

Each record names the request that ran under it (`request_id`, the request-log id) and counts
the repeats answered from it (`replays`, `last_replayed_at`): replays are not logged as
requests of their own (they cost nothing and ran nothing), so this is where they are seen.

Decisions: the hash covers method, path and body (not headers); a different body under the same
key is 409 IDEMPOTENCY_KEY_REUSED even while the first is running; timestamps come from the
Python clock (UTC) on both backends, so skew between processes only shifts a lease or a 24 h
TTL by the skew. Rows written before the fencing columns existed (no lease) fall back to
`created_at + lease_s`. Each replay is counted
(`image_gateway_idempotency_replays_total`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import SupportsBytes

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import IdempotencyRecord
from app.errors import Conflict, InvalidParameter
from app.ledger.records import utc_now
from app.observability.facts import note_replayed
from app.observability.metrics import IDEMPOTENCY_REPLAYS

logger = logging.getLogger(__name__)

#: the default hold timeout (`GATEWAY_HOLD_TIMEOUT_S`); the gateway passes the configured one
DEFAULT_LEASE_S = 900.0
#: the column's width (`idempotency_records.idem_key`); longer keys are a 400, not a DB error
MAX_KEY_LENGTH = 255
_BEGIN_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """An Idempotency-Key this caller owns until it completes or abandons it."""

    scope: str
    key: str
    #: the fencing token written with the claim; only its holder may finish the record
    owner: str


def request_hash(method: str, path: str, body: bytes) -> str:
    """sha256 hex of the request as the client sent it (method, path, raw body)."""
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        """`lease_s`: how long a claim stays in progress; give it the hold timeout."""
        self._postgres = engine.dialect.name == "postgresql"
        self._engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else engine
        )
        self._lease = timedelta(seconds=lease_s)

    async def begin(
        self,
        *,
        scope: str,
        key: str,
        request_hash: str,
        ttl_s: int,
        request_id: str | None = None,
    ) -> Claim | StoredResponse:
        """A `Claim`: the caller (request `request_id`) now owns the key. Else the response to
        replay (the replay is counted), or 409."""
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise InvalidParameter(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        for _ in range(_BEGIN_ATTEMPTS):
            claim = Claim(scope=scope, key=key, owner=secrets.token_hex(16))
            if await self._claim(
                claim, request_hash=request_hash, ttl_s=ttl_s, request_id=request_id
            ):
                return claim
            async with self._engine.connect() as connection:
                row = (
                    await connection.execute(
                        select(
                            IdempotencyRecord.request_hash,
                            IdempotencyRecord.state,
                            IdempotencyRecord.status_code,
                            IdempotencyRecord.response_body,
                        ).where(IdempotencyRecord.scope == scope, IdempotencyRecord.idem_key == key)
                    )
                ).first()
            if row is None:
                continue  # abandoned or purged in between: claim again
            if row.request_hash != request_hash:
                raise Conflict(
                    "Idempotency-Key was already used with a different request body",
                    code="IDEMPOTENCY_KEY_REUSED",
                    param="Idempotency-Key",
                )
            if row.state == "done" and row.status_code is not None:
                IDEMPOTENCY_REPLAYS.inc()
                note_replayed()
                await self._count_replay(scope=scope, key=key, request_hash=request_hash)
                return StoredResponse(status_code=row.status_code, body=row.response_body or b"")
            raise Conflict(
                "A request with this Idempotency-Key is still in progress; retry later",
                code="IDEMPOTENCY_KEY_IN_PROGRESS",
                param="Idempotency-Key",
            )
        raise Conflict(
            "A request with this Idempotency-Key is still in progress; retry later",
            code="IDEMPOTENCY_KEY_IN_PROGRESS",
            param="Idempotency-Key",
        )

    async def _count_replay(self, *, scope: str, key: str, request_hash: str) -> None:
        # only the finished record that was just read: never one that replaced it in between
        async with self._engine.begin() as connection:
            await connection.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.scope == scope,
                    IdempotencyRecord.idem_key == key,
                    IdempotencyRecord.state == "done",
                    IdempotencyRecord.request_hash == request_hash,
                )
                .values(replays=IdempotencyRecord.replays + 1, last_replayed_at=utc_now())
            )

    async def _claim(
        self, claim: Claim, *, request_hash: str, ttl_s: int, request_id: str | None
    ) -> bool:
        now = utc_now()
        lease_expires_at = now + self._lease
        fresh = {
            "request_id": request_id,
            "replays": 0,
            "last_replayed_at": None,
            "request_hash": request_hash,
            "state": "in_progress",
            "status_code": None,
            "response_body": None,
            "owner": claim.owner,
            "created_at": now,
            "lease_expires_at": lease_expires_at,
            # never purged while the claim may still be alive; `complete` restarts the TTL
            "expires_at": lease_expires_at + timedelta(seconds=ttl_s),
        }
        dialect_insert = pg_insert if self._postgres else sqlite_insert
        record = IdempotencyRecord
        statement = (
            dialect_insert(record)
            .values(scope=claim.scope, idem_key=claim.key, **fresh)
            .on_conflict_do_update(
                index_elements=[record.scope, record.idem_key],
                set_=fresh,
                where=or_(
                    and_(record.state == "done", record.expires_at <= now),
                    and_(record.state == "in_progress", record.lease_expires_at <= now),
                    and_(
                        record.state == "in_progress",
                        record.lease_expires_at.is_(None),
                        record.created_at < now - self._lease,
                    ),
                ),
            )
            .returning(record.scope)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first() is not None

    async def complete(
        self, claim: Claim, *, status_code: int, body: SupportsBytes, ttl_s: int
    ) -> bool:
        """Store the response of a request this caller owns, for replays during `ttl_s`.

        `body` is joined here (`bytes(body)`, no copy for a `bytes`): a response carried as
        pieces (`app.images.results.ResponseBody`) is joined only when a key stores it.

        False (and a warning): the claim was no longer this caller's; nothing was written.
        """
        stored_body = bytes(body)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(IdempotencyRecord)
                .where(*self._owned(claim))
                .values(
                    state="done",
                    status_code=status_code,
                    response_body=stored_body,
                    expires_at=utc_now() + timedelta(seconds=ttl_s),
                )
                .returning(IdempotencyRecord.scope)
            )
            stored = result.first() is not None
        if not stored:
            logger.warning(
                "idempotency: %s/%s is no longer owned by this request; response not stored",
                claim.scope,
                claim.key,
            )
        return stored

    async def abandon(self, claim: Claim) -> bool:
        """Forget an in-progress key whose request failed, so the client may retry it.

        False: the claim was no longer this caller's (or already finished); nothing changed.
        """
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(IdempotencyRecord)
                .where(*self._owned(claim))
                .returning(IdempotencyRecord.scope)
            )
            return result.first() is not None

    @staticmethod
    def _owned(claim: Claim) -> tuple[ColumnElement[bool], ...]:
        return (
            IdempotencyRecord.scope == claim.scope,
            IdempotencyRecord.idem_key == claim.key,
            IdempotencyRecord.state == "in_progress",
            IdempotencyRecord.owner == claim.owner,
        )

    async def purge_expired(self) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utc_now())
            )
        return int(result.rowcount or 0)
