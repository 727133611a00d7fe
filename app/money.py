"""Exact money: every amount inside the gateway is an `int` of micro-dollars.

Decimal text from the catalog, the admin API and the CLI is converted with `parse_usd`, which
refuses anything finer than one micro-dollar instead of rounding it away. On the way out,
`micros_to_decimal` gives the exact value and `micros_to_json` gives the float whose shortest
`repr` is exactly that decimal (a correctly rounded division of an integer below 2**53 by 10**6
round-trips, so `0.134` prints as `0.134`), which is what the JSON APIs emit.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


class MoneyError(ValueError):
    pass


#: the largest amount a single price, balance or credit may name: far above any real one, and
#: far below what the databases' 64-bit integer of micro-dollars holds (9.2e12 USD), so sums
#: of many such amounts still fit
MAX_USD = Decimal(1_000_000_000)


def parse_usd(value: str | int | float | Decimal) -> int:
    """USD amount -> integer micro-dollars, exactly, or `MoneyError`."""
    if isinstance(value, bool):
        raise MoneyError("amount must be a number")
    try:
        # floats go through repr so that 0.134 means the decimal 0.134, not its binary cousin
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation as exc:
        raise MoneyError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    if abs(amount) > MAX_USD:
        raise MoneyError(f"amount {value!r} is beyond the limit of {MAX_USD} USD either way")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise MoneyError(f"amount {value!r} is finer than one micro-dollar (0.000001)")
    return int(micros)


def micros_to_decimal(micros: int) -> Decimal:
    """Exact USD value with no trailing zeros and never in exponent form (10, not 1E+1)."""
    amount = Decimal(micros).scaleb(-6)
    if amount == amount.to_integral_value():
        return amount.quantize(Decimal(1))
    return amount.normalize()


def micros_to_json(micros: int) -> float:
    return micros / MICROS_PER_USD
