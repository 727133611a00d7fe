"""`Idempotency-Key` records: a repeated request gets the stored response and is not re-run.

Flow at the request boundary:

    cached = await store.begin(scope=..., key=..., request_hash=request_hash(...), ttl_s=...)
    if cached: return the stored status and body
    try: run the request (hold, upstream, settle) -> response
    except: await store.abandon(...)   # nothing was charged; the client may retry
    else:   await store.complete(..., status_code=..., body=...)

`begin` is ONE statement on both backends: `INSERT ... ON CONFLICT DO UPDATE ... WHERE <the
existing row is dead> RETURNING`. Exactly one of N concurrent callers gets a row back and owns
the key; the others read the row that won and get a replay or a 409. A row is dead, and so
replaced, when it expired (`expires_at`, ttl_s after it was begun) or when it is still
`in_progress` after `lease_s` (its process died between begin and complete/abandon; the same
timeout after which the sweeper refunds a dead process's hold, so a taken-over request cannot be
charged twice).

Each record names the request that ran under it (`request_id`, the request-log id) and counts
the repeats answered from it (`replays`, `last_replayed_at`): replays are not logged as
requests of their own (they cost nothing and ran nothing), so this is where they are seen.

Decisions: the hash covers method, path and body (not headers); a different body under the same
key is 409 IDEMPOTENCY_KEY_REUSED even while the first is running; timestamps come from the
Python clock (UTC) on both backends, so skew between processes only shifts a 24 h TTL by the
skew.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import IdempotencyRecord
from app.errors import Conflict, InvalidParameter
from app.ledger.records import utc_now

logger = logging.getLogger(__name__)

DEFAULT_LEASE_S = 900.0
#: the column's width (`idempotency_records.idem_key`); longer keys are a 400, not a DB error
MAX_KEY_LENGTH = 255
_BEGIN_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes


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
    ) -> StoredResponse | None:
        """None: the caller (request `request_id`) now owns the key. Else the response to
        replay (the replay is counted), or 409."""
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise InvalidParameter(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        for _ in range(_BEGIN_ATTEMPTS):
            if await self._claim(
                scope=scope, key=key, request_hash=request_hash, ttl_s=ttl_s, request_id=request_id
            ):
                return None
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
                await self._count_replay(scope=scope, key=key)
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

    async def _count_replay(self, *, scope: str, key: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.scope == scope, IdempotencyRecord.idem_key == key)
                .values(replays=IdempotencyRecord.replays + 1, last_replayed_at=utc_now())
            )

    async def _claim(
        self, *, scope: str, key: str, request_hash: str, ttl_s: int, request_id: str | None
    ) -> bool:
        now = utc_now()
        fresh = {
            "request_id": request_id,
            "replays": 0,
            "last_replayed_at": None,
            "request_hash": request_hash,
            "state": "in_progress",
            "status_code": None,
            "response_body": None,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
        }
        dialect_insert = pg_insert if self._postgres else sqlite_insert
        statement = (
            dialect_insert(IdempotencyRecord)
            .values(scope=scope, idem_key=key, **fresh)
            .on_conflict_do_update(
                index_elements=[IdempotencyRecord.scope, IdempotencyRecord.idem_key],
                set_=fresh,
                where=or_(
                    IdempotencyRecord.expires_at <= now,
                    and_(
                        IdempotencyRecord.state == "in_progress",
                        IdempotencyRecord.created_at < now - self._lease,
                    ),
                ),
            )
            .returning(IdempotencyRecord.scope)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first() is not None

    async def complete(self, *, scope: str, key: str, status_code: int, body: bytes) -> None:
        """Store the response of a request this caller owns, for replays until it expires."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.scope == scope,
                    IdempotencyRecord.idem_key == key,
                    IdempotencyRecord.state == "in_progress",
                )
                .values(state="done", status_code=status_code, response_body=body)
                .returning(IdempotencyRecord.scope)
            )
            stored = result.first() is not None
        if not stored:
            logger.warning(
                "idempotency: %s/%s was no longer in progress; response not stored", scope, key
            )

    async def abandon(self, *, scope: str, key: str) -> None:
        """Forget an in-progress key whose request failed, so the client may retry it."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope,
                    IdempotencyRecord.idem_key == key,
                    IdempotencyRecord.state == "in_progress",
                )
            )

    async def purge_expired(self) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utc_now())
            )
        return int(result.rowcount or 0)
