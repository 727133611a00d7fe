"""Idempotency-Key records: own, replay, reuse with another body, in progress, expiry, abandon."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import Conflict, InvalidParameter
from app.images.results import ResponseBody
from app.ledger.idempotency import (
    MAX_KEY_LENGTH,
    Claim,
    IdempotencyStore,
    StoredResponse,
    request_hash,
)

pytestmark = pytest.mark.anyio

SCOPE = "gen:acct_1"
HASH_A = request_hash("POST", "/v1/images/generations", b'{"prompt": "a"}')
HASH_B = request_hash("POST", "/v1/images/generations", b'{"prompt": "b"}')


async def age(engine: AsyncEngine, *, created_s: int, expires_s: int) -> None:
    """Shift every record's timestamps `created_s`/`expires_s` seconds into the past (the
    lease moves with `created_s`: it is measured from the claim)."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(
                text(
                    "UPDATE idempotency_records"
                    " SET created_at = created_at - make_interval(secs => :c),"
                    " lease_expires_at = lease_expires_at - make_interval(secs => :c),"
                    " expires_at = expires_at - make_interval(secs => :e)"
                ),
                {"c": created_s, "e": expires_s},
            )
        else:
            fmt = "'%Y-%m-%d %H:%M:%f000'"
            await connection.execute(
                text(
                    f"UPDATE idempotency_records SET created_at = strftime({fmt}, created_at, :c),"
                    f" lease_expires_at = strftime({fmt}, lease_expires_at, :c),"
                    f" expires_at = strftime({fmt}, expires_at, :e)"
                ),
                {"c": f"-{created_s} seconds", "e": f"-{expires_s} seconds"},
            )


async def claim(store: IdempotencyStore, key: str = "k1", *, scope: str = SCOPE) -> Claim:
    claimed = await store.begin(scope=scope, key=key, request_hash=HASH_A, ttl_s=86_400)
    assert isinstance(claimed, Claim)
    return claimed


def test_request_hash_covers_method_path_and_body() -> None:
    assert len(HASH_A) == 64 and HASH_A != HASH_B
    assert request_hash("post", "/x", b"1") == request_hash("POST", "/x", b"1")
    assert request_hash("POST", "/x", b"1") != request_hash("POST", "/y", b"1")


async def test_own_then_replay(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    owned = await claim(store)
    assert await store.complete(owned, status_code=200, body=b'{"ok": true}', ttl_s=86_400)
    replay = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=86_400)
    assert replay == StoredResponse(status_code=200, body=b'{"ok": true}')
    # scopes are separate: the same key in another account is a new request
    other = await store.begin(scope="gen:acct_2", key="k1", request_hash=HASH_A, ttl_s=60)
    assert isinstance(other, Claim) and other.owner != owned.owner


async def test_a_body_stored_as_pieces_replays_as_the_same_bytes(engine: AsyncEngine) -> None:
    """A rendered body reaches the store as its pieces (a view into the provider's answer
    among them, several write chunks long); the replay is exactly the bytes that were sent."""
    answer = bytearray(b"QUJD" * 200_000)  # 800 kB of base64
    body = ResponseBody((b'{"data":[{"b64_json":"', memoryview(answer)[4:-4], b'"}]}'))
    store = IdempotencyStore(engine)
    assert await store.complete(await claim(store), status_code=200, body=body, ttl_s=60)
    replay = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=60)
    assert isinstance(replay, StoredResponse)
    assert replay.body == bytes(body) == b"".join(body.chunks())
    assert len(replay.body) == len(body) == 800_000 - 8 + 26


async def test_keys_longer_than_the_column_are_a_400(engine: AsyncEngine) -> None:
    # Postgres would refuse the INSERT (a driver error, i.e. a 503); SQLite would store it
    store = IdempotencyStore(engine)
    for key in ("", "k" * (MAX_KEY_LENGTH + 1)):
        with pytest.raises(InvalidParameter) as info:
            await store.begin(scope=SCOPE, key=key, request_hash=HASH_A, ttl_s=60)
        assert info.value.param == "Idempotency-Key"
    await claim(store, "k" * MAX_KEY_LENGTH)


