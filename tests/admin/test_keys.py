from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.errors import AuthenticationError, PermissionDenied
from app.keys.secrets import hash_secret, looks_like_key
from tests.admin.conftest import AdminTestGateway, assert_error, create_account, create_key

pytestmark = pytest.mark.anyio

KEY_FIELDS = {
    "object", "id", "account_id", "name", "prefix", "models", "rpm", "max_concurrency",
    "expires_at", "revoked_at", "created_at", "budgets",
}  # fmt: skip


async def test_create_returns_the_secret_once(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = await create_key(
        client,
        account["id"],
        name="prod",
        models=["local-preview"],
        rpm=60,
        max_concurrency=4,
        expires_at=expires,
    )
    assert set(key) == KEY_FIELDS | {"key"}
    assert looks_like_key(key["key"])
    assert key["prefix"] == key["key"][:11]
    assert key["account_id"] == account["id"]
    assert (key["name"], key["models"], key["rpm"], key["max_concurrency"]) == (
        "prod", ["local-preview"], 60, 4,
    )  # fmt: skip
    assert datetime.fromisoformat(key["expires_at"]) == datetime.fromisoformat(expires)
    assert key["revoked_at"] is None

    fetched = (await client.get(f"/admin/v1/keys/{key['id']}")).json()
    assert set(fetched) == KEY_FIELDS
    assert key["key"] not in (await client.get(f"/admin/v1/keys/{key['id']}")).text
    assert fetched == {name: value for name, value in key.items() if name != "key"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "k", "models": []}, "models"),
        ({"name": "k", "models": "local-preview"}, "models"),
        ({"name": "k", "rpm": 0}, "rpm"),
        ({"name": "k", "rpm": "many"}, "rpm"),
        ({"name": "k", "max_concurrency": -2}, "max_concurrency"),
        ({"name": "k", "expires_at": "2099-01-01T00:00:00"}, "expires_at"),
        ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "secret": "sk-mine"}, "secret"),
    ],
)
async def test_create_validation_names_the_field(
    client: httpx.AsyncClient, body: dict[str, object], param: str
) -> None:
    account = await create_account(client)
    response = await client.post(f"/admin/v1/accounts/{account['id']}/keys", json=body)
    assert_error(response, 400, "INVALID_PARAMETER", param)


async def test_create_for_an_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/admin/v1/accounts/acct_missing/keys", json={"name": "k"})
    assert_error(response, 404, "ACCOUNT_NOT_FOUND")


async def test_list_filters_and_paginates(client: httpx.AsyncClient) -> None:
    first = await create_account(client, name="one")
    second = await create_account(client, name="two")
    mine = [(await create_key(client, first["id"], name=f"k{i}"))["id"] for i in range(3)]
    other = (await create_key(client, second["id"]))["id"]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"account_id": first["id"], "limit": 2} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/admin/v1/keys", params=params)).json()
        assert body["object"] == "list"
        assert all(set(key) == KEY_FIELDS for key in body["data"])
        seen += [key["id"] for key in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == mine
    every = (await client.get("/admin/v1/keys")).json()["data"]
    assert [key["id"] for key in every] == [*mine, other]


async def test_unknown_key_is_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/admin/v1/keys/key_missing"),
        ("POST", "/admin/v1/keys/key_missing/revoke"),
        ("POST", "/admin/v1/keys/key_missing/rotate"),
        ("DELETE", "/admin/v1/keys/key_missing"),
    ]:
        assert_error(await client.request(method, path), 404, "KEY_NOT_FOUND")


async def test_revoke_stops_the_key_at_once(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"])
    auth = gateway.authenticator
    await auth.authenticate(f"Bearer {key['key']}")  # now cached for an hour

    response = await client.post(f"/admin/v1/keys/{key['id']}/revoke")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    with pytest.raises(PermissionDenied) as caught:
        await auth.authenticate(f"Bearer {key['key']}")
    assert caught.value.code == "KEY_REVOKED"
    again = await client.post(f"/admin/v1/keys/{key['id']}/revoke")
    assert again.json()["revoked_at"] == response.json()["revoked_at"]


async def test_rotate_returns_a_new_secret_and_the_old_stops_at_once(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"], rpm=7)
    auth = gateway.authenticator
    await auth.authenticate(f"Bearer {key['key']}")

    response = await client.post(f"/admin/v1/keys/{key['id']}/rotate")
    assert response.status_code == 200
    rotated = response.json()
    assert rotated["id"] == key["id"] and rotated["rpm"] == 7
    assert rotated["key"] != key["key"] and looks_like_key(rotated["key"])
    assert rotated["prefix"] == rotated["key"][:11]
    with pytest.raises(AuthenticationError):
        await auth.authenticate(f"Bearer {key['key']}")
    assert (await auth.authenticate(f"Bearer {rotated['key']}")).key_id == key["id"]


async def test_a_revoked_key_cannot_be_rotated(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"])
    await client.post(f"/admin/v1/keys/{key['id']}/revoke")
    assert_error(await client.post(f"/admin/v1/keys/{key['id']}/rotate"), 409, "KEY_REVOKED")


async def test_delete_removes_the_key(client: httpx.AsyncClient, gateway: AdminTestGateway) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"])
    auth = gateway.authenticator
    await auth.authenticate(f"Bearer {key['key']}")

    response = await client.delete(f"/admin/v1/keys/{key['id']}")
    assert response.status_code == 200
    assert response.json() == {"object": "api_key", "id": key["id"], "deleted": True}
    assert_error(await client.get(f"/admin/v1/keys/{key['id']}"), 404, "KEY_NOT_FOUND")
    with pytest.raises(AuthenticationError):
        await auth.authenticate(f"Bearer {key['key']}")


async def test_suspending_the_account_stops_its_keys_at_once(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"])
    auth = gateway.authenticator
    await auth.authenticate(f"Bearer {key['key']}")

    await client.patch(f"/admin/v1/accounts/{account['id']}", json={"status": "suspended"})
    with pytest.raises(PermissionDenied) as caught:
        await auth.authenticate(f"Bearer {key['key']}")
    assert caught.value.code == "ACCOUNT_SUSPENDED"

    await client.patch(f"/admin/v1/accounts/{account['id']}", json={"status": "active"})
    assert (await auth.authenticate(f"Bearer {key['key']}")).account_id == account["id"]


async def test_only_the_hash_is_stored(
    client: httpx.AsyncClient, gateway: AdminTestGateway
) -> None:
    account = await create_account(client)
    key = await create_key(client, account["id"])
    record = await gateway.keys.get_key(key["id"])
    assert record.key_hash == hash_secret(key["key"])


async def test_an_unknown_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    # found by schemathesis: `?acount_id=` (a typo) silently listed every account's keys
    response = await client.get("/admin/v1/keys", params={"acount_id": "acct_x"})
    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["param"] == "acount_id"
    assert (await client.get("/admin/v1/keys", params={"limit": 5})).status_code == 200
