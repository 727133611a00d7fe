"""The paid request's lifecycle (issue 6) against a live gateway, on SQLite and Postgres:
overlapping requests under one Idempotency-Key, clients that hang up, failures after the
charge, requests that outlive their hold, fanned-out token-priced calls, rotated keys reading
replays, and refusals that come before the gateway looks at uploads.

The provider is the real-HTTP mock OpenAI upstream; its `gate` holds every answer until the
test opens it, so "while the first request is still running" is a fact, not a timing guess.
The `env` fixture checks afterwards that every account's books balance and that no request is
left `pending` and no Idempotency-Key `in_progress`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import text

from app.images import service as image_service
from app.ledger.service import Ledger
from tests.e2e.conftest import Env
from tests.e2e.helpers import balance
from tests.support import factories
from tests.support.live import LiveGateway

PRICE = 11_000  # gpt-image-1, quality low, 1024x1024
BODY: dict[str, Any] = {
    "model": "gpt-image-1",
    "prompt": "a lighthouse",
    "quality": "low",
    "size": "1024x1024",
}


def generation_calls(env: Env) -> int:
    return sum(1 for r in env.upstream.requests if r.path.endswith("/images/generations"))


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def gate(env: Env) -> Iterator[threading.Event]:
    """Hold every upstream answer until the test sets the event (set again at teardown)."""
    event = threading.Event()
    env.upstream.gate = event
    yield event
    event.set()


def key_state(env: Env, idempotency_key: str) -> str | None:
    async def read(engine):  # type: ignore[no-untyped-def]
        async with engine.connect() as connection:
            return (
                await connection.execute(
                    text("SELECT state FROM idempotency_records WHERE idem_key = :k"),
                    {"k": idempotency_key},
                )
            ).scalar_one_or_none()

    state: str | None = env.run(read)
    return state


def raw_request(env: Env, body: dict[str, Any], idempotency_key: str) -> socket.socket:
    """Send a generation over a bare socket (the caller hangs up by closing it)."""
    payload = orjson.dumps(body)
    sock = socket.create_connection(("127.0.0.1", env.gateway.port), timeout=10)
    sock.sendall(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: gateway\r\n"
        + f"Authorization: Bearer {env.secret}\r\n".encode()
        + f"Idempotency-Key: {idempotency_key}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def sse_text(env: Env, body: dict[str, Any], idempotency_key: str) -> str:
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{env.gateway.base_url}/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {env.secret}", "Idempotency-Key": idempotency_key},
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        return response.read().decode()


# Rule 1 ---------------------------------------------------------------------------------------
@pytest.mark.gateway(settings={"idempotency_ttl_s": 1})
def test_overlapping_requests_with_one_key_call_the_provider_once_whatever_the_ttl(
    env: Env, gate: threading.Event
) -> None:
    """The second request arrives after the 1 s replay TTL ran out while the first is still
    at the provider: it is 409 in progress, not a second call and a second charge."""
    before = balance(env)
    client = env.client(timeout=60)
    results: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            results[name] = client.images.generate(
                **BODY, extra_headers={"Idempotency-Key": "overlap"}
            )
        except openai.APIStatusError as exc:
            results[name] = exc

    first = threading.Thread(target=call, args=("first",))
    first.start()
    wait_for(lambda: generation_calls(env) == 1, "the first request to reach the provider")
    time.sleep(1.5)  # past the replay TTL (not a race: the first cannot finish, the gate holds)
    second = threading.Thread(target=call, args=("second",))
    second.start()
    second.join(10)  # today's bug: the second is at the provider too, held by the gate
    gate.set()
    first.join(30)
    second.join(30)
    assert isinstance(results["first"], openai.types.ImagesResponse)
    refused = results["second"]
    assert isinstance(refused, openai.ConflictError), refused
    assert refused.code == "IDEMPOTENCY_KEY_IN_PROGRESS"
    assert generation_calls(env) == 1
    assert balance(env) == before - PRICE


# Rule 2 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_client_that_hangs_up_is_charged_and_replayed_once(
    env: Env, gate: threading.Event, stream: bool
) -> None:
    """SPEC 1.4: billing is identical for streams. The provider made the image after the
    client left: charged once AND stored, so the retry is a replay, not a second charge."""
    before = balance(env)
    body = {**BODY, "stream": stream}
    sock = raw_request(env, body, "hang-up")
    wait_for(lambda: generation_calls(env) == 1, "the request to reach the provider")
    sock.close()  # the client hangs up while the provider works
    time.sleep(0.3)  # let the gateway see the disconnect before the provider answers
    gate.set()
    wait_for(lambda: key_state(env, "hang-up") != "in_progress", "the request to end")
    assert key_state(env, "hang-up") == "done"
    assert balance(env) == before - PRICE
    # the retry: the same bytes under the same key
    replay = httpx.post(
        f"{env.gateway.base_url}/images/generations",
        content=orjson.dumps(body),
        headers={
            "Authorization": f"Bearer {env.secret}",
            "Idempotency-Key": "hang-up",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert replay.status_code == 200
    if stream:
        assert replay.text.count("event: image_generation.completed") == 1
    else:
        assert replay.json()["data"][0]["b64_json"]
    assert generation_calls(env) == 1  # replayed, not generated again
    assert balance(env) == before - PRICE


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_client_that_hangs_up_before_a_provider_failure_pays_nothing(
    env: Env, gate: threading.Event, stream: bool
) -> None:
    before = balance(env)
    env.upstream.fail_next(500)
    sock = raw_request(env, {**BODY, "stream": stream}, "hang-up-fail")
    wait_for(lambda: generation_calls(env) == 1, "the request to reach the provider")
    sock.close()
    gate.set()
    wait_for(lambda: key_state(env, "hang-up-fail") is None, "the key to be given up")
    assert balance(env) == before
    # the key is free: the retry runs (and is charged) once
    env.client().images.generate(**BODY, extra_headers={"Idempotency-Key": "hang-up-fail"})
    assert generation_calls(env) == 2
    assert balance(env) == before - PRICE


# Rule 3 ---------------------------------------------------------------------------------------
FAIL_STORE_SQLITE = """
CREATE TRIGGER fail_store BEFORE UPDATE ON idempotency_records WHEN NEW.state = 'done'
BEGIN SELECT RAISE(ABORT, 'storage failure'); END
"""
FAIL_STORE_POSTGRES = (
    "CREATE OR REPLACE FUNCTION fail_store() RETURNS trigger AS $$"
    " BEGIN RAISE EXCEPTION 'storage failure'; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER fail_store BEFORE UPDATE ON idempotency_records FOR EACH ROW"
    " WHEN (NEW.state = 'done') EXECUTE FUNCTION fail_store()",
)


def storage_fails(env: Env, failing: bool) -> None:
    """Make storing a response under an Idempotency-Key fail in the database itself."""

    async def run(engine):  # type: ignore[no-untyped-def]
        postgres = engine.dialect.name == "postgresql"
        async with engine.begin() as connection:
            if not failing:
                await connection.execute(
                    text(
                        "DROP TRIGGER IF EXISTS fail_store" + (" ON idempotency_records" * postgres)
                    )
                )
            elif postgres:
                for statement in FAIL_STORE_POSTGRES:
                    await connection.execute(text(statement))
            else:
                await connection.execute(text(FAIL_STORE_SQLITE))

    env.run(run)


def test_a_response_that_cannot_be_stored_is_still_delivered_and_frees_its_key(env: Env) -> None:
    before = balance(env)
    storage_fails(env, True)
    try:
        response = env.client().images.with_raw_response.generate(
            **BODY, extra_headers={"Idempotency-Key": "unstorable"}
        )
    finally:
        storage_fails(env, False)
    assert response.status_code == 200
    assert response.parse().data[0].b64_json  # paid for and delivered
    assert balance(env) == before - PRICE
    assert key_state(env, "unstorable") is None  # not stuck in progress for the lease


def test_a_response_that_cannot_be_rendered_is_refunded(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = balance(env)

    def broken(**_: object) -> bytes:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(image_service, "render_body", broken)
    with pytest.raises(openai.InternalServerError) as info:
        env.client().images.generate(**BODY, extra_headers={"Idempotency-Key": "unrenderable"})
    assert info.value.status_code == 500
    assert balance(env) == before  # refunded, not charged for nothing
    assert key_state(env, "unrenderable") is None
    monkeypatch.undo()
    env.client().images.generate(**BODY, extra_headers={"Idempotency-Key": "unrenderable"})
    assert balance(env) == before - PRICE


# Rule 4 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_request_swept_while_running_is_not_reported_as_charged(
    env: Env, gate: threading.Event, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    before = balance(env)
    result: dict[str, Any] = {}

    def call() -> None:
        if stream:
            result["text"] = sse_text(env, {**BODY, "stream": True}, "swept")
        else:
            client = env.client(timeout=60)
            result["body"] = client.images.with_raw_response.generate(
                **BODY, extra_headers={"Idempotency-Key": "swept"}
            ).http_response.json()

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: generation_calls(env) == 1, "the request to reach the provider")

    async def sweep(engine):  # type: ignore[no-untyped-def]
        return await Ledger(engine).sweep(older_than_s=0)  # another process's sweeper

    assert env.run(sweep) == 1
    with caplog.at_level(logging.ERROR, logger="app.images.admission"):
        gate.set()
        caller.join(30)
        wait_for(lambda: key_state(env, "swept") == "done", "the response to be stored")
    if stream:
        completed = [
            line for line in result["text"].splitlines() if "image_generation.completed" in line
        ]
        usage = orjson.loads(completed[-1].removeprefix("data: "))["usage"]
    else:
        usage = result["body"]["usage"]
    assert usage["cost"]["total_cost"] == 0  # what the ledger took: nothing
    assert balance(env) == before
    assert any("settled late" in record.getMessage() for record in caplog.records)


# Rule 5 ---------------------------------------------------------------------------------------
FANNED_OUT_TOKENS = pytest.mark.gateway(
    providers="""
  mockfan:
    adapter: openai
    allow_private_network: true
    base_url: {upstream}
    api_key: ${TEST_MOCK_UPSTREAM_KEY}
    options: {fan_out: true}
