from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import ApiKey
from app.errors import AuthenticationError, PermissionDenied, RateLimited
from app.keys.auth import KeyAuthenticator
from app.keys.secrets import generate_secret
from app.keys.service import KeyService
from app.security.throttle import FailureThrottle
from tests.keys.conftest import QueryCounter, create_account, set_account_status

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


async def test_a_valid_key_authenticates(keys: KeyService, engine: AsyncEngine) -> None:
    account_id = await create_account(engine)
    record, secret = await keys.create_key(
        account_id=account_id, name="ci", models=["local-preview"], rpm=10
    )
    auth = KeyAuthenticator(engine, default_rpm=99, default_max_concurrency=3)
    key = await auth.authenticate(bearer(secret))
    assert (key.key_id, key.account_id, key.name) == (record.id, account_id, "ci")
    assert key.models == frozenset({"local-preview"})
    assert key.rpm == 10  # the key's own limit wins
    assert key.max_concurrency == 3  # the operator default fills the gap
    assert key.key_hash == record.key_hash
    assert key.allows("local-preview") and not key.allows("gpt-image-1")


async def test_a_key_without_a_model_list_allows_every_model(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    _, secret = await keys.create_key(account_id=account_id, name="any")
    key = await KeyAuthenticator(engine).authenticate(bearer(secret))
    assert key.models is None and key.allows("anything")
    assert key.rpm is None and key.max_concurrency is None


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "sk-abc"])
async def test_missing_key_is_401(engine: AsyncEngine, header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await KeyAuthenticator(engine).authenticate(header)
    assert caught.value.code == "INVALID_API_KEY"
    assert caught.value.status == 401


async def test_malformed_key_is_401_without_echo(engine: AsyncEngine) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await KeyAuthenticator(engine).authenticate("Bearer my-other-service-password")
    assert "password" not in caught.value.message
    assert caught.value.code == "INVALID_API_KEY"


async def test_unknown_key_is_401_showing_only_the_prefix(engine: AsyncEngine) -> None:
    secret = generate_secret()
    with pytest.raises(AuthenticationError) as caught:
        await KeyAuthenticator(engine).authenticate(bearer(secret))
    assert secret[:11] in caught.value.message
    assert secret[11:] not in caught.value.message


async def test_revoked_key_is_403(keys: KeyService, account_id: str, engine: AsyncEngine) -> None:
    record, secret = await keys.create_key(account_id=account_id, name="k")
    await keys.revoke_key(record.id)
    with pytest.raises(PermissionDenied) as caught:
        await KeyAuthenticator(engine).authenticate(bearer(secret))
    assert caught.value.code == "KEY_REVOKED"


async def test_expired_key_is_403(keys: KeyService, account_id: str, engine: AsyncEngine) -> None:
    record, secret = await keys.create_key(account_id=account_id, name="k")
    async with engine.begin() as conn:
        await conn.execute(
            update(ApiKey)
            .where(ApiKey.id == record.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(PermissionDenied) as caught:
        await KeyAuthenticator(engine).authenticate(bearer(secret))
    assert caught.value.code == "KEY_EXPIRED"


async def test_a_cached_key_stops_at_its_expiry(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    _, secret = await keys.create_key(account_id=account_id, name="k", expires_at=expires_at)
    wall = [expires_at - timedelta(microseconds=1)]
    auth = KeyAuthenticator(engine, ttl_s=3600, now=lambda: wall[0])
    await auth.authenticate(bearer(secret))  # cached for an hour from here
    wall[0] = expires_at  # the instant it expires, still within the cache's hour
    with pytest.raises(PermissionDenied) as caught:
        await auth.authenticate(bearer(secret))
    assert caught.value.code == "KEY_EXPIRED"


async def test_suspended_account_is_403(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    _, secret = await keys.create_key(account_id=account_id, name="k")
    await set_account_status(engine, account_id, "suspended")
    with pytest.raises(PermissionDenied) as caught:
        await KeyAuthenticator(engine).authenticate(bearer(secret))
    assert caught.value.code == "ACCOUNT_SUSPENDED"


async def test_a_cache_hit_runs_no_query(
    keys: KeyService, account_id: str, engine: AsyncEngine, queries: QueryCounter
) -> None:
    _, secret = await keys.create_key(account_id=account_id, name="k")
    auth = KeyAuthenticator(engine, ttl_s=60)
    before = queries.count
    await auth.authenticate(bearer(secret))
    assert queries.count == before + 1
    for _ in range(20):
        await auth.authenticate(bearer(secret))
    assert queries.count == before + 1


async def test_concurrent_misses_share_one_query(
    keys: KeyService, account_id: str, engine: AsyncEngine, queries: QueryCounter
) -> None:
    _, secret = await keys.create_key(account_id=account_id, name="k")
    auth = KeyAuthenticator(engine, ttl_s=60)
    before = queries.count
    results = await asyncio.gather(*(auth.authenticate(bearer(secret)) for _ in range(10)))
    assert len({result.key_id for result in results}) == 1
    assert queries.count == before + 1


async def test_unknown_keys_are_cached_but_new_keys_work_at_once(
    keys: KeyService, account_id: str, engine: AsyncEngine, queries: QueryCounter
) -> None:
    auth = KeyAuthenticator(engine, ttl_s=60)
    unknown = generate_secret()
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(bearer(unknown))
    assert queries.count == 1
    # a key created after the authenticator saw other misses is found immediately
    _, secret = await keys.create_key(account_id=account_id, name="k")
    await auth.authenticate(bearer(secret))


async def test_invalidate_stops_a_revoked_key_at_once(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    record, secret = await keys.create_key(account_id=account_id, name="k")
    auth = KeyAuthenticator(engine, ttl_s=3600)
    await auth.authenticate(bearer(secret))
    await keys.revoke_key(record.id)
    await auth.authenticate(bearer(secret))  # still cached: this process was not told
    auth.invalidate(record.key_hash)
    with pytest.raises(PermissionDenied):
        await auth.authenticate(bearer(secret))


async def test_invalidate_all_applies_a_suspension_at_once(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    _, secret = await keys.create_key(account_id=account_id, name="k")
    auth = KeyAuthenticator(engine, ttl_s=3600)
    await auth.authenticate(bearer(secret))
    await set_account_status(engine, account_id, "suspended")
    auth.invalidate_all()
    with pytest.raises(PermissionDenied) as caught:
        await auth.authenticate(bearer(secret))
    assert caught.value.code == "ACCOUNT_SUSPENDED"


async def test_another_process_stops_a_revoked_key_within_the_ttl(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    record, secret = await keys.create_key(account_id=account_id, name="k")
    clock = FakeClock()
    other_process = KeyAuthenticator(engine, ttl_s=2.0, clock=clock)
    await other_process.authenticate(bearer(secret))

    await keys.revoke_key(record.id)  # done by the admin API of a different process
    clock.now += 1.9
    await other_process.authenticate(bearer(secret))  # inside the documented window
    clock.now += 0.2
    with pytest.raises(PermissionDenied) as caught:
        await other_process.authenticate(bearer(secret))
    assert caught.value.code == "KEY_REVOKED"


async def test_rotation_stops_the_old_secret(
    keys: KeyService, account_id: str, engine: AsyncEngine
) -> None:
    record, old = await keys.create_key(account_id=account_id, name="k")
    auth = KeyAuthenticator(engine, ttl_s=3600)
    await auth.authenticate(bearer(old))
    _, new = await keys.rotate_key(record.id)
    auth.invalidate(record.key_hash)
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(old))
    assert (await auth.authenticate(bearer(new))).key_id == record.id


async def test_the_cache_is_bounded(keys: KeyService, engine: AsyncEngine) -> None:
    account_id = await create_account(engine)
    auth = KeyAuthenticator(engine, max_entries=3, max_unknown_entries=2)
    secrets = [(await keys.create_key(account_id=account_id, name=f"k{i}"))[1] for i in range(5)]
    for secret in secrets:
        await auth.authenticate(bearer(secret))
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(bearer(generate_secret()))
    assert len(auth._known) == 3
    assert len(auth._unknown) == 2


async def test_unknown_keys_spend_a_per_address_budget_before_any_query(
    keys: KeyService, account_id: str, engine: AsyncEngine, queries: QueryCounter
) -> None:
    clock = FakeClock()
    throttle = FailureThrottle(what="API key", burst=5, refill_s=10, clock=clock)
    auth = KeyAuthenticator(engine, failure_throttle=throttle, clock=clock)
    _, valid = await keys.create_key(account_id=account_id, name="ci")
    await auth.authenticate(bearer(valid), address="10.0.0.9")  # cached as valid
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await auth.authenticate(bearer(generate_secret()), address="10.0.0.1")
    before = queries.count
    for _ in range(200):  # a flood of fresh random keys: no database work at all
        with pytest.raises(RateLimited) as caught:
            await auth.authenticate(bearer(generate_secret()), address="10.0.0.1")
    assert queries.count == before
    assert int(caught.value.headers()["retry-after"]) >= 1
    # a valid key already cached keeps working from the throttled address (shared NAT)
    await auth.authenticate(bearer(valid), address="10.0.0.1")
    # another address has its own budget
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(generate_secret()), address="10.0.0.2")
    clock.now += 10
    with pytest.raises(AuthenticationError):  # one refilled attempt, answered normally
        await auth.authenticate(bearer(generate_secret()), address="10.0.0.1")


async def test_unknown_keys_are_remembered_longer_than_known_ones(
    engine: AsyncEngine, queries: QueryCounter
) -> None:
    clock = FakeClock()
    auth = KeyAuthenticator(engine, ttl_s=2, unknown_ttl_s=300, clock=clock)
    unknown = generate_secret()
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(unknown))
    before = queries.count
    clock.now += 200
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(unknown))
    assert queries.count == before
    clock.now += 101
    with pytest.raises(AuthenticationError):
        await auth.authenticate(bearer(unknown))
    assert queries.count > before
