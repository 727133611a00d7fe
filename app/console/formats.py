"""How the console writes numbers, money, times and catalog entries for people.

Presentation only: no rule lives here. Money is converted with `app.money` (the admin API's
own conversion), so a balance reads the same in the console, the admin JSON and the CLI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.catalog.parameters import CompiledModel
from app.catalog.schema import (
    BooleanParam,
    EnumParam,
    IntegerParam,
    NumberParam,
    PerImagePrice,
    PerMegapixelPrice,
    PricingSpec,
    StringParam,
)
from app.money import micros_to_json


def usd(micros: int | None) -> str:
    """`$12.50`, `$0.001`, `-$3.00`: at least cents, every significant micro-dollar."""
    if micros is None:
        return "-"
    sign = "-" if micros < 0 else ""
    text = f"{abs(Decimal(micros)) / Decimal(1_000_000):.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def usd_input(micros: int) -> str:
    """The plain decimal an `<input>` holds (no `$`)."""
    return format(Decimal(str(micros_to_json(micros))), "f")


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{100 * part / whole:.1f}%"


def _price_value(value: Any) -> str:
    return f"${Decimal(str(value)).normalize():f}"


def price_lines(pricing: PricingSpec) -> list[str]:
    """One line per pricing rule, as a catalog reader would say it."""
    lines: list[str] = []
    per_image = pricing.per_image
    if isinstance(per_image, Decimal):
        lines.append(f"{_price_value(per_image)} per image")
    elif isinstance(per_image, PerImagePrice):
        if per_image.price is not None:
            lines.append(f"{_price_value(per_image.price)} per image")
        elif isinstance(per_image.by, str) and per_image.values:
            parts = ", ".join(f"{k}: {_price_value(v)}" for k, v in per_image.values.items())
            lines.append(f"per image by {per_image.by}: {parts}")
        elif isinstance(per_image.by, list) and per_image.values:
            outer, inner = per_image.by[0], per_image.by[1]
            for key, row in per_image.values.items():
                cells = ", ".join(f"{k}: {_price_value(v)}" for k, v in dict(row).items())
                lines.append(f"per image, {outer} {key}, by {inner}: {cells}")
    per_mp = pricing.per_megapixel
    if isinstance(per_mp, Decimal):
        lines.append(f"{_price_value(per_mp)} per megapixel")
    elif isinstance(per_mp, PerMegapixelPrice):
        floor = f" (at least {per_mp.min_megapixels} MP)" if per_mp.min_megapixels else ""
        lines.append(f"{_price_value(per_mp.price)} per megapixel{floor}")
    if pricing.per_token is not None:
        token = pricing.per_token
        lines.append(
            f"per million tokens: input {_price_value(token.input_per_million)}, "
            f"output {_price_value(token.output_per_million)}"
        )
    return lines


def parameter_summary(spec: Any) -> str:
    """`enum: 1K, 2K, 4K (default 2K)`, `integer 64..2048, step 8 (default 1024)`."""
    value = spec.default
    shown = str(value).lower() if isinstance(value, bool) else value  # as the YAML says it
    default = "" if value is None else f" (default {shown})"
    if isinstance(spec, EnumParam):
        return f"one of {', '.join(str(v) for v in spec.values)}{default}"
    if isinstance(spec, IntegerParam | NumberParam):
        low = "" if spec.min is None else str(spec.min)
        high = "" if spec.max is None else str(spec.max)
        bounds = f" {low}..{high}" if low or high else ""
        step = (
            f", multiple of {spec.multiple_of}"
            if isinstance(spec, IntegerParam) and spec.multiple_of
            else ""
        )
        return f"{spec.type}{bounds}{step}{default}"
    if isinstance(spec, BooleanParam):
        return f"boolean{default}"
    if isinstance(spec, StringParam):
        limit = f", at most {spec.max_length} characters" if spec.max_length else ""
        return f"text{limit}{default}"
    return str(spec.type)


def sizing_label(model: CompiledModel) -> str:
    return {
        "pixel": "pixel (width x height)",
        "tier": "tier (aspect_ratio + resolution)",
        "aspect": "aspect (aspect_ratio)",
        "preset": "preset (image_size)",
        "none": "fixed (no sizing fields)",
    }.get(str(model.sizing), str(model.sizing))


FILTERS = {"usd": usd, "when": when, "usd_input": usd_input}
GLOBALS = {
    "percent": percent,
    "price_lines": price_lines,
    "parameter_summary": parameter_summary,
    "sizing_label": sizing_label,
}
