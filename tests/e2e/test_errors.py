"""Every SPEC 2 error row the generation and models endpoints can produce, as the SDK sees it:
the right exception class, status, `code`, `param`, and the `x-should-retry` / `x-request-id`
headers. Nothing is charged for any of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from tests.e2e.conftest import Env
from tests.support import factories
from tests.support.books import assert_books_balance


def books(env: Env) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, env.account_id)

    return env.run(read)


def expect(
    exc_class: type[openai.APIStatusError],
    status: int,
    code: str,
    call,
    param: str | None = None,  # type: ignore[no-untyped-def]
) -> openai.APIStatusError:
    with pytest.raises(exc_class) as info:
        call()
    error = info.value
    assert error.status_code == status
    assert error.code == code, error.body
    if param is not None:
        assert error.param == param
    assert error.response.headers.get("x-request-id")
    if 400 <= status < 500 and status not in (408, 409, 429):
        assert error.response.headers.get("x-should-retry") == "false"
    return error


def test_bad_requests_are_400_and_free(env: Env) -> None:
    before = books(env)
    client = env.client()
    gen = client.images.generate
    expect(
        openai.BadRequestError,
        400,
        "MODEL_NOT_FOUND",
        lambda: gen(model="nope", prompt="x"),
        "model",
    )
    expect(
        openai.BadRequestError,
        400,
        "PROMPT_TOO_LONG",
        lambda: gen(model="local-preview", prompt="x" * 1001),
        "prompt",
    )
    expect(
        openai.BadRequestError,
        400,
        "INVALID_PARAMETER",
        lambda: gen(model="local-preview", prompt="x", n=5),
        "n",
    )
    expect(
        openai.BadRequestError,
        400,
        "INVALID_PARAMETER",
        lambda: gen(model="pixel-model", prompt="x", output_format="jpeg"),
        "output_format",
    )
    expect(
        openai.BadRequestError,
        400,
        "INVALID_PARAMETER",
        lambda: gen(model="local-preview", prompt="x", extra_body={"width": 65}),
        "width",
    )
    expect(
        openai.BadRequestError,
        400,
        "INVALID_PARAMETER",
        lambda: gen(model="vendor/tier-model", prompt="x", extra_body={"resolution": "8K"}),
        "resolution",
    )
    expect(
        openai.BadRequestError,
        400,
        "INVALID_PARAMETER",
        lambda: gen(model="local-preview", prompt="x", size="big"),
        "size",
    )
    expect(
        openai.BadRequestError,
        400,
        "MISSING_PARAMETER",
        lambda: client.post(
            "/images/generations", body={"model": "local-preview"}, cast_to=httpx.Response
        ),
        "prompt",
    )
    expect(
        openai.BadRequestError,
        400,
        "MODEL_NOT_FOUND",
        lambda: gen(model="hidden-model", prompt="x"),
        "model",
    )
    assert books(env) == before


def test_malformed_json_is_400_not_500(env: Env) -> None:
    for body in (b"{not json", b"[1, 2]", b"", b'"text"'):
        response = httpx.post(
            f"{env.gateway.base_url}/images/generations",
            content=body,
            headers={"Authorization": f"Bearer {env.secret}", "Content-Type": "application/json"},
        )
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "INVALID_REQUEST"
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_authentication_errors(env: Env) -> None:
    gen = lambda client: lambda: client.images.generate(model="local-preview", prompt="x")  # noqa: E731
    expect(openai.AuthenticationError, 401, "INVALID_API_KEY", gen(env.client("sk-wrong")))
    expect(openai.AuthenticationError, 401, "INVALID_API_KEY", gen(env.client("not-a-key")))
    response = httpx.get(f"{env.gateway.base_url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_API_KEY"
    assert response.headers["x-should-retry"] == "false"


def test_permission_errors(env: Env) -> None:
    async def keys(engine):  # type: ignore[no-untyped-def]
        _, revoked = await factories.make_key(engine, env.account_id, revoked=True)
        _, expired = await factories.make_key(
            engine, env.account_id, expires_at=datetime.now(UTC) - timedelta(minutes=1)
        )
        _, limited = await factories.make_key(engine, env.account_id, models=["gpt-image-1"])
        return revoked, expired, limited

    revoked, expired, limited = env.run(keys)

    def gen(secret):
        return lambda: env.client(secret).images.generate(model="local-preview", prompt="x")

    expect(openai.PermissionDeniedError, 403, "KEY_REVOKED", gen(revoked))
    expect(openai.PermissionDeniedError, 403, "KEY_EXPIRED", gen(expired))
    expect(openai.PermissionDeniedError, 403, "MODEL_NOT_ALLOWED", gen(limited), "model")
    # the key only sees its own models
    assert [m.id for m in env.client(limited).models.list()] == ["gpt-image-1"]


def test_insufficient_balance_is_402(env: Env) -> None:
    async def poor(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=10_000)  # $0.01
        _, secret = await factories.make_key(engine, account)
        return secret

    secret = env.run(poor)
    error = expect(
        openai.APIStatusError,
        402,
        "INSUFFICIENT_BALANCE",
        lambda: env.client(secret).images.generate(model="gpt-image-1", prompt="x", quality="high"),
    )
    assert error.type == "insufficient_quota"  # type: ignore[attr-defined]


def test_upstream_failure_is_502_and_refunded(env: Env) -> None:
    before = books(env)
    env.upstream.fail_next(500, {"error": {"message": "boom", "type": "server_error"}})
    expect(
        openai.InternalServerError,
        502,
        "UPSTREAM_ERROR",
        lambda: env.client().images.generate(model="gpt-image-1", prompt="x"),
    )
    assert books(env) == before


def test_content_blocked_is_400_and_refunded(env: Env) -> None:
    before = books(env)
    expect(
        openai.BadRequestError,
        400,
        "CONTENT_BLOCKED",
        lambda: env.client().images.generate(model="gpt-image-1", prompt="BLOCKME please"),
    )
    assert books(env) == before


def test_upstream_credentials_never_leak(env: Env) -> None:
    env.upstream.fail_next(
        401, {"error": {"message": "Incorrect API key provided: sk-upst****6789"}}
    )
    error = expect(
        openai.InternalServerError,
        502,
        "UPSTREAM_ERROR",
        lambda: env.client().images.generate(model="gpt-image-1", prompt="x"),
    )
    assert "sk-upstream-secret" not in error.response.text


def test_request_id_is_echoed_or_generated(env: Env) -> None:
    headers = {"Authorization": f"Bearer {env.secret}"}
    mine = httpx.get(
        f"{env.gateway.base_url}/models", headers={**headers, "x-request-id": "abc-123"}
    )
    assert mine.headers["x-request-id"] == "abc-123"
    generated = httpx.get(f"{env.gateway.base_url}/models", headers=headers)
    assert generated.headers["x-request-id"].startswith("req_")
    missing = httpx.get(f"{env.gateway.url}/no/such/route")
    assert missing.status_code == 404
    assert missing.headers["x-request-id"]
    assert missing.json()["error"]["code"] == "NOT_FOUND"


def test_models_lookup_404(env: Env) -> None:
    with pytest.raises(openai.NotFoundError):
        env.client().models.retrieve("no-such-model")
