"""The shape of `config/models.yaml`, as pydantic models (validated once at start-up).

    providers:  name -> ProviderConfig   (adapter, base_url, api_key, headers, timeout_s, ...)
    models:     id   -> ModelConfig      (routes, limits, parameters, edit, pricing)

Parameter specs (`ParameterSpec`) and pricing rules (`PricingSpec`) are plain data here; the
compiled, fast forms live in `app.catalog.parameters` and `app.catalog.pricing`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

OutputFormat = Literal["png", "jpeg", "webp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    adapter: str
    base_url: str | None = None
    api_key: str | None = None
    #: extra HTTP headers sent on every upstream call (values may use ${VAR})
    headers: dict[str, str] = Field(default_factory=dict)
    #: Azure-style deployments: appended as `?api-version=...`
    api_version: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    #: result URLs may point at private, loopback or link-local addresses (an in-cluster
    #: provider, a test mock); off by default, so a provider cannot make the gateway fetch
    #: internal addresses
    allow_private_network: bool = False
    #: adapter-specific knobs (poll interval, ...), passed through untouched
    options: dict[str, Any] = Field(default_factory=dict)


class RouteConfig(_Strict):
    provider: str
    upstream_model: str | None = None
    #: `strategy: weighted`: this route's share of first attempts (0 = fallback only)
    weight: int = Field(default=1, ge=0, le=1000)
    #: extra attempts on this route after a retryable failure, with backoff and jitter,
    #: inside the model's deadline; then the next route
    retries: int = Field(default=0, ge=0, le=5)
    #: `strategy: cheapest`: what one image costs the operator on this route (USD)
    cost: Decimal | None = Field(default=None, ge=0)


class EnumParam(_Strict):
    type: Literal["enum"]
    values: list[str | int | float | bool] = Field(min_length=1)
    default: str | int | float | bool | None = None
    description: str | None = None


class IntegerParam(_Strict):
    type: Literal["integer"]
    min: int | None = None
    max: int | None = None
    multiple_of: int | None = Field(default=None, gt=0)
    default: int | None = None
    description: str | None = None


class NumberParam(_Strict):
    type: Literal["number"]
    min: float | None = None
    max: float | None = None
    default: float | None = None
    description: str | None = None


class BooleanParam(_Strict):
    type: Literal["boolean"]
    default: bool | None = None
    description: str | None = None


class StringParam(_Strict):
    type: Literal["string"]
    max_length: int | None = Field(default=None, gt=0)
    default: str | None = None
    description: str | None = None


ParameterSpec = Annotated[
    EnumParam | IntegerParam | NumberParam | BooleanParam | StringParam,
    Field(discriminator="type"),
]


class PerImagePrice(_Strict):
    """Flat (`price`), by one parameter (`by` + `values`), or a two-parameter table
    (`by: [quality, size]` + nested `values`)."""

    price: Decimal | None = None
    by: str | list[str] | None = None
    #: keys may be numbers or booleans when the parameter's enum values are (YAML `1:`, `true:`)
    values: dict[str | int | float | bool, Any] | None = None


class PerMegapixelPrice(_Strict):
    price: Decimal
    #: smallest billable megapixels per image (some providers round up)
    min_megapixels: Decimal | None = None


class PerTokenPrice(_Strict):
    input_per_million: Decimal = Decimal(0)
    output_per_million: Decimal
    #: worst-case output tokens per image, used for the up-front hold
    max_output_tokens_per_image: int = Field(gt=0)
    #: worst-case input tokens (prompt), used for the up-front hold; default from prompt length
    max_input_tokens: int | None = None
    #: worst-case input tokens added by each reference image of an edit (for the hold)
    max_input_tokens_per_reference_image: int = Field(default=0, ge=0)


class PricingSpec(_Strict):
    per_image: PerImagePrice | Decimal | None = None
    per_megapixel: PerMegapixelPrice | Decimal | None = None
    per_token: PerTokenPrice | None = None


class EditConfig(_Strict):
    supported: bool = False
    max_reference_images: int = Field(default=1, ge=1, le=16)


def _png() -> list[OutputFormat]:
    return ["png"]


class ModelConfig(_Strict):
    owned_by: str = "image-gateway"
    created: int = 1764000000
    routes: list[RouteConfig] = Field(min_length=1)
    prompt_max_length: int = Field(default=32000, gt=0)
    max_n: int = Field(default=1, ge=1, le=4)
    output_formats: list[OutputFormat] = Field(default_factory=_png, min_length=1)
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    edit: EditConfig = Field(default_factory=EditConfig)
    supports_streaming: bool = True
    partial_images: bool = False
    input_modalities: list[str] | None = None
    #: pixel-sized models: the largest width * height accepted, in millions of pixels
    max_megapixels: Decimal | None = Field(default=None, gt=0)
    output_modalities: list[str] = Field(default_factory=lambda: ["image"])
    pricing: PricingSpec
    description: str | None = None
    #: how routes are tried: in order (`fallback`), first by `weight` (`weighted`), or by
    #: ascending route `cost` (`cheapest`); failures always move on to the remaining routes
    strategy: Literal["fallback", "weighted", "cheapest"] = "fallback"
    #: the whole request's budget for attempts, retries and fallbacks (default: the sum of
    #: the routes' provider timeouts)
    deadline_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _strategy_fits_routes(self) -> ModelConfig:
        if self.strategy == "cheapest":
            missing = [r.provider for r in self.routes if r.cost is None]
            if missing:
                raise ValueError(
                    f"strategy 'cheapest' needs a 'cost' on every route; missing on "
                    f"{', '.join(missing)}"
                )
        if self.strategy == "weighted" and not any(r.weight > 0 for r in self.routes):
            raise ValueError("strategy 'weighted' needs at least one route with weight > 0")
        return self


class AliasConfig(_Strict):
    """`gpt-image: {model: gpt-image-1.5, accounts: {acct_x: gpt-image-1.5-azure}}`."""

    #: the model the alias names for every account without an entry of its own
    model: str
    #: per account: another target (one alias, different providers per tenant)
    accounts: dict[str, str] = Field(default_factory=dict)


class CatalogFile(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    #: alias -> target model id (shorthand) or an `AliasConfig`
    aliases: dict[str, str | AliasConfig] = Field(default_factory=dict)
