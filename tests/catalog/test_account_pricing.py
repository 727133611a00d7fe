"""Account pricing over the catalog's rules: multipliers round half-up per quote and settle,
the settle never exceeds the quote, per-image overrides, and the catalog stays the default."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.adapters.base import ImageRequest
from app.catalog.account_pricing import AccountPricing, Scaled, account_price, parse_pricing
from app.catalog.pricing import PerImage, PerMegapixel


def request(n: int = 1) -> ImageRequest:
    return ImageRequest(prompt="p", n=n, output_format="png", sizing="none", size=None, params={})


class Model:  # the part of CompiledModel that account_price reads
    def __init__(self, model_id: str, price: object) -> None:
        self.id, self.price = model_id, price


def test_the_catalog_price_is_the_default() -> None:
    base = PerImage(flat=40_000)
    model = Model("m", base)
    assert account_price(None, model) is base  # type: ignore[arg-type]
    assert account_price(AccountPricing(), model) is base  # type: ignore[arg-type]
    other = AccountPricing.model_validate({"models": {"x": {"multiplier": "2"}}})
    assert account_price(other, model) is base  # type: ignore[arg-type]


def test_multipliers_round_half_up_and_a_model_entry_replaces_the_account_one() -> None:
    pricing = parse_pricing({"multiplier": "1.5", "models": {"cheap": {"multiplier": "0.333333"}}})
    scaled = account_price(pricing, Model("m", PerImage(flat=3)))  # type: ignore[arg-type]
    assert scaled.quote(request(n=1)) == 5  # 4.5 -> 5
    cheap = account_price(pricing, Model("cheap", PerImage(flat=3)))  # type: ignore[arg-type]
    assert cheap.quote(request(n=3)) == 3  # 9 x 0.333333 = 2.999997 -> 3 (not x 1.5)


def test_a_scaled_settle_never_exceeds_its_quote() -> None:
    base = PerMegapixel(price=10_001, min_pixels=0, hold_pixels=lambda req: 1_048_576)
    scaled = Scaled(base, ppm=1_234_567)
    req = request(n=2)
    quote = scaled.quote(req)
    for delivered in ([(1024, 1024)], [(1024, 1024), (1024, 1024)], [(4096, 4096)] * 2):
        assert scaled.settle(req, delivered) <= quote
    assert scaled.settle(req, []) == 0


def test_a_per_image_override_prices_delivered_images() -> None:
    pricing = parse_pricing({"models": {"m": {"per_image": "0.05"}}})
    price = account_price(pricing, Model("m", PerImage(flat=40_000)))  # type: ignore[arg-type]
    assert price.quote(request(n=3)) == 150_000
    assert price.settle(request(n=3), [(1, 1), (1, 1)]) == 100_000


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"multiplier": "-1"}, "pricing.multiplier: a multiplier must be above 0"),
        ({"multiplier": "1001"}, "at most 1000"),
        ({"multiplier": "0.0000001"}, "at most 6 decimal places"),
        ({"models": {"m": {"per_image": "-0.01"}}}, "pricing.models.m.per_image"),
        ({"models": {"m": {"per_image": "0.0000001"}}}, "finer than one micro-dollar"),
        ({"models": {"m": {"multiplier": 2, "per_image": 1}}}, "exactly one of"),
        ({"models": "m"}, "pricing.models"),
    ],
)
def test_bad_pricing_names_the_field(raw: object, says: str) -> None:
    with pytest.raises(ValueError, match="pricing") as refused:
        parse_pricing(raw)
    assert says in str(refused.value)


def test_model_ids_are_checked_against_the_catalog() -> None:
    pricing = parse_pricing({"models": {"m": {"multiplier": Decimal("2")}}})
    pricing.check_models({"m": object()})
    with pytest.raises(ValueError, match="'m' is not a model id"):
        pricing.check_models({})


@pytest.mark.anyio
async def test_start_up_warns_about_prices_for_models_the_catalog_lost(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from app.db.engine import make_engine
    from app.gateway import warn_about_account_pricing
    from app.ledger import Ledger
    from tests.support.factories import make_account

    engine = make_engine(database_url)
    try:
        account = await make_account(engine)
        stored = parse_pricing({"models": {"retired": {"multiplier": "2"}}}).to_json()
        await Ledger(engine).update_account(account, pricing=stored)
        with caplog.at_level("WARNING", logger="app.gateway"):
            await warn_about_account_pricing(engine, SimpleNamespace(models={"m": 1}))  # type: ignore[arg-type]
            assert f"account {account}: pricing.models: 'retired'" in caplog.text
            caplog.clear()
            await warn_about_account_pricing(engine, SimpleNamespace(models={"retired": 1}))  # type: ignore[arg-type]
            assert caplog.text == ""
    finally:
        await engine.dispose()
