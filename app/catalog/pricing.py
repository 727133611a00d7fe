"""Prices: a model's `pricing` rule compiled into integer micro-dollar arithmetic.

Every model has exactly one rule; `compile_price` turns it into a `Price` with two methods:

- `quote(req)`: the HOLD taken from the balance before the upstream call, for all `n` images.
  It is never below what `settle` can return, so the ledger never has to charge more later.
- `settle(req, delivered, usage)`: the actual cost once the images are in (`delivered` = the
  real WxH of each image). Zero images cost zero. It is capped at the quote: the hold is the
  most a request can cost, whatever an upstream returns.

Rules (all amounts are parsed with `parse_usd`, so anything finer than $0.000001 is refused):

    per_image: 0.04                                   flat
    per_image: {price: 0.04}                          flat
    per_image: {by: resolution, values: {1K: 0.134, 2K: 0.134, 4K: 0.24}}
    per_image: {by: [quality, size], values: {low: {1024x1024: 0.011, ...}, ...}}
    per_megapixel: 0.01   or   {price: 0.01, min_megapixels: 0.25}
    per_token: {input_per_million: 5, output_per_million: 40, max_output_tokens_per_image: 6240}

Decisions where the spec is silent:
- `by` names an enum or boolean parameter the model declares (its table must price every
  value, and may not list others), `quality` (which the model must then declare), or `size`
  (the final `ImageRequest.size`). A value the table lacks (an undeclared size, an optional
  parameter left unset) is priced at the most expensive entry under that point of the table.
- megapixels are decimal (1 MP = 1,000,000 pixels); a per-megapixel request is rounded UP to
  the micro-dollar once per request, never per image. The hold uses the requested size where
  the style fixes it (pixel, `WxH` presets), the long side squared for tier styles, else the
  model's largest size or `max_megapixels`; a per-megapixel model without any such bound is
  rejected at load.
- per-token holds: per image, input = `max_input_tokens` if set, else the prompt's UTF-8 byte
  length (a byte-level BPE token covers at least one byte, so this bounds the real count),
  plus `max_input_tokens_per_reference_image` per edit image; output =
  `max_output_tokens_per_image`; times n. The input is counted once PER IMAGE, not once per
  request: adapters fan `n` out into up to n upstream calls (one image each: Gemini, BFL,
  Stability, `fan_out` servers), and every call re-sends the prompt and the reference images
  and is billed for them. Settling without upstream usage bills that same bound for the
  images delivered. Token costs are rounded UP to the micro-dollar.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.adapters.base import ImageRequest, TokenUsage
from app.catalog.checks import price_key
from app.catalog.errors import CatalogError, PathPart
from app.catalog.schema import (
    BooleanParam,
    EnumParam,
    ParameterSpec,
    PerImagePrice,
    PerMegapixelPrice,
    PerTokenPrice,
    PricingSpec,
)
from app.money import MoneyError, parse_usd

_PIXELS_PER_MEGAPIXEL = 1_000_000
_TOKENS_PER_MILLION = 1_000_000
#: pricing keys that are request fields rather than declared parameters
_SIZE_KEY = "size"


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _usd(value: object, path: tuple[PathPart, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise CatalogError(f"expected a USD amount, got {value!r}", path=path)
    try:
        micros = parse_usd(value)
    except MoneyError as exc:
        raise CatalogError(str(exc), path=path) from None
    if micros < 0:
        raise CatalogError(f"price cannot be negative: {value}", path=path)
    return micros


class Price(ABC):
    """A compiled pricing rule. Amounts are integer micro-dollars."""

    @abstractmethod
    def quote(self, req: ImageRequest) -> int:
        """The up-front hold for all `req.n` images (an upper bound of `settle`)."""

    @abstractmethod
    def _cost(
        self, req: ImageRequest, delivered: Sequence[tuple[int, int]], usage: TokenUsage | None
    ) -> int: ...

    def settle(
        self,
        req: ImageRequest,
        delivered: Sequence[tuple[int, int]],
        usage: TokenUsage | None = None,
    ) -> int:
        """The actual cost of the delivered images (zero if none), never above the quote."""
        return min(self.actual(req, delivered, usage), self.quote(req))

    def actual(
        self,
        req: ImageRequest,
        delivered: Sequence[tuple[int, int]],
        usage: TokenUsage | None = None,
    ) -> int:
        """What the delivered images cost by the rule, uncapped (the caller caps and reports
        an amount above the hold, which only an upstream's usage can produce)."""
        if not delivered:
            return 0
        return self._cost(req, delivered, usage)


# per_image --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Table:
    entries: Mapping[str, int | _Table]
    most: int

    def lookup(self, keys: Sequence[str | None], depth: int = 0) -> int:
        key = keys[depth]
        entry = None if key is None else self.entries.get(key)
        if entry is None:
            return self.most
        return entry if isinstance(entry, int) else entry.lookup(keys, depth + 1)


@dataclass(frozen=True, slots=True)
class PerImage(Price):
    flat: int | None
    by: tuple[str, ...] = ()
    table: _Table | None = None

    def unit(self, req: ImageRequest) -> int:
        if self.table is None:
            return self.flat or 0
        keys = [
            (req.size if name == _SIZE_KEY else _key_or_none(req.params.get(name)))
            for name in self.by
        ]
        return self.table.lookup(keys)

    def quote(self, req: ImageRequest) -> int:
        return self.unit(req) * req.n

    def _cost(
        self, req: ImageRequest, delivered: Sequence[tuple[int, int]], usage: TokenUsage | None
    ) -> int:
        return self.unit(req) * len(delivered)


def _key_or_none(value: Any) -> str | None:
    return None if value is None else price_key(value)


def _table_keys(
    name: str, params: Mapping[str, ParameterSpec], path: tuple[PathPart, ...]
) -> frozenset[str] | None:
    """The keys a table over `name` must have (None = any keys: `size`)."""
    if name == _SIZE_KEY:
        return None
    spec = params.get(name)
    if isinstance(spec, EnumParam):
        return frozenset(price_key(value) for value in spec.values)
    if isinstance(spec, BooleanParam):
        return frozenset({"true", "false"})
    if spec is None:
        raise CatalogError(
            f"pricing by {name!r}, which the model does not declare (declare it as an enum "
            "parameter, or price by 'size')",
            path=path,
        )
    raise CatalogError(f"pricing by {name!r} needs an enum or boolean parameter", path=path)


def _compile_table(
    values: Any,
    by: Sequence[str],
    required: Sequence[frozenset[str] | None],
    path: tuple[PathPart, ...],
) -> _Table:
    name = by[0]
    if not isinstance(values, Mapping) or not values:
        raise CatalogError(f"expected a table of prices keyed by {name}", path=path)
    entries: dict[str, int | _Table] = {}
    for raw_key, value in values.items():
        key = price_key(raw_key)
        here = (*path, key)
        if len(by) > 1:
            entries[key] = _compile_table(value, by[1:], required[1:], here)
        else:
            entries[key] = _usd(value, here)
    if required[0] is not None:
        if missing := sorted(required[0] - entries.keys()):
            raise CatalogError(f"no price for {name} = {', '.join(missing)}", path=path)
        if unknown := sorted(entries.keys() - required[0]):
            raise CatalogError(f"{', '.join(unknown)} is not a value of {name}", path=path)
    most = max(e if isinstance(e, int) else e.most for e in entries.values())
    return _Table(entries, most)


def _per_image(
    rule: PerImagePrice | Decimal,
    params: Mapping[str, ParameterSpec],
    path: tuple[PathPart, ...],
) -> PerImage:
    if isinstance(rule, Decimal):
        return PerImage(flat=_usd(rule, path))
    if rule.price is not None:
        if rule.by is not None or rule.values is not None:
            raise CatalogError("give either price or by + values, not both", path=path)
        return PerImage(flat=_usd(rule.price, (*path, "price")))
    if rule.by is None or rule.values is None:
        raise CatalogError("needs price, or by + values", path=path)
    by = (rule.by,) if isinstance(rule.by, str) else tuple(rule.by)
    if not by or len(set(by)) != len(by):
        raise CatalogError("by must name one or more distinct fields", path=(*path, "by"))
    required = [_table_keys(name, params, (*path, "by")) for name in by]
    return PerImage(None, by, _compile_table(rule.values, by, required, (*path, "values")))


# per_megapixel ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PerMegapixel(Price):
    price: int  # micro-dollars per megapixel
    min_pixels: int
    hold_pixels: Callable[[ImageRequest], int]

    def _micros(self, pixels: int) -> int:
        return _ceil_div(pixels * self.price, _PIXELS_PER_MEGAPIXEL)

    def quote(self, req: ImageRequest) -> int:
        return self._micros(max(self.hold_pixels(req), self.min_pixels) * req.n)

    def _cost(
        self, req: ImageRequest, delivered: Sequence[tuple[int, int]], usage: TokenUsage | None
    ) -> int:
        return self._micros(sum(max(w * h, self.min_pixels) for w, h in delivered))


# per_token --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PerToken(Price):
    input_rate: int  # micro-dollars per million tokens
    output_rate: int
    max_output_per_image: int
    max_input: int | None
    per_reference_image: int

    def _micros(self, input_tokens: int, output_tokens: int) -> int:
        total = input_tokens * self.input_rate + output_tokens * self.output_rate
        return _ceil_div(total, _TOKENS_PER_MILLION)

    def _input_bound(self, req: ImageRequest) -> int:
        prompt = self.max_input if self.max_input is not None else len(req.prompt.encode())
        return prompt + self.per_reference_image * len(req.images)

    def _bound(self, req: ImageRequest, images: int) -> int:
        # each image may be its own upstream call, which re-sends (and bills) the input
        return self._micros(images * self._input_bound(req), images * self.max_output_per_image)

    def quote(self, req: ImageRequest) -> int:
        return self._bound(req, req.n)

    def _cost(
        self, req: ImageRequest, delivered: Sequence[tuple[int, int]], usage: TokenUsage | None
    ) -> int:
        if usage is None:
            return self._bound(req, len(delivered))
        return self._micros(max(0, usage.input_tokens), max(0, usage.output_tokens))


def compile_price(
    spec: PricingSpec,
    *,
    params: Mapping[str, ParameterSpec],
    hold_pixels: Callable[[ImageRequest], int | None],
    static_max_pixels: int | None,
    path: tuple[PathPart, ...],
) -> Price:
    """Compile a model's single pricing rule; `hold_pixels` bounds per-megapixel holds."""
    rules = [
        name
        for name in ("per_image", "per_megapixel", "per_token")
        if getattr(spec, name) is not None
    ]
    if len(rules) != 1:
        raise CatalogError(
            "exactly one of per_image, per_megapixel, per_token is required"
            + (f" (found {', '.join(rules)})" if rules else ""),
            path=path,
        )
    if spec.per_image is not None:
        return _per_image(spec.per_image, params, (*path, "per_image"))
    if spec.per_megapixel is not None:
        here = (*path, "per_megapixel")
        rule = spec.per_megapixel
        if isinstance(rule, Decimal):
            rule = PerMegapixelPrice(price=rule)
        if static_max_pixels is None:
            raise CatalogError(
                "per_megapixel pricing needs a bounded output size for the up-front hold: "
                "declare width/height with max, resolution tiers or WxH image_size presets, "
                "or set the model's max_megapixels",
                path=here,
            )
        min_pixels = 0
        if rule.min_megapixels is not None:
            min_pixels = math.ceil(rule.min_megapixels * _PIXELS_PER_MEGAPIXEL)
        bound = static_max_pixels

        def hold(req: ImageRequest) -> int:
            pixels = hold_pixels(req)
            return bound if pixels is None else pixels

        return PerMegapixel(_usd(rule.price, (*here, "price")), min_pixels, hold)
    assert spec.per_token is not None
    return _per_token(spec.per_token, (*path, "per_token"))


def _per_token(rule: PerTokenPrice, path: tuple[PathPart, ...]) -> PerToken:
    return PerToken(
        input_rate=_usd(rule.input_per_million, (*path, "input_per_million")),
        output_rate=_usd(rule.output_per_million, (*path, "output_per_million")),
        max_output_per_image=rule.max_output_tokens_per_image,
        max_input=rule.max_input_tokens,
        per_reference_image=rule.max_input_tokens_per_reference_image,
    )