async def test_different_body_is_a_conflict(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    owned = await claim(store)
    with pytest.raises(Conflict) as while_running:
        await store.begin(scope=SCOPE, key="k1", request_hash=HASH_B, ttl_s=86_400)
    assert while_running.value.code == "IDEMPOTENCY_KEY_REUSED"
    await store.complete(owned, status_code=200, body=b"{}", ttl_s=86_400)
    with pytest.raises(Conflict) as caught:
        await store.begin(scope=SCOPE, key="k1", request_hash=HASH_B, ttl_s=86_400)
    assert caught.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert caught.value.message == "Idempotency-Key was already used with a different request body"


async def test_same_request_in_progress_is_a_conflict(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    await claim(store)
    with pytest.raises(Conflict) as caught:
        await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=86_400)
    assert caught.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS" and caught.value.status == 409


async def test_only_one_of_many_concurrent_callers_owns_the_key(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    results = await asyncio.gather(
        *(store.begin(scope=SCOPE, key="race", request_hash=HASH_A, ttl_s=60) for _ in range(20)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, Claim)) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, Claim))


async def test_expired_records_are_replaced_and_purged(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    for key in ("k1", "k2"):
        await store.complete(await claim(store, key), status_code=200, body=b"old", ttl_s=60)
    await age(engine, created_s=120, expires_s=120)

    # an expired key is free again, even for another body
    fresh = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_B, ttl_s=60)
    assert isinstance(fresh, Claim)
    assert await store.purge_expired() == 1  # k2 only; k1 is fresh again
    await claim(store, "k2")


async def test_a_running_request_keeps_its_key_whatever_the_replay_ttl(engine: AsyncEngine) -> None:
    """Rule 1: the claim's lease follows the hold timeout, not the replay TTL (1 s here)."""
    store = IdempotencyStore(engine, lease_s=900)
    first = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=1)
    assert isinstance(first, Claim)
    await age(engine, created_s=60, expires_s=60)  # far past the TTL, well inside the lease
    with pytest.raises(Conflict) as caught:
        await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=1)
    assert caught.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS"
    assert await store.purge_expired() == 0  # nor is a running request's key purged
    # and the replay window starts when the response is stored
    assert await store.complete(first, status_code=200, body=b"done", ttl_s=1)
    replay = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=1)
    assert replay == StoredResponse(status_code=200, body=b"done")


async def test_a_dead_owner_loses_the_key_after_the_lease(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine, lease_s=900)
    await claim(store)
    await age(engine, created_s=60, expires_s=0)
    with pytest.raises(Conflict):
        await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=86_400)
    await age(engine, created_s=900, expires_s=0)
    await claim(store)


async def test_only_the_owner_completes_or_abandons_its_claim(engine: AsyncEngine) -> None:
    """Rule 1's fence: a request whose lease ran out and whose key was taken over can neither
    delete nor overwrite the new owner's record."""
    store = IdempotencyStore(engine, lease_s=900)
    stale = await claim(store)
    await age(engine, created_s=901, expires_s=0)
    current = await claim(store)
    assert current.owner != stale.owner
    assert not await store.abandon(stale)
    assert not await store.complete(stale, status_code=200, body=b"stale", ttl_s=86_400)
    with pytest.raises(Conflict) as caught:  # still the new owner's, still in progress
        await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=86_400)
    assert caught.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS"
    assert await store.complete(current, status_code=200, body=b"current", ttl_s=86_400)
    assert not await store.abandon(stale)
    replay = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=86_400)
    assert replay == StoredResponse(status_code=200, body=b"current")


async def test_abandon_lets_the_client_retry(engine: AsyncEngine) -> None:
    store = IdempotencyStore(engine)
    assert await store.abandon(await claim(store))
    retried = await claim(store)
    await store.complete(retried, status_code=201, body=b"done", ttl_s=86_400)
    assert not await store.abandon(retried)  # a finished record is never abandoned
    replay = await store.begin(scope=SCOPE, key="k1", request_hash=HASH_A, ttl_s=86_400)
    assert replay == StoredResponse(status_code=201, body=b"done")
