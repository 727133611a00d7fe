"""A whole served run at DEBUG never logs a secret or image bytes (issue 7 "Logs", SPEC 8).

`image-gateway serve` at `GATEWAY_LOG_LEVEL=debug` (console and JSON formats) goes through
generations, edits, streams with partial images, an Idempotency-Key replay, errors (unknown
model, unknown API key, a provider that rejects its key and echoes it, a provider 500) and
admin calls (accounts, keys created and rotated, credits, listings, a wrong admin token).
Then the whole log is scanned for every secret that crossed the process (API keys, the admin
token, provider keys) and for any run of 200 or more base64 characters.

The scan would pass on an empty log, so the test also checks the log saw the run: an access
line per request, with request ids, and DEBUG lines.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from tests.mocks.openai_upstream import MockOpenAIUpstream
from tests.support import factories
from tests.support.live import ADMIN_TOKEN
from tests.support.serve_command import ServeCommand
from tests.support.served import run_db

pytestmark = pytest.mark.slow

UPSTREAM_KEY = "sk-upstream-provider-key-for-hygiene-0123"
WRONG_PROVIDER_KEY = "sk-wrong-provider-key-the-mock-echoes-4567"
UNKNOWN_API_KEY = "sk-" + "U" * 43

CATALOG = """
providers:
  local:
    adapter: local-preview
  mockai:
    adapter: openai
    allow_private_network: true
    base_url: {upstream}
    api_key: ${{TEST_HYGIENE_UPSTREAM_KEY}}
  rejected:
    adapter: openai
    allow_private_network: true
    base_url: {upstream}
    api_key: ${{TEST_HYGIENE_WRONG_KEY}}
models:
  preview:
    routes: [{{provider: local}}]
    max_n: 2
    partial_images: true
    parameters:
      width:  {{type: integer, min: 64, max: 1024, default: 384}}
      height: {{type: integer, min: 64, max: 1024, default: 384}}
    edit: {{supported: true, max_reference_images: 2}}
    pricing: {{per_image: 0.001}}
  gpt-image-1:
    routes: [{{provider: mockai}}]
    parameters:
      quality: {{type: enum, values: [low, auto], default: low}}
    pricing: {{per_image: 0.01}}
  rejected-model:
    routes: [{{provider: rejected, upstream_model: gpt-image-1}}]
    pricing: {{per_image: 0.01}}
"""

BASE64_RUNS = (re.compile(r"[A-Za-z0-9+/]{200,}"), re.compile(r"[A-Za-z0-9_-]{200,}"))


@pytest.fixture
def postgres_url(postgres_session_url: str) -> str:
    from tests.support import databases

    asyncio.run(databases.truncate_postgres(postgres_session_url))
    return postgres_session_url


@pytest.fixture
def upstream() -> Iterator[MockOpenAIUpstream]:
    with MockOpenAIUpstream(api_key=UPSTREAM_KEY) as mock:
        yield mock


def png_bytes(size: tuple[int, int] = (256, 256)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buffer, "PNG")  # noise: long base64
    return buffer.getvalue()


def exercise(url: str, secret: str, upstream: MockOpenAIUpstream) -> tuple[list[str], int]:
    """Drive every kind of request; the secrets seen on the way and the number of requests."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=60)
    reference = png_bytes()
    requests = 0

    client.images.generate(model="preview", prompt="a lighthouse", n=2)
    client.images.generate(model="gpt-image-1", prompt="a harbour")
    for _ in client.images.generate(
        model="preview", prompt="streamed", stream=True, partial_images=2
    ):
        pass
    client.images.edit(model="preview", image=("ref.png", reference, "image/png"), prompt="warm")
    for _ in client.images.edit(
        model="preview",
        image=("ref.png", reference, "image/png"),
        prompt="streamed edit",
        stream=True,
        partial_images=1,
    ):
        pass
    headers = {"Idempotency-Key": "hygiene-1"}
    for _ in range(2):
        client.images.generate(model="preview", prompt="once", extra_headers=headers)
    requests += 7

    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="no-such-model", prompt="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key=UNKNOWN_API_KEY, max_retries=0).images.generate(
            model="preview", prompt="x"
        )
    with pytest.raises(openai.APIStatusError):
        client.images.generate(model="rejected-model", prompt="the provider refuses our key")
    upstream.fail_next(500, {"error": {"message": f"boom {UPSTREAM_KEY}", "type": "server"}})
    with pytest.raises(openai.APIStatusError):
        client.images.generate(model="gpt-image-1", prompt="a storm")
    requests += 4

    secrets = [secret, UNKNOWN_API_KEY]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=f"{url}/admin/v1", headers=admin, timeout=30) as http:
        account = http.post("/accounts", json={"name": "hygiene", "balance": 5}).json()
        key = http.post(f"/accounts/{account['id']}/keys", json={"name": "k"}).json()
        rotated = http.post(f"/keys/{key['id']}/rotate").json()
        http.post(f"/accounts/{account['id']}/credits", json={"amount": 1, "note": "top-up"})
        http.get("/requests", params={"limit": 5})
        http.get(f"/accounts/{account['id']}/ledger")
        wrong = http.get("/accounts", headers={"Authorization": "Bearer " + "w" * 40})
        assert wrong.status_code == 401
        requests += 7
        secrets += [key["key"], rotated["key"]]
    assert all(s.startswith("sk-") for s in secrets)
    return secrets, requests


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_debug_run_logs_no_secret_and_no_image(
    postgres_url: str, upstream: MockOpenAIUpstream, tmp_path: Path, log_format: str
) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG.format(upstream=upstream.base_url))

    async def seed(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=100_000_000)
        _, secret = await factories.make_key(engine, account)
        return secret

    secret = run_db(postgres_url, seed)
    with ServeCommand(
        database_url=postgres_url,
        catalog=catalog,
        log_dir=tmp_path,
        GATEWAY_LOG_LEVEL="debug",
        GATEWAY_LOG_FORMAT=log_format,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        TEST_HYGIENE_UPSTREAM_KEY=UPSTREAM_KEY,
        TEST_HYGIENE_WRONG_KEY=WRONG_PROVIDER_KEY,
    ) as served:
        secrets, requests = exercise(served.url, secret, upstream)
    log = served.log()

    for value in [*secrets, ADMIN_TOKEN, UPSTREAM_KEY, WRONG_PROVIDER_KEY]:
        assert value not in log, f"a secret ({value[:6]}...) is in the log"
    for pattern in BASE64_RUNS:
        found = pattern.search(log)
        assert found is None, f"base64 in the log: {found.group(0)[:60]}..."

    # the scan saw a real run
    lines = [line for line in log.splitlines() if line.strip()]
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        access = [r for r in records if r.get("event") == "access"]
        assert any(r["level"] == "debug" for r in records)
        assert all(r["request_id"] for r in access)
        assert {r["status"] for r in access} >= {200, 400, 401}
    else:
        access = [line for line in lines if "image_gateway.access" in line]
        assert any(" DEBUG " in line for line in lines)
    assert len(access) >= requests
