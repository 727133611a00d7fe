"""Exact money conversions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.money import MoneyError, micros_to_decimal, micros_to_json, parse_usd


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.134", 134_000),
        ("10", 10_000_000),
        ("0.000001", 1),
        ("-2.5", -2_500_000),
        (0.134, 134_000),
    ],
)
def test_parse_usd_is_exact(text: str | float, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize("bad", ["0.0000001", "abc", "NaN", "Infinity", True])
def test_parse_usd_refuses_what_it_cannot_represent(bad: object) -> None:
    with pytest.raises(MoneyError):
        parse_usd(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micros", "text"),
    [(10_000_000, "10"), (134_000, "0.134"), (1, "0.000001"), (0, "0"), (-2_500_000, "-2.5")],
)
def test_micros_to_decimal_prints_plainly(micros: int, text: str) -> None:
    assert str(micros_to_decimal(micros)) == text
    assert micros_to_decimal(micros) == Decimal(text)


def test_json_float_round_trips_the_decimal() -> None:
    for micros in (134_000, 1, 402_000, 123_456_789_012, 2_622):
        assert Decimal(repr(micros_to_json(micros))) == micros_to_decimal(micros)


@pytest.mark.parametrize("huge", [3906791148030845779968, "-5150743462055546880", "1e12"])
def test_parse_usd_refuses_amounts_beyond_the_limit(huge: str | int) -> None:
    # found by schemathesis: such balances overflowed the database's 64-bit micro-dollars (500)
    with pytest.raises(MoneyError, match="beyond the limit"):
        parse_usd(huge)
    assert parse_usd("1000000000") == 10**15
