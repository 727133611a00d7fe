"""The shipped `config/models.yaml`, every model, through the official SDK.

Each provider's base URL and key come from the environment (`${X_BASE_URL:-...}`,
`${X_API_KEY}`), exactly as an operator would set them; here they point at each provider's
real-HTTP mock. So this proves, per catalog entry: the entry compiles, `size=` translates to
that model's sizing style, the registered adapter speaks its provider's contract, the image
comes back decodable at the size the response claims, and the exact catalog price is charged.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from app.db.engine import make_engine
from tests.mocks.bfl_upstream import MockBflUpstream
from tests.mocks.fal_upstream import MockFalUpstream
from tests.mocks.gemini_upstream import MockGeminiUpstream
from tests.mocks.openai_upstream import MockOpenAIUpstream
from tests.mocks.replicate_upstream import MockReplicateUpstream
from tests.mocks.seedream_upstream import MockSeedreamUpstream
from tests.mocks.stability_upstream import MockStabilityUpstream
from tests.support import factories
from tests.support.books import assert_books_balance
from tests.support.live import LiveGateway

ROOT = Path(__file__).resolve().parents[2]
BALANCE = 100_000_000


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Every provider of the shipped catalog, each behind its own mock (by env prefix)."""
    with ExitStack() as stack:
        mocks = {
            "OPENAI": stack.enter_context(MockOpenAIUpstream(api_key="sk-openai-mock")),
            "GEMINI": stack.enter_context(MockGeminiUpstream(api_key="AIza-gemini-mock")),
            "BFL": stack.enter_context(MockBflUpstream(api_key="bfl-mock")),
            "STABILITY": stack.enter_context(MockStabilityUpstream(api_key="sk-stability-mock")),
            "ARK": stack.enter_context(MockSeedreamUpstream(api_key="ark-mock")),
            "FAL": stack.enter_context(MockFalUpstream(api_key="fal-mock")),
            "REPLICATE": stack.enter_context(MockReplicateUpstream(api_key="r8-mock")),
        }
        for prefix, mock in mocks.items():
            monkeypatch.setenv(f"{prefix}_BASE_URL", mock.base_url)
            monkeypatch.setenv(f"{prefix}_API_KEY", mock.api_key)
        # the names these providers' own SDKs use
        monkeypatch.setenv("FAL_KEY", mocks["FAL"].api_key)
        monkeypatch.setenv("REPLICATE_API_TOKEN", mocks["REPLICATE"].api_key)
        # xAI speaks the OpenAI API: the same mock stands in for it
        monkeypatch.setenv("XAI_BASE_URL", mocks["OPENAI"].base_url)
        monkeypatch.setenv("XAI_API_KEY", mocks["OPENAI"].api_key)
        yield mocks


def seed(database_url: str) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        engine = make_engine(database_url)
        try:
            account = await factories.make_account(engine, balance_micros=BALANCE)
            _, secret = await factories.make_key(engine, account)
            return account, secret
        finally:
            await engine.dispose()

    return asyncio.run(run())


def books(database_url: str, account: str) -> int:
    async def run() -> int:
        engine = make_engine(database_url)
        try:
            return await assert_books_balance(engine, account)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_every_shipped_model_generates_through_the_sdk(
    database_url: str, provider_env: dict[str, Any], tmp_path: Path
) -> None:
    account, secret = seed(database_url)
    with LiveGateway(database_url=database_url, catalog_path=_mocks_allowed(tmp_path)) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        models = [m.id for m in client.models.list()]
        catalog = gw.gateway.catalog
        assert sorted(models) == sorted(catalog.models)  # nothing hidden: every key is set
        assert len(models) >= 13
        charged = 0
        for model in models:
            result = client.images.generate(
                model=model, prompt="a lighthouse at dusk", size="1024x1024"
            )
            assert len(result.data) == 1, model
            image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
            assert result.size == f"{image.width}x{image.height}", model
            expected_format = catalog.models[model].config.output_formats[0]
            assert (
                image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[expected_format]
            ), model
            cost = result.to_dict()["usage"]["cost"]["total_cost"]
            assert cost > 0, model
            charged += round(cost * 1_000_000)
        assert books(database_url, account) == BALANCE - charged


def test_a_failing_provider_falls_back_to_the_next_route(
    database_url: str, provider_env: dict[str, Any], tmp_path: Path
) -> None:
    """flux-pro-1.1 is served by BFL first, Replicate second: a BFL 5xx is not the client's
    problem, and the client pays once, the catalog price."""
    account, secret = seed(database_url)
    bfl, replicate = provider_env["BFL"], provider_env["REPLICATE"]
    bfl.fail_next(500, {"detail": "internal error"})
    with LiveGateway(database_url=database_url, catalog_path=_mocks_allowed(tmp_path)) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
        result = client.images.generate(model="flux-pro-1.1", prompt="p", size="1024x768")
    assert result.size == "1024x768"
    assert [r.path for r in bfl.requests if r.method == "POST"] == ["/v1/flux-pro-1.1"]
    created = [r for r in replicate.requests if r.method == "POST"]
    assert len(created) == 1
    assert created[0].path == "/v1/models/black-forest-labs/flux-1.1-pro/predictions"
    assert created[0].json["input"]["width"] == 1024
    assert books(database_url, account) == BALANCE - 40_000


def _mocks_allowed(folder: Path) -> Path:
    """The shipped catalog, its providers opted in to result URLs on loopback (the mocks)."""
    lines = []
    for line in (ROOT / "config/models.yaml").read_text().splitlines():
        lines.append(line)
        if re.match(r"^    adapter: ", line):
            lines.append("    allow_private_network: true")
    path = folder / "shipped-models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
