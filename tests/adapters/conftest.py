"""Fixtures for adapter tests: one real-HTTP OpenAI mock per session, one client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from app.adapters.base import AdapterContext
from app.catalog.schema import ProviderConfig
from app.settings import Settings
from app.upstream_client import UpstreamHttp, make_http_client
from tests.mocks.openai_upstream import MockOpenAIUpstream

UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"


def mock_provider(adapter: str, base_url: str, **config: object) -> ProviderConfig:
    """A catalog provider that calls a real-HTTP mock at `base_url` with `UPSTREAM_KEY` and a
    10 s timeout; `config` adds or overrides fields."""
    settings = {"adapter": adapter, "base_url": base_url, "api_key": UPSTREAM_KEY, "timeout_s": 10}
    return ProviderConfig.model_validate({**settings, **config})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[MockOpenAIUpstream]:
    with MockOpenAIUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def upstream(_upstream_server: MockOpenAIUpstream) -> MockOpenAIUpstream:
    """The shared mock, with its knobs, queued failures and recorded requests reset."""
    _upstream_server.reset()
    return _upstream_server


@pytest.fixture(params=["aiohttp", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamHttp]:
    """The gateway's own client, over each transport it can run with."""
    client = make_http_client(Settings(upstream_transport=request.param))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def context(http: UpstreamHttp) -> AdapterContext:
    return AdapterContext(http=http, max_download_bytes=10 * 1024 * 1024)
