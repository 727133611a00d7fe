"""Compiled value checks: one small callable per declared parameter (and per common field).

A catalog `ParameterSpec` is plain data; at load time it becomes a `Check` whose bounds, value
sets and error messages are computed once, so checking a request field is a few comparisons:

    check = compile_check("width", IntegerParam(type="integer", min=64, max=2048, multiple_of=8))
    check(1024, coerce=False)   -> 1024
    check("1024", coerce=True)  -> 1024      (multipart edits send every field as a string)
    check(1.5, coerce=False)    -> InvalidParameter(param="width", "width must be an integer ...")

Rules shared by every type:
- booleans are never numbers (`True` is not `1`), and floats are never integers (`2.0` is
  rejected where an integer is declared: clients that send `2.0` have a bug worth seeing);
- `coerce=True` additionally accepts the string spelling of a value ("2", "1.5", "true");
- enum values compare by kind: strings with strings, booleans with booleans, and numbers by
  numeric equality (`2.0` matches a declared `2`); the declared value is what is returned.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

from app.catalog.errors import CatalogError, PathPart
from app.catalog.schema import (
    BooleanParam,
    EnumParam,
    IntegerParam,
    NumberParam,
    ParameterSpec,
    StringParam,
)
from app.errors import InvalidParameter

_INT_TEXT = re.compile(r"[+-]?\d{1,18}")
_TRUE_FALSE = {"true": True, "false": False}


class Check(Protocol):
    """Validates one field's value (never None: callers treat None as absent)."""

    @property
    def name(self) -> str: ...

    @property
    def default(self) -> Any: ...

    def __call__(self, value: Any, *, coerce: bool) -> Any: ...


def enum_key(value: object) -> tuple[str, object]:
    """The comparison key of an enum value: kind first, so `True` never equals `1`."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)  # 2 and 2.0 hash and compare equal
    return ("str", value)


def price_key(value: object) -> str:
    """The text form used to look a parameter value up in a pricing table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse_number(text: str) -> int | float | None:
    if _INT_TEXT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


def _show(number: float | None) -> str | None:
    return None if number is None else f"{number:g}"


def _bounds_text(low: object, high: object) -> str:
    if low is not None and high is not None:
        return f" between {low} and {high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


@dataclass(frozen=True, slots=True)
class EnumCheck:
    name: str
    default: Any
    values: tuple[Any, ...]
    _lookup: dict[tuple[str, object], Any]
    _message: str

    @classmethod
    def build(cls, name: str, values: list[Any], default: Any = None) -> EnumCheck:
        shown = ", ".join(str(v) for v in values)
        return cls(
            name=name,
            default=default,
            values=tuple(values),
            _lookup={enum_key(v): v for v in values},
            _message=f"{name} must be one of: {shown}",
        )

    def __call__(self, value: Any, *, coerce: bool) -> Any:
        hashable = isinstance(value, str | int | float)  # bool is an int
        found = self._lookup.get(enum_key(value), _MISSING) if hashable else _MISSING
        if found is _MISSING and coerce and isinstance(value, str):
            # a form string may spell a boolean or a number the enum declares
            lowered = value.strip().lower()
            if lowered in _TRUE_FALSE:
                found = self._lookup.get(("bool", _TRUE_FALSE[lowered]), _MISSING)
            else:
                number = _parse_number(value.strip())
                if number is not None:
                    found = self._lookup.get(("number", number), _MISSING)
        if found is _MISSING:
            raise InvalidParameter(f"{self._message} (got {value!r})", param=self.name)
        return found


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class IntegerCheck:
    name: str
    default: int | None
    min: int | None
    max: int | None
    multiple_of: int | None
    message: str

    @classmethod
    def build(
        cls,
        name: str,
        *,
        min: int | None = None,
        max: int | None = None,
        multiple_of: int | None = None,
        default: int | None = None,
        message: str | None = None,
    ) -> IntegerCheck:
        if message is None:
            message = f"{name} must be an integer{_bounds_text(min, max)}"
            if multiple_of is not None and multiple_of > 1:
                message += f", a multiple of {multiple_of}"
        return cls(name, default, min, max, multiple_of, message)

    def __call__(self, value: Any, *, coerce: bool) -> int:
        if coerce and isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            value = int(value)
        if not _is_int(value) or not self.fits(value):
            raise InvalidParameter(f"{self.message} (got {value!r})", param=self.name)
        return int(value)

    def fits(self, value: int) -> bool:
        return (
            (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
            and (self.multiple_of is None or value % self.multiple_of == 0)
        )


@dataclass(frozen=True, slots=True)
class NumberCheck:
    name: str
    default: float | None
    min: float | None
    max: float | None
    message: str

    def __call__(self, value: Any, *, coerce: bool) -> int | float:
        if coerce and isinstance(value, str):
            parsed = _parse_number(value.strip())
            value = value if parsed is None else parsed
        if (
            not _is_number(value)
            or (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
        ):
            raise InvalidParameter(f"{self.message} (got {value!r})", param=self.name)
        return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class BooleanCheck:
    name: str
    default: bool | None = None

    def __call__(self, value: Any, *, coerce: bool) -> bool:
        if isinstance(value, bool):
            return value
        if coerce and isinstance(value, str) and value.strip().lower() in _TRUE_FALSE:
            return _TRUE_FALSE[value.strip().lower()]
        raise InvalidParameter(
            f"{self.name} must be a boolean (true or false) (got {value!r})", param=self.name
        )


@dataclass(frozen=True, slots=True)
class StringCheck:
    name: str
    default: str | None = None
    max_length: int | None = None

    def __call__(self, value: Any, *, coerce: bool) -> str:
        if not isinstance(value, str):
            raise InvalidParameter(f"{self.name} must be a string", param=self.name)
        if "\x00" in value:  # no text column takes one (`user` is stored in the request log)
            raise InvalidParameter(f"{self.name} must not contain a NUL character", param=self.name)
        if self.max_length is not None and len(value) > self.max_length:
            raise InvalidParameter(
                f"{self.name} must be at most {self.max_length} characters (got {len(value)})",
                param=self.name,
            )
        return value


def compile_check(name: str, spec: ParameterSpec, path: tuple[PathPart, ...]) -> Check:
    """Turn a declared parameter into its `Check`, rejecting a default it would refuse."""
    check: Check
    if isinstance(spec, EnumParam):
        check = EnumCheck.build(name, spec.values, spec.default)
    elif isinstance(spec, IntegerParam):
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise CatalogError(f"min {spec.min} is above max {spec.max}", path=(*path, "min"))
        check = IntegerCheck.build(
            name, min=spec.min, max=spec.max, multiple_of=spec.multiple_of, default=spec.default
        )
    elif isinstance(spec, NumberParam):
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise CatalogError(f"min {spec.min} is above max {spec.max}", path=(*path, "min"))
        message = f"{name} must be a number{_bounds_text(_show(spec.min), _show(spec.max))}"
        check = NumberCheck(name, spec.default, spec.min, spec.max, message)
    elif isinstance(spec, BooleanParam):
        check = BooleanCheck(name, spec.default)
    elif isinstance(spec, StringParam):
        check = StringCheck(name, spec.default, spec.max_length)
    else:  # pragma: no cover - the discriminated union has no other member
        raise CatalogError(f"unknown parameter type {spec!r}", path=path)
    if check.default is not None:
        try:
            check(check.default, coerce=False)
        except InvalidParameter as exc:
            raise CatalogError(
                f"default {check.default!r} is not allowed: {exc.message}", path=(*path, "default")
            ) from None
    return check
