"""Sizing styles, and translating an OpenAI-style `size: "WxH"` into each of them (SPEC 1.5).

A model's style follows from the sizing fields it declares in `parameters`:

    width + height           -> pixel    size 1000x600 -> width 1000, height 600 (snapped)
    aspect_ratio + resolution -> tier    size 1920x1080 -> aspect_ratio 16:9, resolution 2K
    aspect_ratio             -> aspect   size 1920x1080 -> aspect_ratio 16:9
    image_size               -> preset   size 1536x1024 -> image_size 1536x1024 (or nearest)
    (none of them)           -> none     size forwarded as is

Other combinations (`width` alone, `resolution` alone, `image_size` with `aspect_ratio`, ...)
are rejected at load: they would make the translation ambiguous.

Each style is a `Sizer` built once per model. Per request it fills in the sizing fields the body
did not set explicitly (explicit fields win over `size`), computes the `ImageRequest.size` an
OpenAI-style upstream receives, and bounds the pixels per image for per-megapixel holds.

Decisions where the spec is silent:
- "nearest aspect ratio" compares ratios on a log scale (so 2:1 and 1:2 are equally far from
  1:1); ties go to the value declared first. Values that are not `W:H` (`auto`,
  `match_input_image`) are never picked by translation.
- resolution tiers are `<N>K` = N * 1024 pixels on the long side (`0.5K` = 512); the smallest
  tier covering the requested long side wins, else the largest tier.
- pixel: `size` outside the declared min/max is a 400 on `size`; inside, a value that is not a
  `multiple_of` snaps to the nearest multiple (ties round up) that stays within bounds.
- preset: an exact `"WxH"` value wins; otherwise the `WxH` preset with the nearest aspect ratio,
  then the nearest area. Presets that are not `WxH` (`auto`, `auto_2K`, `square_hd`) are never
  picked, and the chosen value is forwarded verbatim as `ImageRequest.size` (`auto` included).
- the computed `WxH` for tier and aspect styles: long side = tier pixels (1024 for aspect-only),
  short side = long side * ratio rounded to a multiple of 16; `auto` aspect -> None.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from app.adapters.base import SizingStyle
from app.catalog.checks import IntegerCheck
from app.catalog.errors import CatalogError, PathPart
from app.catalog.schema import EnumParam, IntegerParam, ModelConfig
from app.errors import InvalidParameter

SIZING_FIELDS = frozenset({"width", "height", "aspect_ratio", "resolution", "image_size", "size"})

_SIZE = re.compile(r"([1-9]\d{0,5})x([1-9]\d{0,5})")
_RATIO = re.compile(r"(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)")
_TIER = re.compile(r"(\d+(?:\.\d+)?)K")
_AUTO_TIER = re.compile(r"auto_(\d+(?:\.\d+)?)K")
_ASPECT_ONLY_LONG_SIDE = 1024


def parse_size(value: Any) -> tuple[int, int] | None:
    """`"WxH"` -> (W, H); `"auto"` -> None; anything else -> 400 on `size`."""
    if isinstance(value, str):
        if value == "auto":
            return None
        match = _SIZE.fullmatch(value)
        if match:
            return int(match[1]), int(match[2])
    raise InvalidParameter(
        f"size must be 'auto' or WIDTHxHEIGHT such as '1024x1024' (got {value!r})", param="size"
    )


def parse_ratio(value: object) -> float | None:
    match = _RATIO.fullmatch(value) if isinstance(value, str) else None
    if not match or float(match[2]) == 0 or float(match[1]) == 0:
        return None
    return float(match[1]) / float(match[2])


def tier_pixels(value: object) -> int | None:
    match = _TIER.fullmatch(value) if isinstance(value, str) else None
    return int(Decimal(match[1]) * 1024) if match else None


def dimensions(long_side: int, ratio: float) -> tuple[int, int]:
    """Width and height with the given long side and width/height ratio (short side to 16)."""
    short = max(16, round(long_side * min(ratio, 1 / ratio) / 16) * 16)
    return (long_side, short) if ratio >= 1 else (short, long_side)


def _nearest_ratio(ratios: tuple[tuple[Any, float], ...], width: int, height: int) -> Any:
    wanted = math.log(width / height)
    return min(ratios, key=lambda item: abs(math.log(item[1]) - wanted))[0]


class Sizer(Protocol):
    @property
    def style(self) -> SizingStyle: ...

    @property
    def max_pixels(self) -> int | None:
        """Largest pixels per image any request can ask for, if bounded (per-MP holds)."""

    def apply_size(self, size: tuple[int, int], params: dict[str, Any]) -> None:
        """Set the sizing fields `params` lacks from the requested size."""

    def finish(self, params: Mapping[str, Any], *, from_size: bool) -> None:
        """Checks that need every sizing field (defaults applied)."""

    def upstream_size(self, params: Mapping[str, Any], requested: str | None) -> str | None: ...

    def request_pixels(self, params: Mapping[str, Any]) -> int | None:
        """Pixels per image this request asks for (an upper bound), if known."""


@dataclass(frozen=True, slots=True)
class NoSizing:
    style: SizingStyle = "none"
    max_pixels: int | None = None

    def apply_size(self, size: tuple[int, int], params: dict[str, Any]) -> None:
        return None

    def finish(self, params: Mapping[str, Any], *, from_size: bool) -> None:
        return None

    def upstream_size(self, params: Mapping[str, Any], requested: str | None) -> str | None:
        return requested

    def request_pixels(self, params: Mapping[str, Any]) -> int | None:
        return None


@dataclass(frozen=True, slots=True)
class PixelSizing:
    width: IntegerCheck
    height: IntegerCheck
    #: from `max_megapixels`, in pixels
    pixel_limit: int | None
    max_pixels: int | None
    style: SizingStyle = "pixel"

    def apply_size(self, size: tuple[int, int], params: dict[str, Any]) -> None:
        for check, value in ((self.width, size[0]), (self.height, size[1])):
            if check.name not in params:
                params[check.name] = self._snap(check, value, size)

    def _snap(self, check: IntegerCheck, value: int, size: tuple[int, int]) -> int:
        low, high, step = check.min, check.max, check.multiple_of or 1
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidParameter(
                f"size {size[0]}x{size[1]} is outside this model's range "
                f"(width {self.width.min}..{self.width.max}, "
                f"height {self.height.min}..{self.height.max})",
                param="size",
            )
        snapped = (value + step // 2) // step * step
        if high is not None and snapped > high:
            snapped = high // step * step
        if low is not None and snapped < low:
            snapped = -(-low // step) * step
        if not check.fits(snapped):
            raise InvalidParameter(f"size cannot be matched: {check.message}", param="size")
        return snapped

    def finish(self, params: Mapping[str, Any], *, from_size: bool) -> None:
        width, height = params.get("width"), params.get("height")
        if self.pixel_limit is None or width is None or height is None:
            return
        if width * height > self.pixel_limit:
            raise InvalidParameter(
                f"{width}x{height} is {width * height / 1e6:.2f} megapixels; this model allows "
                f"at most {self.pixel_limit / 1e6:g}",
                param="size" if from_size else "width",
            )

    def upstream_size(self, params: Mapping[str, Any], requested: str | None) -> str | None:
        width, height = params.get("width"), params.get("height")
        return None if width is None or height is None else f"{width}x{height}"

    def request_pixels(self, params: Mapping[str, Any]) -> int | None:
        width, height = params.get("width"), params.get("height")
        return self.max_pixels if width is None or height is None else int(width * height)


@dataclass(frozen=True, slots=True)
class TierSizing:
    """`aspect_ratio` + `resolution`; with `tiers` empty it is the aspect-only style."""

    ratios: tuple[tuple[Any, float], ...]
    tiers: tuple[tuple[Any, int], ...]  # sorted by pixels
    style: SizingStyle = "tier"

    @property
    def max_pixels(self) -> int | None:
        # the square has the largest area for a given long side
        return self.tiers[-1][1] ** 2 if self.tiers else None

    def apply_size(self, size: tuple[int, int], params: dict[str, Any]) -> None:
        if "aspect_ratio" not in params and self.ratios:
            params["aspect_ratio"] = _nearest_ratio(self.ratios, *size)
        if "resolution" not in params and self.tiers:
            long_side = max(size)
            covering = [value for value, pixels in self.tiers if pixels >= long_side]
            params["resolution"] = covering[0] if covering else self.tiers[-1][0]

    def finish(self, params: Mapping[str, Any], *, from_size: bool) -> None:
        return None

    def _long_side(self, params: Mapping[str, Any]) -> int | None:
        if not self.tiers:
            return _ASPECT_ONLY_LONG_SIDE
        return tier_pixels(params.get("resolution"))

    def upstream_size(self, params: Mapping[str, Any], requested: str | None) -> str | None:
        ratio = parse_ratio(params.get("aspect_ratio"))
        long_side = self._long_side(params)
        if ratio is None or long_side is None:
            return None
        width, height = dimensions(long_side, ratio)
        return f"{width}x{height}"

    def request_pixels(self, params: Mapping[str, Any]) -> int | None:
        if not self.tiers:
            return None  # aspect-only models do not say how large their output is
        long_side = tier_pixels(params.get("resolution"))
        return long_side**2 if long_side is not None else self.max_pixels


@dataclass(frozen=True, slots=True)
class PresetSizing:
    #: the `WxH` presets, with their parsed sizes
    presets: tuple[tuple[str, tuple[int, int]], ...]
    #: pixels of every preset whose size is known (`WxH` and `auto_<N>K`)
    pixels: dict[str, int]
    max_pixels: int | None
    style: SizingStyle = "preset"

    def apply_size(self, size: tuple[int, int], params: dict[str, Any]) -> None:
        if "image_size" in params or not self.presets:
            return
        exact = f"{size[0]}x{size[1]}"
        if exact in self.pixels:
            params["image_size"] = exact
            return
        ratio, area = math.log(size[0] / size[1]), math.log(size[0] * size[1])

        def distance(item: tuple[str, tuple[int, int]]) -> tuple[float, float]:
            width, height = item[1]
            # aspect first (rounded so float noise cannot outrank a real difference), then area
            aspect_gap = round(abs(math.log(width / height) - ratio), 6)
            return aspect_gap, abs(math.log(width * height) - area)

        params["image_size"] = min(self.presets, key=distance)[0]

    def finish(self, params: Mapping[str, Any], *, from_size: bool) -> None:
        return None

    def upstream_size(self, params: Mapping[str, Any], requested: str | None) -> str | None:
        value = params.get("image_size")
        return None if value is None else str(value)

    def request_pixels(self, params: Mapping[str, Any]) -> int | None:
        return self.pixels.get(str(params.get("image_size")), self.max_pixels)


def _enum(
    config: ModelConfig, name: str, path: tuple[PathPart, ...]
) -> tuple[EnumParam, tuple[PathPart, ...]]:
    spec = config.parameters[name]
    where = (*path, "parameters", name)
    if not isinstance(spec, EnumParam):
        raise CatalogError(f"{name} must be an enum parameter", path=(*where, "type"))
    return spec, where


def build_sizer(
    config: ModelConfig, checks: Mapping[str, Any], path: tuple[PathPart, ...]
) -> Sizer:
    """Detect the model's sizing style from its declared fields and compile it."""
    declared = SIZING_FIELDS.intersection(config.parameters)
    where = (*path, "parameters")
    if declared <= {"width", "height"} and declared:
        if declared != {"width", "height"}:
            raise CatalogError("width and height must be declared together", path=where)
        specs = [config.parameters["width"], config.parameters["height"]]
        if not all(isinstance(spec, IntegerParam) for spec in specs):
            raise CatalogError("width and height must be integer parameters", path=where)
        width, height = checks["width"], checks["height"]
        limit = None
        if config.max_megapixels is not None:
            limit = int(config.max_megapixels * 1_000_000)
        largest = None if width.max is None or height.max is None else width.max * height.max
        if largest is not None and limit is not None:
            largest = min(largest, limit)
        return PixelSizing(width, height, limit, largest or limit)
    if declared == {"image_size"}:
        spec, _ = _enum(config, "image_size", path)
        presets, pixels = [], {}
        for value in spec.values:
            text = str(value)
            if (match := _SIZE.fullmatch(text)) is not None:
                size = int(match[1]), int(match[2])
                presets.append((text, size))
                pixels[text] = size[0] * size[1]
            elif (auto := _AUTO_TIER.fullmatch(text)) is not None:
                pixels[text] = int(Decimal(auto[1]) * 1024) ** 2
        return PresetSizing(tuple(presets), pixels, max(pixels.values(), default=None))
    if declared in ({"aspect_ratio"}, {"aspect_ratio", "resolution"}):
        spec, spec_path = _enum(config, "aspect_ratio", path)
        if any(not isinstance(value, str) for value in spec.values):
            raise CatalogError(
                'aspect ratios must be strings: quote them ("16:9"), YAML reads 16:9 as a '
                "base-60 number",
                path=(*spec_path, "values"),
            )
        ratios = tuple(
            (value, ratio) for value in spec.values if (ratio := parse_ratio(value)) is not None
        )
        tiers: list[tuple[Any, int]] = []
        if "resolution" in declared:
            res_spec, res_path = _enum(config, "resolution", path)
            for value in res_spec.values:
                pixels_ = tier_pixels(value)
                if pixels_ is None:
                    raise CatalogError(
                        f"resolution {value!r} is not a tier such as 1K, 2K or 4K",
                        path=(*res_path, "values"),
                    )
                tiers.append((value, pixels_))
            tiers.sort(key=lambda item: item[1])
        return TierSizing(ratios, tuple(tiers), "tier" if tiers else "aspect")
    if not declared:
        return NoSizing()
    if declared == {"resolution"}:
        raise CatalogError("resolution needs aspect_ratio (the tier sizing style)", path=where)
    raise CatalogError(
        f"sizing fields {sorted(declared)} mix styles; declare width+height, "
        "aspect_ratio+resolution, aspect_ratio alone, or image_size",
        path=where,
    )
