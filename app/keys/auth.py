"""Authenticating API requests: `Authorization: Bearer sk-...` -> `AuthenticatedKey`.

The hot path does no database query for a key seen in the last `ttl_s` seconds: records are
kept in a small, bounded, in-process cache keyed by the secret's SHA-256. Status checks
(revoked, expired, account suspended) are re-evaluated on every call against the cached
record, so a key that expires while cached stops at its expiry instant.

Cache freshness, stated plainly:
- In the process that revokes, rotates or deletes a key (or suspends an account), the admin
  API calls `invalidate(key_hash)` / `invalidate_all()`, so that process stops honouring the
  old secret at once.
- Every other process (replicas, a CLI beside a server) sees the change within
  `GATEWAY_KEY_CACHE_TTL_S` seconds (default 2). Money is not at risk in that window: the
  ledger's charge statement re-checks the key in the same atomic statement, so a revoked key
  can never be charged.

Unknown secrets are cached too (as "unknown", for `unknown_ttl_s`, default 5 minutes, in a
separate, smaller map so a flood of random keys cannot evict the real ones). That is safe for
new keys: a secret only becomes valid when `generate_secret` draws it, 256 fresh random bits
nobody can have sent before. It spares the database from a client that keeps retrying with a
deleted key. Concurrent misses on the same hash share one query.

A client sending ever-new random keys defeats any cache, so unknown keys also cost their sender
a failure budget per client address (`failure_throttle`): once it is spent, every key that
is not already cached as valid is answered 429 `RATE_LIMITED` with `Retry-After` before any
query. Database work for unknown keys is thereby bounded by (addresses x refill rate), and a
valid, recently used key keeps working even from a throttled address (a shared NAT).

The stored hash is compared with `hmac.compare_digest` even though the lookup was by hash, so
no code path compares secret-derived strings in variable time. Error messages show at most
the 11-character display prefix of what the client sent.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalog.account_pricing import AccountPricing
from app.errors import AuthenticationError, PermissionDenied
from app.keys.repository import KeyRepository, KeyWithAccount
from app.keys.secrets import display_prefix, hash_secret, looks_like_key
from app.security.throttle import FailureThrottle

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


@dataclass(frozen=True, slots=True)
class AuthenticatedKey:
    """The caller's key as the request pipeline needs it; limits already defaulted."""

    key_id: str
    account_id: str
    name: str
    #: None: every model is allowed
    models: frozenset[str] | None
    rpm: int | None
    max_concurrency: int | None
    expires_at: datetime | None
    key_hash: str
    #: the account's price list (`app.catalog.account_pricing.account_price`); None: catalog
    pricing: AccountPricing | None = None

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


@dataclass(frozen=True, slots=True)
class _Entry:
    found: KeyWithAccount | None
    expires: float


