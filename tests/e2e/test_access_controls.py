"""What an operator can switch off, seen from the SDK: a suspended account, a key's expiry,
and the operator-wide default key limits (SPEC 4 and 5). None of the refusals costs anything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import openai
import pytest

from tests.e2e.conftest import Env
from tests.support import factories
from tests.support.books import assert_books_balance


def books(env: Env) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, env.account_id)

    return int(env.run(read))


def generate(env: Env, secret: str | None = None) -> object:
    return env.client(secret).images.generate(model="local-preview", prompt="x")


def test_a_suspended_account_is_refused_at_once_and_can_come_back(env: Env) -> None:
    generate(env)  # the key is in the gateway's cache now
    before = books(env)
    with env.admin() as admin:
        suspended = admin.patch(f"/accounts/{env.account_id}", json={"status": "suspended"})
        assert suspended.json()["status"] == "suspended"
        with pytest.raises(openai.PermissionDeniedError) as info:
            generate(env)
        assert (info.value.status_code, info.value.code) == (403, "ACCOUNT_SUSPENDED")
        assert info.value.response.headers["x-should-retry"] == "false"
        with pytest.raises(openai.PermissionDeniedError):
            env.client().models.list()
        # money can still come in while suspended; none goes out
        credit = admin.post(f"/accounts/{env.account_id}/credits", json={"amount": "1"})
        assert credit.status_code == 200
        assert books(env) == before + 1_000_000

        admin.patch(f"/accounts/{env.account_id}", json={"status": "active"})
        result = env.client().images.generate(model="local-preview", prompt="x")
    assert result.to_dict()["usage"]["cost"]["total_cost"] == 0.001
    assert books(env) == before + 1_000_000 - 1_000


@pytest.mark.gateway(settings={"key_cache_ttl_s": 3600})  # cached for the whole test
def test_a_key_stops_at_its_expiry_even_while_cached(env: Env) -> None:
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    with env.admin() as admin:
        created = admin.post(
            f"/accounts/{env.account_id}/keys",
            json={"name": "temp", "expires_at": expires_at.isoformat()},
        )
        assert created.status_code == 201, created.text
        key = created.json()
        shown = admin.get(f"/keys/{key['id']}").json()
    assert abs(datetime.fromisoformat(shown["expires_at"]) - expires_at) < timedelta(milliseconds=1)
    generate(env, key["key"])  # works, and is cached for GATEWAY_KEY_CACHE_TTL_S (1 h here)
    before = books(env)
    # the gateway's wall clock (injected; the key cache's own TTL clock does not move)
    # reaches the expiry while the key is still cached
    env.gateway.app.state.gateway.authenticator.now = lambda: expires_at
    with pytest.raises(openai.PermissionDeniedError) as info:
        generate(env, key["key"])
    assert (info.value.status_code, info.value.code) == (403, "KEY_EXPIRED")
    assert books(env) == before
    generate(env)  # the account's other keys are untouched


@pytest.mark.gateway(settings={"default_key_rpm": 1})
def test_the_operator_wide_default_rpm_applies_to_keys_without_one(env: Env) -> None:
    async def keys(engine):  # type: ignore[no-untyped-def]
        _, plain = await factories.make_key(engine, env.account_id)
        _, generous = await factories.make_key(engine, env.account_id, rpm=100)
        return plain, generous

    plain, generous = env.run(keys)
    generate(env, plain)
    with pytest.raises(openai.RateLimitError) as info:
        generate(env, plain)
    assert info.value.code == "RATE_LIMITED"
    generate(env, generous)
    generate(env, generous)  # the key's own rpm wins over the default
