"""Managing API keys: create, list, read, revoke, rotate, delete.

`KeyService` is what the admin API and the CLI call; it validates its inputs itself (the CLI has
no pydantic layer in front of it), naming the offending field in `param` exactly as the admin
API spells it, and runs each operation in one transaction of its own.

The secret is returned only by `create_key` and `rotate_key`, next to the stored record; nothing
can read it back later. After `revoke_key`, `rotate_key` or `delete_key`, callers in a server
process should also call `KeyAuthenticator.invalidate(record.key_hash)` so that process stops
honouring the old secret at once (other processes stop within the authenticator's TTL).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.storable import storable_int, storable_text, utc_instant
from app.errors import Conflict, InvalidParameter, NotFound
from app.keys.cursor import decode_cursor, encode_cursor
from app.keys.repository import KeyRecord, KeyRepository
from app.keys.secrets import display_prefix, generate_secret, hash_secret, new_key_id
from app.ledger.budgets import Budget, BudgetRepository, BudgetUsage, check_budgets

__all__ = ["KeyRecord", "KeyService"]

MAX_NAME_LENGTH = 200
MAX_MODEL_ID_LENGTH = 200


class KeyService:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_key(
        self,
        *,
        account_id: str,
        name: str,
        models: list[str] | None = None,
        rpm: int | None = None,
        max_concurrency: int | None = None,
        expires_at: datetime | None = None,
        budgets: list[Budget] | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key for `account_id` and its secret (the only time the secret is seen)."""
        name = _check_name(name)
        checked_budgets = check_budgets(budgets or [])
        models = _check_models(models)
        _check_positive("rpm", rpm)
        _check_positive("max_concurrency", max_concurrency)
        now = datetime.now(UTC)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidParameter(
                    "expires_at must carry a timezone (e.g. 2030-01-01T00:00:00Z).",
                    param="expires_at",
                )
            expires_at = utc_instant(expires_at, "expires_at")
            if expires_at <= now:
                raise InvalidParameter("expires_at must be in the future.", param="expires_at")
        secret = generate_secret()
        async with self._engine.begin() as conn:
            keys = KeyRepository(conn)
            if not await keys.account_exists(account_id):
                raise NotFound(f"No account with id {account_id!r}.", code="ACCOUNT_NOT_FOUND")
            record = await keys.create(
                key_id=new_key_id(),
                account_id=account_id,
                name=name,
                key_hash=hash_secret(secret),
                prefix=display_prefix(secret),
                models=models,
                rpm=rpm,
                max_concurrency=max_concurrency,
                expires_at=expires_at,
                created_at=now,
            )
            if checked_budgets:
                await BudgetRepository(conn).replace(key_id=record.id, budgets=checked_budgets)
        return record, secret

    async def set_budgets(self, key_id: str, budgets: list[Budget]) -> None:
        """Replace the key's budgets (an empty list removes them). Spend so far is kept: a
        lowered daily budget already spent is refused until the next day."""
        checked = check_budgets(budgets)
        async with self._engine.begin() as conn:
            if await KeyRepository(conn).get(key_id) is None:
                raise _not_found(key_id)
            await BudgetRepository(conn).replace(key_id=key_id, budgets=checked)

    async def budget_usage(self, key_id: str) -> list[BudgetUsage]:
        """Each budget of the key with what its current window has spent."""
        async with self._engine.connect() as conn:
            return await BudgetRepository(conn).usage(
                key_id=key_id, clock=lambda: datetime.now(UTC)
            )

    async def list_keys(
        self, *, account_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[KeyRecord], str | None]:
        """One page of keys in creation order, and the cursor of the next page (or None)."""
        after: tuple[datetime, str] | None = None
        if cursor is not None:
            created_at, key_id = decode_cursor(cursor, parts=2)
            try:
                after = (datetime.fromisoformat(created_at), key_id)
            except ValueError as exc:
                raise InvalidParameter("Invalid pagination cursor.", param="cursor") from exc
        async with self._engine.connect() as conn:
            rows = await KeyRepository(conn).list(
                account_id=account_id, limit=limit + 1, after=after
            )
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], encode_cursor(last.created_at.isoformat(), last.id)

    async def get_key(self, key_id: str) -> KeyRecord:
        async with self._engine.connect() as conn:
            record = await KeyRepository(conn).get(key_id)
        if record is None:
            raise _not_found(key_id)
        return record

    async def revoke_key(self, key_id: str) -> KeyRecord:
        """Revoke (idempotent: a second call returns the key as first revoked)."""
        async with self._engine.begin() as conn:
            record = await KeyRepository(conn).revoke(key_id, at=datetime.now(UTC))
        if record is None:
            raise _not_found(key_id)
        return record

    async def rotate_key(self, key_id: str) -> tuple[KeyRecord, str]:
        """Replace the secret; the old one stops matching as soon as this commits.

        A revoked key cannot be rotated (409): create a new key instead.
        """
        secret = generate_secret()
        async with self._engine.begin() as conn:
            keys = KeyRepository(conn)
            record = await keys.rotate(
                key_id, key_hash=hash_secret(secret), prefix=display_prefix(secret)
            )
            if record is None:
                if await keys.get(key_id) is None:
                    raise _not_found(key_id)
                raise Conflict(
                    f"Key {key_id!r} is revoked and cannot be rotated; create a new key.",
                    code="KEY_REVOKED",
                )
        return record, secret

    async def delete_key(self, key_id: str) -> KeyRecord:
        """Delete the row and return what it was (its `key_hash` is needed to invalidate)."""
        async with self._engine.begin() as conn:
            record = await KeyRepository(conn).delete(key_id)
        if record is None:
            raise _not_found(key_id)
        return record


def _not_found(key_id: str) -> NotFound:
    return NotFound(f"No API key with id {key_id!r}.", code="KEY_NOT_FOUND")


def _check_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidParameter(f"name must be 1 to {MAX_NAME_LENGTH} characters.", param="name")
    return storable_text(name, "name")


def _check_models(models: list[str] | None) -> list[str] | None:
    """None allows every model; a list allows exactly those ids (duplicates dropped)."""
    if models is None:
        return None
    if isinstance(models, str) or not isinstance(models, list | tuple):
        raise InvalidParameter("models must be a list of model ids.", param="models")
    cleaned: list[str] = []
    for model in models:
        if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_ID_LENGTH:
            raise InvalidParameter("models must be a list of non-empty model ids.", param="models")
        storable_text(model, "models")
        if model.strip() not in cleaned:
            cleaned.append(model.strip())
    if not cleaned:
        raise InvalidParameter(
            "models must name at least one model; omit it to allow every model.",
            param="models",
        )
    return cleaned


def _check_positive(param: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(f"{param} must be a positive integer.", param=param)
    storable_int(value, param)
