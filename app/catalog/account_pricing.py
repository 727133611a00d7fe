"""Account pricing: an account's own price list over the catalog's (resellers, chargeback).

    {"multiplier": "1.25",                                 every model: catalog price x 1.25
     "models": {"gpt-image-1":     {"multiplier": "0.9"},  this model: catalog price x 0.9
                "nano-banana-pro": {"per_image": "0.10"}}} this model: $0.10 per image

The catalog price stays the default: an account without `pricing` pays it, and so does a
model the account's list does not name when there is no account-wide multiplier. A per-model
entry replaces the account-wide multiplier for that model (it does not compound).

`account_price(pricing, model)` gives the `Price` a request is quoted and settled with, so
the hold, `usage.cost.total_cost` and the ledger rows all carry the account's price:
- a multiplier scales the catalog's quote and settle, each rounded half-up to the
  micro-dollar. Scaling is monotonic, so the settle stays within the quote (the hold is still
  the most a request can cost);
- `per_image` is a flat price per delivered image (quote = price x n), whatever the catalog's
  rule is (per image, megapixel or token).

Validated when an operator sets it (`AccountPricing`, 400 naming the field): a multiplier is
a decimal in (0, 1000] with at most 6 decimal places, a price is exact to the micro-dollar,
each model entry gives exactly one of the two, and models must be catalog ids (not aliases).
Stored on the account as JSON text and parsed once when the key is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.adapters.base import ImageRequest, TokenUsage
from app.catalog.parameters import CompiledModel
from app.catalog.pricing import PerImage, Price
from app.money import MoneyError, parse_usd

_PPM = 1_000_000
MAX_MULTIPLIER = Decimal(1000)


def _check_multiplier(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if not value.is_finite() or value <= 0 or value > MAX_MULTIPLIER:
        raise ValueError(f"a multiplier must be above 0 and at most {MAX_MULTIPLIER}")
    if (value * _PPM) != (value * _PPM).to_integral_value():
        raise ValueError("a multiplier has at most 6 decimal places")
    return value


class ModelPrice(BaseModel):
    """One model's price for the account: a multiplier or a flat per-image price."""

    model_config = ConfigDict(extra="forbid")

    multiplier: Decimal | None = None
    per_image: Decimal | None = Field(default=None, ge=0)

    _check = field_validator("multiplier")(_check_multiplier)

    @field_validator("per_image")
    @classmethod
    def _exact(cls, value: Decimal | None) -> Decimal | None:
        if value is not None:
            try:
                parse_usd(value)
            except MoneyError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> ModelPrice:
        if (self.multiplier is None) == (self.per_image is None):
            raise ValueError("give exactly one of multiplier, per_image")
        return self


class AccountPricing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    multiplier: Decimal | None = None
    models: dict[str, ModelPrice] = Field(default_factory=dict)

    _check = field_validator("multiplier")(_check_multiplier)

    def check_models(self, known: Mapping[str, object]) -> None:
        """Every named model is a catalog model id (`ValueError` naming the first that is not)."""
        for model_id in self.models:
            if model_id not in known:
                raise ValueError(f"pricing.models: {model_id!r} is not a model id of the catalog")

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def from_json(cls, text: str | None) -> AccountPricing | None:
        return None if not text else cls.model_validate_json(text)


def parse_pricing(raw: Any) -> AccountPricing:
    """The operator's `pricing` object, or `ValueError` with a message naming the field."""
    try:
        return AccountPricing.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in ("pricing", *first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{where}: {message}") from None


def _scale(micros: int, ppm: int) -> int:
    return (micros * ppm + _PPM // 2) // _PPM


@dataclass(frozen=True, slots=True)
class Scaled(Price):
    """The catalog's price times a multiplier (`ppm` millionths)."""

    base: Price
    ppm: int

    def quote(self, req: ImageRequest) -> int:
        return _scale(self.base.quote(req), self.ppm)

    def _cost(
        self, req: ImageRequest, delivered: Sequence[tuple[int, int]], usage: TokenUsage | None
    ) -> int:
        return _scale(self.base.actual(req, delivered, usage), self.ppm)


def _ppm(multiplier: Decimal) -> int:
    return int(multiplier * _PPM)


def account_price(pricing: AccountPricing | None, model: CompiledModel) -> Price:
    """The price `model` has for an account with `pricing` (None: the catalog's)."""
    if pricing is None:
        return model.price
    entry = pricing.models.get(model.id)
    if entry is not None:
        if entry.per_image is not None:
            return PerImage(flat=parse_usd(entry.per_image))
        assert entry.multiplier is not None
        return Scaled(model.price, _ppm(entry.multiplier))
    if pricing.multiplier is not None:
        return Scaled(model.price, _ppm(pricing.multiplier))
    return model.price