class KeyAuthenticator:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl_s: float = 2.0,
        unknown_ttl_s: float | None = None,
        failure_throttle: FailureThrottle | None = None,
        default_rpm: int | None = None,
        default_max_concurrency: int | None = None,
        max_entries: int = 10_000,
        max_unknown_entries: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._unknown_ttl_s = ttl_s if unknown_ttl_s is None else unknown_ttl_s
        self._throttle = failure_throttle
        self._default_rpm = default_rpm
        self._default_max_concurrency = default_max_concurrency
        self._max_entries = max_entries
        self._max_unknown_entries = max_unknown_entries
        self._clock = clock
        #: the wall clock a key's `expires_at` is judged by, cached or not (tests move it)
        self.now = now
        self._known: OrderedDict[str, _Entry] = OrderedDict()
        self._unknown: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[KeyWithAccount | None]] = {}
        # bumped by every invalidation; a lookup that started before one is not cached
        self._generation = 0

    async def authenticate(
        self, authorization: str | None, *, address: str | None = None
    ) -> AuthenticatedKey:
        """The key behind an `Authorization` header value, or the 401/403/429 that explains
        why not. `address` (the client's) is charged for unknown keys."""
        secret = _bearer_secret(authorization)
        key_hash = hash_secret(secret)
        throttle = self._throttle if address is not None else None
        if throttle is not None and address is not None and not self._known_fresh(key_hash):
            throttle.check(address)
        found = await self._lookup(key_hash)
        if found is None or not hmac.compare_digest(found.key.key_hash, key_hash):
            if throttle is not None and address is not None:
                throttle.record_failure(address)
            raise AuthenticationError(f"Incorrect API key provided: {display_prefix(secret)}***.")
        return self._admit(found)

    async def authenticate_hash(self, key_hash: str) -> AuthenticatedKey:
        """The key with this stored hash, checked like `authenticate` (server-side callers that
        hold a key record but never its secret: the console playground)."""
        found = await self._lookup(key_hash)
        if found is None:
            raise AuthenticationError("This API key no longer exists.")
        return self._admit(found)

    def _admit(self, found: KeyWithAccount) -> AuthenticatedKey:
        key = found.key
        if key.revoked_at is not None:
            raise PermissionDenied("This API key has been revoked.", code="KEY_REVOKED")
        if key.expires_at is not None and key.expires_at <= self.now():
            raise PermissionDenied("This API key has expired.", code="KEY_EXPIRED")
        if found.account_status != "active":
            raise PermissionDenied(
                "The account this API key belongs to is suspended.", code="ACCOUNT_SUSPENDED"
            )
        return AuthenticatedKey(
            key_id=key.id,
            account_id=key.account_id,
            name=key.name,
            models=None if key.models is None else frozenset(key.models),
            rpm=key.rpm if key.rpm is not None else self._default_rpm,
            max_concurrency=(
                key.max_concurrency
                if key.max_concurrency is not None
                else self._default_max_concurrency
            ),
            expires_at=key.expires_at,
            key_hash=key.key_hash,
            pricing=found.account_pricing,
        )

    def invalidate(self, key_hash: str) -> None:
        """Forget one key in this process (after revoke, rotate or delete)."""
        self._generation += 1
        self._known.pop(key_hash, None)
        self._unknown.pop(key_hash, None)
        self._loading.pop(key_hash, None)

    def invalidate_all(self) -> None:
        """Forget every key in this process (after an account is suspended or reactivated)."""
        self._generation += 1
        self._known.clear()
        self._unknown.clear()
        self._loading.clear()

    def _known_fresh(self, key_hash: str) -> bool:
        entry = self._known.get(key_hash)
        return entry is not None and entry.expires > self._clock()

    async def _lookup(self, key_hash: str) -> KeyWithAccount | None:
        now = self._clock()
        for cache in (self._known, self._unknown):
            entry = cache.get(key_hash)
            if entry is not None:
                if entry.expires > now:
                    cache.move_to_end(key_hash)
                    return entry.found
                del cache[key_hash]
        pending = self._loading.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key_hash))
            # every waiter may have gone; retrieve the outcome so a failure is not reported
            # as "never retrieved" (each waiter still gets it through the shield)
            pending.add_done_callback(_consume_outcome)
            self._loading[key_hash] = pending
        # shield: one caller giving up (client disconnect) must not cancel the shared query
        return await asyncio.shield(pending)

    async def _load(self, key_hash: str) -> KeyWithAccount | None:
        generation = self._generation
        try:
            async with self._engine.connect() as conn:
                found = await KeyRepository(conn).get_by_hash(key_hash)
        finally:
            if self._loading.get(key_hash) is asyncio.current_task():
                del self._loading[key_hash]
        if generation == self._generation:
            self._remember(key_hash, found)
        return found

    def _remember(self, key_hash: str, found: KeyWithAccount | None) -> None:
        cache, limit, ttl_s = (
            (self._known, self._max_entries, self._ttl_s)
            if found is not None
            else (self._unknown, self._max_unknown_entries, self._unknown_ttl_s)
        )
        cache[key_hash] = _Entry(found, self._clock() + ttl_s)
        cache.move_to_end(key_hash)
        while len(cache) > limit:
            cache.popitem(last=False)


def _consume_outcome(future: asyncio.Future[KeyWithAccount | None]) -> None:
    if not future.cancelled():
        future.exception()


def _bearer_secret(authorization: str | None) -> str:
    """The secret in `Bearer <secret>`, or 401 without echoing anything unrecognisable."""
    if authorization is None or not authorization.strip():
        raise AuthenticationError(MISSING_KEY_MESSAGE)
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError(MISSING_KEY_MESSAGE)
    secret = secret.strip()
    if not looks_like_key(secret):
        # a malformed value may be anything (even another service's credential): show nothing
        raise AuthenticationError("Incorrect API key provided.")
    return secret
