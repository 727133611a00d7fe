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


#: the largest balance an account may reach (a credit beyond it is refused): 2**53 - 1
#: micro-dollars, about 9.007 billion USD. Every integer up to it is exact in a JSON number read
#: as a double (JavaScript, the float our JSON APIs emit), and it is far below BIGINT's
#: 2**63 - 1, so adding any accepted amount (at most MAX_USD) to a balance cannot overflow.
MAX_AMOUNT_MICROS = 2**53 - 1


def check_amount(micros: int) -> int:
    """`micros` when it is within MAX_USD either way (for amounts that arrive as integers of
    micro-dollars rather than through `parse_usd`), else `MoneyError`."""
    if abs(micros) > MAX_USD * MICROS_PER_USD:
        raise MoneyError(f"amount is beyond the limit of {MAX_USD} USD either way")
    return micros


def max_usd_text() -> str:
    """The largest balance, as USD text."""
    return f"{micros_to_decimal(MAX_AMOUNT_MICROS)}"
