"""The explicit list of provider adapters: catalog `adapter:` name -> factory.

    providers:
      openai: {adapter: openai, api_key: ${OPENAI_API_KEY}}   ──▶ ADAPTERS["openai"](cfg, ctx)

Adding a provider is one module in `app/adapters/` and one line here. The catalog loader
validates `adapter:` names against `known_adapters()` at start-up, and the gateway builds one
adapter per provider with `build_adapter` (sharing one `httpx.AsyncClient` among all).
"""

from __future__ import annotations

from typing import Final

from app.adapters.base import AdapterContext, AdapterFactory, ImageAdapter
from app.adapters.bfl import BflAdapter
from app.adapters.fal import FalAdapter
from app.adapters.gemini import GeminiAdapter
from app.adapters.local_preview import LocalPreviewAdapter
from app.adapters.openai import OpenAIAdapter
from app.adapters.replicate import ReplicateAdapter
from app.adapters.seedream import SeedreamAdapter
from app.adapters.stability import StabilityAdapter
from app.catalog.schema import ProviderConfig

ADAPTERS: Final[dict[str, AdapterFactory]] = {
    "local-preview": LocalPreviewAdapter,
    "openai": OpenAIAdapter,
    "gemini": GeminiAdapter,
    "bfl": BflAdapter,
    "stability": StabilityAdapter,
    "seedream": SeedreamAdapter,
    "fal": FalAdapter,
    "replicate": ReplicateAdapter,
}


def known_adapters() -> frozenset[str]:
    return frozenset(ADAPTERS)


def build_adapter(provider: ProviderConfig, context: AdapterContext) -> ImageAdapter:
    """The adapter for one catalog provider; `ValueError` naming the choices if unknown."""
    try:
        factory = ADAPTERS[provider.adapter]
    except KeyError:
        choices = ", ".join(sorted(ADAPTERS))
        raise ValueError(
            f"unknown adapter {provider.adapter!r} (known adapters: {choices})"
        ) from None
    return factory(provider, context)
