"""Every 503 tells the client when to come back, and no error names an internal address.

SPEC 2: 503 `UPSTREAM_UNAVAILABLE` / `SERVICE_UNAVAILABLE` carry `Retry-After`. A model with a
single route whose provider is down used to answer 503 without one, with a message quoting the
provider's host and port ("cannot reach 127.0.0.1:40123 (ConnectError)"). Also here: a `user`
no column can hold is a 400 naming it (Postgres used to answer 503 "retry").
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import Env
from tests.support.books import assert_books_balance
from tests.support.processes import free_port

DEAD_PORT = free_port()  # bound and closed: nothing listens there
DEAD = f"""
  dead:
    adapter: openai
    allow_private_network: true
    base_url: http://127.0.0.1:{DEAD_PORT}/v1
    api_key: sk-dead-0123456789
"""
DEAD_MODELS = """
  dead-model:
    routes: [{provider: dead}]
    pricing: {per_image: 0.01}
  busy-model:
    routes: [{provider: mockai}]
    pricing: {per_image: 0.01}
"""
pytestmark = pytest.mark.gateway(providers=DEAD, models=DEAD_MODELS)


def books(env: Env) -> int:
    return int(env.run(lambda engine: assert_books_balance(engine, env.account_id)))


def assert_no_address(text: str, *extra: str) -> None:
    for address in ("127.0.0.1", str(DEAD_PORT), "localhost", "http://", *extra):
        assert address not in text, text


def test_a_single_route_provider_that_is_down_is_503_with_retry_after(env: Env) -> None:
    before = books(env)
    with pytest.raises(openai.APIStatusError) as caught:
        env.client().images.generate(model="dead-model", prompt="a lighthouse")
    error = caught.value
    assert error.status_code == 503
    assert error.code == "UPSTREAM_UNAVAILABLE"
    assert int(error.response.headers["retry-after"]) >= 1
    assert_no_address(error.response.text)
    assert books(env) == before


def test_a_provider_503_without_its_own_retry_after_still_gets_one(env: Env) -> None:
    env.upstream.fail_next(503, {"error": {"message": f"overloaded, see {env.upstream.base_url}"}})
    with pytest.raises(openai.APIStatusError) as caught:
        env.client().images.generate(model="busy-model", prompt="a lighthouse")
    error = caught.value
    assert error.status_code == 503
    assert int(error.response.headers["retry-after"]) >= 1
    assert_no_address(error.response.text, env.upstream.base_url.split("//")[1])


def test_a_stream_whose_provider_is_down_ends_in_an_error_naming_no_address(env: Env) -> None:
    with httpx.stream(
        "POST",
        f"{env.gateway.base_url}/images/generations",
        json={"model": "dead-model", "prompt": "a lighthouse", "stream": True},
        headers={"Authorization": f"Bearer {env.secret}"},
        timeout=60,
    ) as response:
        body = response.read().decode()
    if response.status_code == 200:  # the error came after the first byte
        assert "event: error" in body, body
        data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
        assert json.loads(data[-1])["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    else:
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
    assert_no_address(body)


def test_a_user_with_a_nul_character_is_a_400_naming_user(env: Env) -> None:
    before = books(env)
    with pytest.raises(openai.BadRequestError) as caught:
        env.client().images.generate(model="local-preview", prompt="x", user="team\x00a")
    assert caught.value.code == "INVALID_PARAMETER"
    assert caught.value.param == "user"
    assert books(env) == before
    # and a user that fits is stored as sent
    env.client().images.generate(model="local-preview", prompt="x", user="team-a")