""",
    models="""
  token-model:
    routes: [{provider: mockfan, upstream_model: gpt-image-1}]
    max_n: 4
    parameters:
      image_size: {type: enum, values: [1024x1024], default: 1024x1024}
      quality: {type: enum, values: [low], default: low}
    pricing:
      per_token: {input_per_million: 1000, output_per_million: 40, max_output_tokens_per_image: 272}
  token-model-tight:
    routes: [{provider: mockfan, upstream_model: gpt-image-1}]
    max_n: 4
    parameters:
      image_size: {type: enum, values: [1024x1024], default: 1024x1024}
      quality: {type: enum, values: [low], default: low}
    pricing:
      per_token:
        input_per_million: 1000
        output_per_million: 40
        max_output_tokens_per_image: 272
        max_input_tokens: 1
""",
)


@FANNED_OUT_TOKENS
def test_a_fanned_out_token_priced_request_is_held_and_charged_in_full(env: Env) -> None:
    """n = 2 as two upstream calls, each billed for the prompt (1 token at $1000/M: the
    prompt's 1 byte is its whole bound) and 272 output tokens: the hold covers both calls,
    so the charge is the real usage, not the hold of a single call's input."""
    before = balance(env)
    response = env.client().images.generate(model="token-model", prompt="x", n=2)
    assert len(response.data) == 2
    assert generation_calls(env) == 2
    expected = 2 * (1 * 1000 + 272 * 40)
    assert response.to_dict()["usage"]["cost"]["total_cost"] == expected / 1_000_000
    assert balance(env) == before - expected


@FANNED_OUT_TOKENS
def test_usage_above_the_hold_is_logged_as_an_error_with_the_amount(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator bounded the input at 1 token, the provider bills 3 per call: charged the
    hold, and the shortfall is an error in the log (with both amounts)."""
    before = balance(env)
    hold = 2 * (1 * 1000 + 272 * 40)
    with caplog.at_level(logging.ERROR, logger="app.images.service"):
        response = env.client().images.generate(
            model="token-model-tight", prompt="a tall lighthouse", n=2
        )
    assert balance(env) == before - hold
    assert response.to_dict()["usage"]["cost"]["total_cost"] == hold / 1_000_000
    usage_cost = 2 * (3 * 1000 + 272 * 40)
    [logged] = [r for r in caplog.records if "above its hold" in r.getMessage()]
    assert str(usage_cost) in logged.getMessage() and str(hold) in logged.getMessage()


# Rule 6 ---------------------------------------------------------------------------------------
@pytest.mark.gateway(settings={"key_cache_ttl_s": 300})
@pytest.mark.parametrize("action", ["rotate", "revoke"])
def test_a_rotated_or_revoked_secret_cannot_read_replays_on_another_process(
    env: Env, action: str
) -> None:
    first = env.client().images.with_raw_response.generate(
        **BODY, extra_headers={"Idempotency-Key": "secret-order"}
    )
    assert first.status_code == 200
    with LiveGateway(
        database_url=env.database_url, catalog_path=env.catalog_path, key_cache_ttl_s=300
    ) as other:
        other_client = openai.OpenAI(base_url=other.base_url, api_key=env.secret, max_retries=0)
        assert other_client.models.list().data  # the other process now caches the key
        with env.admin() as admin:
            changed = admin.post(f"/keys/{env.key_id}/{action}")
            assert changed.status_code == 200, changed.text
        with pytest.raises(openai.APIStatusError) as info:
            other_client.images.generate(**BODY, extra_headers={"Idempotency-Key": "secret-order"})
    expected = (401, "INVALID_API_KEY") if action == "rotate" else (403, "KEY_REVOKED")
    assert (info.value.status_code, info.value.code) == expected  # type: ignore[attr-defined]
    assert generation_calls(env) == 1


# Issue 7, "pay before you work" ---------------------------------------------------------------
def edit_upload(env: Env, secret: str, image: bytes) -> httpx.Response:
    return httpx.post(
        f"{env.gateway.base_url}/images/edits",
        headers={"Authorization": f"Bearer {secret}"},
        data={"model": "local-preview", "prompt": "x"},
        files={"image": ("x.png", image, "image/png")},
        timeout=30,
    )


def test_a_key_that_cannot_pay_is_refused_before_its_uploads_are_looked_at(env: Env) -> None:
    """A $0 account gets 402 and an rpm-limited key 429, not the 400 that reading the
    (unreadable) upload would give: the refusal comes before the work."""

    async def keys(engine):  # type: ignore[no-untyped-def]
        broke = await factories.make_account(engine, balance_micros=0)
        _, broke_secret = await factories.make_key(engine, broke)
        _, limited_secret = await factories.make_key(engine, env.account_id, rpm=1)
        return broke_secret, limited_secret

    broke_secret, limited_secret = env.run(keys)
    junk = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # a PNG signature and nothing readable
    unpaid = edit_upload(env, broke_secret, junk)
    assert (unpaid.status_code, unpaid.json()["error"]["code"]) == (402, "INSUFFICIENT_BALANCE")
    first = edit_upload(env, limited_secret, junk)  # admitted, then refused for the image
    assert (first.status_code, first.json()["error"]["code"]) == (400, "INVALID_IMAGE")
    limited = edit_upload(env, limited_secret, junk)
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "RATE_LIMITED")


def json_edit_upload(env: Env, secret: str, data_uri: str) -> httpx.Response:
    return httpx.post(
        f"{env.gateway.base_url}/images/edits",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "local-preview", "prompt": "x", "images": [{"image_url": data_uri}]},
        timeout=30,
    )


def test_a_key_that_cannot_pay_is_refused_before_its_data_uris_are_decoded(env: Env) -> None:
    """The JSON spelling: the data URI's base64 is decoded only once paid for, so a $0
    account gets 402 and an rpm-limited key 429 for a URI that would not even decode (400
    INVALID_IMAGE once admitted: the first request of the limited key)."""

    async def keys(engine):  # type: ignore[no-untyped-def]
        broke = await factories.make_account(engine, balance_micros=0)
        _, broke_secret = await factories.make_key(engine, broke)
        _, limited_secret = await factories.make_key(engine, env.account_id, rpm=1)
        return broke_secret, limited_secret

    broke_secret, limited_secret = env.run(keys)
    undecodable = "data:image/png;base64," + "@" * 6000  # long enough to be kept as bytes
    unpaid = json_edit_upload(env, broke_secret, undecodable)
    assert (unpaid.status_code, unpaid.json()["error"]["code"]) == (402, "INSUFFICIENT_BALANCE")
    first = json_edit_upload(env, limited_secret, undecodable)  # admitted, then decoded: 400
    assert (first.status_code, first.json()["error"]["code"]) == (400, "INVALID_IMAGE")
    assert first.json()["error"]["param"] == "images[0]"
    limited = json_edit_upload(env, limited_secret, undecodable)
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "RATE_LIMITED")
