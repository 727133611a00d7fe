from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import Conflict, InvalidParameter, NotFound
from app.keys.secrets import hash_secret, looks_like_key
from app.keys.service import KeyService
from tests.keys.conftest import create_account

pytestmark = pytest.mark.anyio


async def test_create_stores_only_the_hash(keys: KeyService, account_id: str) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    record, secret = await keys.create_key(
        account_id=account_id,
        name="  ci  ",
        models=["a", "b", "a"],
        rpm=60,
        max_concurrency=2,
        expires_at=expires,
    )
    assert looks_like_key(secret)
    assert record.key_hash == hash_secret(secret)
    assert record.prefix == secret[:11]
    assert record.name == "ci"
    assert record.models == ("a", "b")
    assert (record.rpm, record.max_concurrency) == (60, 2)
    assert record.expires_at == expires
    assert record.revoked_at is None
    assert record.created_at.tzinfo is not None
    assert await keys.get_key(record.id) == record


async def test_create_for_an_unknown_account_is_not_found(keys: KeyService) -> None:
    with pytest.raises(NotFound):
        await keys.create_key(account_id="acct_nope", name="x")


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("name", {"name": ""}),
        ("name", {"name": "x" * 201}),
        ("models", {"models": []}),
        ("models", {"models": [""]}),
        ("models", {"models": "gpt-image-1"}),
        ("rpm", {"rpm": 0}),
        ("rpm", {"rpm": True}),
        ("max_concurrency", {"max_concurrency": -1}),
        ("expires_at", {"expires_at": datetime(2099, 1, 1)}),
        ("expires_at", {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}),
    ],
)
async def test_create_validates_and_names_the_field(
    keys: KeyService, account_id: str, field: str, kwargs: dict[str, object]
) -> None:
    arguments: dict[str, object] = {"account_id": account_id, "name": "k", **kwargs}
    with pytest.raises(InvalidParameter) as caught:
        await keys.create_key(**arguments)  # type: ignore[arg-type]
    assert caught.value.param == field


async def test_list_pages_in_creation_order(keys: KeyService, engine: AsyncEngine) -> None:
    first = await create_account(engine)
    second = await create_account(engine)
    created = [(await keys.create_key(account_id=first, name=f"k{i}"))[0].id for i in range(5)]
    await keys.create_key(account_id=second, name="other")

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await keys.list_keys(account_id=first, limit=2, cursor=cursor)
        assert len(page) <= 2
        seen += [record.id for record in page]
        if cursor is None:
            break
    assert seen == created
    everything, cursor = await keys.list_keys(limit=50)
    assert len(everything) == 6 and cursor is None


async def test_list_rejects_a_bad_cursor(keys: KeyService) -> None:
    for cursor in ("garbage!", "WyJhIl0", "WyJub3QtYS1kYXRlIiwieCJd"):
        with pytest.raises(InvalidParameter) as caught:
            await keys.list_keys(cursor=cursor)
        assert caught.value.param == "cursor"


async def test_revoke_is_idempotent(keys: KeyService, account_id: str) -> None:
    record, _ = await keys.create_key(account_id=account_id, name="k")
    revoked = await keys.revoke_key(record.id)
    assert revoked.revoked
    again = await keys.revoke_key(record.id)
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        await keys.revoke_key("key_missing")


async def test_rotate_replaces_hash_and_prefix(keys: KeyService, account_id: str) -> None:
    record, old_secret = await keys.create_key(account_id=account_id, name="k", rpm=5)
    rotated, new_secret = await keys.rotate_key(record.id)
    assert new_secret != old_secret
    assert rotated.key_hash == hash_secret(new_secret)
    assert rotated.prefix == new_secret[:11]
    assert (rotated.id, rotated.rpm, rotated.created_at) == (record.id, 5, record.created_at)


async def test_rotate_refuses_revoked_and_unknown_keys(keys: KeyService, account_id: str) -> None:
    record, _ = await keys.create_key(account_id=account_id, name="k")
    await keys.revoke_key(record.id)
    with pytest.raises(Conflict):
        await keys.rotate_key(record.id)
    with pytest.raises(NotFound):
        await keys.rotate_key("key_missing")


async def test_delete_removes_the_row(keys: KeyService, account_id: str) -> None:
    record, _ = await keys.create_key(account_id=account_id, name="k")
    deleted = await keys.delete_key(record.id)
    assert deleted.key_hash == record.key_hash
    with pytest.raises(NotFound):
        await keys.get_key(record.id)
    with pytest.raises(NotFound):
        await keys.delete_key(record.id)
