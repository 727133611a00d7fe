"""Price.quote (the hold) and Price.settle (the actual cost), exact to the micro-dollar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.adapters.base import ImageRequest, TokenUsage
from app.catalog import CompiledModel, load_catalog
from tests.catalog.factories import model

REPO_CATALOG = Path(__file__).resolve().parents[2] / "config" / "models.yaml"
NANO = {
    "resolution": {"type": "enum", "values": ["1K", "2K", "4K"], "default": "2K"},
    "aspect_ratio": {"type": "enum", "values": ["auto", "16:9", "1:1", "9:16"], "default": "auto"},
}


def request(m: CompiledModel, **body: Any) -> ImageRequest:
    return m.validate({"prompt": "a", **body}).request


# per_image --------------------------------------------------------------------------------------
def test_flat_forms() -> None:
    for pricing in ({"per_image": 0.04}, {"per_image": "0.04"}, {"per_image": {"price": 0.04}}):
        m = model(max_n=4, pricing=pricing)
        req = request(m, n=3)
        assert m.price.quote(req) == 120_000
        assert m.price.settle(req, [(1024, 1024)] * 3) == 120_000
        assert m.price.settle(req, [(1024, 1024)]) == 40_000  # fewer delivered: pay for those
        assert m.price.settle(req, []) == 0


def test_by_one_parameter_is_exact() -> None:
    m = model(
        max_n=4,
        parameters=NANO,
        pricing={
            "per_image": {"by": "resolution", "values": {"1K": 0.134, "2K": 0.134, "4K": 0.24}}
        },
    )
    req = request(m, n=3)
    assert m.price.quote(req) == 402_000  # 3 x 0.134, no float drift
    assert m.price.quote(request(m, n=3, resolution="4K")) == 720_000
    assert m.price.quote(request(m, size="3000x2000")) == 240_000  # size -> 4K tier
    assert m.price.settle(request(m, n=2, resolution="1K"), [(1024, 1024)]) == 134_000


def test_two_parameter_table_from_the_default_catalog() -> None:
    catalog = load_catalog(REPO_CATALOG, {"OPENAI_API_KEY": "k"})
    gpt = catalog.models["gpt-image-1"]
    price = gpt.price
    assert price.quote(request(gpt, quality="low", size="1024x1024")) == 11_000
    assert price.quote(request(gpt, quality="medium", size="1536x1024", n=2)) == 126_000
    assert price.quote(request(gpt, quality="high", image_size="1024x1536", n=4)) == 1_000_000
    assert price.quote(request(gpt)) == 250_000  # quality auto + image_size auto: the top
    assert price.quote(request(gpt, quality="auto", size="1024x1024")) == 167_000
    dalle = catalog.models["dall-e-3"]
    assert dalle.price.quote(request(dalle)) == 40_000
    assert dalle.price.quote(request(dalle, quality="hd", size="1792x1024")) == 120_000
    local = catalog.models["local-preview"]
    assert local.price.quote(request(local, n=4)) == 4_000


def test_size_keyed_table_falls_back_to_most_expensive() -> None:
    m = model(
        parameters={
            "width": {"type": "integer", "default": 1024},
            "height": {"type": "integer", "default": 1024},
        },
        pricing={
            "per_image": {
                "by": "size",
                "values": {"1024x1024": 0.02, "2048x2048": 0.08, "512x512": 0.01},
            }
        },
    )
    assert m.price.quote(request(m)) == 20_000
    assert m.price.quote(request(m, size="512x512")) == 10_000
    assert m.price.quote(request(m, size="1000x1000")) == 80_000  # not in the table


def test_unset_optional_parameter_prices_at_the_top() -> None:
    m = model(
        parameters={"speed": {"type": "enum", "values": ["slow", "fast"]}},
        pricing={"per_image": {"by": "speed", "values": {"slow": 0.01, "fast": 0.03}}},
    )
    assert m.price.quote(request(m, speed="slow")) == 10_000
    assert m.price.quote(request(m)) == 30_000


def test_numeric_and_boolean_keys() -> None:
    m = model(
        parameters={
            "steps": {"type": "enum", "values": [20, 50], "default": 20},
            "hd": {"type": "boolean", "default": False},
        },
        pricing={
            "per_image": {
                "by": ["hd", "steps"],
                "values": {False: {20: 0.01, 50: 0.02}, "true": {"20": 0.03, 50.0: 0.05}},
            }
        },
    )
    assert m.price.quote(request(m)) == 10_000
    assert m.price.quote(request(m, hd=True, steps=50)) == 50_000


# per_megapixel ------------------------------------------------------------------------------------
def pixel_mp(**pricing: Any) -> CompiledModel:
    return model(
        max_n=4,
        parameters={
            "width": {"type": "integer", "min": 64, "max": 2048, "default": 1024},
            "height": {"type": "integer", "min": 64, "max": 2048, "default": 1024},
        },
        pricing={"per_megapixel": pricing or 0.03},
    )


def test_per_megapixel_quote_uses_requested_size_rounded_up() -> None:
    m = pixel_mp()
    # 1024*1024 = 1.048576 MP x $0.03 = $0.03145728 -> 31458 micros (rounded up)
    assert m.price.quote(request(m)) == 31_458
    # two images are rounded once per request: 2.097152 MP x 0.03 = 0.06291456 -> 62915
    assert m.price.quote(request(m, n=2)) == 62_915
    assert m.price.quote(request(m, size="1000x1000")) == 30_000


def test_per_megapixel_settle_uses_actual_sizes_capped_at_quote() -> None:
    m = pixel_mp()
    req = request(m, n=2, size="1000x1000")
    assert m.price.settle(req, [(1000, 1000), (500, 500)]) == 37_500
    assert m.price.settle(req, [(999, 1)]) == 30  # $0.00002997 rounds up to 30 micros
    assert m.price.settle(req, [(2000, 2000)]) == m.price.quote(req) == 60_000  # capped


def test_per_megapixel_minimum() -> None:
    m = pixel_mp(price=0.03, min_megapixels=0.5)
    req = request(m, size="256x256")
    assert m.price.quote(req) == 15_000
    assert m.price.settle(req, [(256, 256)]) == 15_000


def test_per_megapixel_hold_for_tier_and_bounded_models() -> None:
    tiered = model(parameters=NANO, pricing={"per_megapixel": 0.01})
    assert tiered.price.quote(request(tiered, resolution="1K")) == 10_486  # 1024^2 px
    assert tiered.price.quote(request(tiered, resolution="4K")) == 167_773  # 4096^2 px
    unsized = model(max_megapixels=2, pricing={"per_megapixel": 0.01})
    assert unsized.price.quote(request(unsized)) == 20_000
    assert unsized.price.settle(request(unsized), [(1000, 1000)]) == 10_000


# per_token ---------------------------------------------------------------------------------------
def token_model(**extra: Any) -> CompiledModel:
    rule = {"input_per_million": 5, "output_per_million": 40, "max_output_tokens_per_image": 4160}
    rule.update(extra)
    return model(
        max_n=4, edit={"supported": True, "max_reference_images": 4}, pricing={"per_token": rule}
    )


def test_per_token_quote_bounds_input_and_output() -> None:
    m = token_model()
    req = m.validate({"prompt": "héllo", "n": 2}).request  # 6 UTF-8 bytes
    # $5/M tokens = 5 micros a token: 2 x (6 x 5 + 4160 x 40), the input once per image
    assert m.price.quote(req) == 332_860
    capped = token_model(max_input_tokens=1000, max_input_tokens_per_reference_image=500)
    edit = capped.validate({"prompt": "x"}, images=[b"1", b"2"]).request
    assert capped.price.quote(edit) == 10_000 + 166_400  # (1000 + 2 x 500) x 5 + 4160 x 40


def test_per_token_settle_from_usage_rounded_up_and_capped() -> None:
    m = token_model()
    req = m.validate({"prompt": "hello", "n": 2}).request
    quote = m.price.quote(req)
    usage = TokenUsage(input_tokens=51, output_tokens=4160, total_tokens=4211)
    assert m.price.settle(req, [(1024, 1024)], usage) == 166_655  # 51 x 5 + 4160 x 40
    huge = TokenUsage(input_tokens=10, output_tokens=100_000, total_tokens=100_010)
    assert m.price.settle(req, [(1024, 1024)] * 2, huge) == quote
    assert m.price.settle(req, [], usage) == 0


def test_per_token_settle_without_usage_bills_the_bound_for_delivered_images() -> None:
    m = token_model()
    req = m.validate({"prompt": "hello", "n": 3}).request
    assert m.price.settle(req, [(1024, 1024)], None) == 25 + 166_400
    assert m.price.settle(req, [(1024, 1024)] * 3, None) == m.price.quote(req)


def test_per_token_hold_covers_n_fanned_out_calls_that_each_resend_the_input() -> None:
    """Rule 5 of the lifecycle issue: n = 4 as four upstream calls (Gemini, BFL, `fan_out`
    servers), each billed for the whole prompt and every reference image, at the worst case
    output: the hold still covers it, so nothing is clamped and nobody gets images cheap."""
    m = token_model(max_input_tokens=1000, max_input_tokens_per_reference_image=500)
    req = m.validate({"prompt": "x", "n": 4}, images=[b"1", b"2"]).request
    per_call = TokenUsage(input_tokens=1000 + 2 * 500, output_tokens=4160, total_tokens=6160)
    summed = TokenUsage(
        input_tokens=4 * per_call.input_tokens,
        output_tokens=4 * per_call.output_tokens,
        total_tokens=4 * per_call.total_tokens,
    )
    delivered = [(1024, 1024)] * 4
    assert m.price.actual(req, delivered, summed) == 4 * (2000 * 5 + 4160 * 40)
    assert m.price.quote(req) >= m.price.actual(req, delivered, summed)
    assert m.price.settle(req, delivered, summed) == m.price.actual(req, delivered, summed)


def test_per_token_fractions_round_up() -> None:
    m = model(
        pricing={
            "per_token": {
                "input_per_million": 0.15,
                "output_per_million": 0.6,
                "max_output_tokens_per_image": 10,
            }
        }
    )
    req = m.validate({"prompt": "abc"}).request
    assert m.price.quote(req) == 7  # 3 x 0.15 + 10 x 0.6 = 6.45 micros
    assert m.price.settle(req, [(64, 64)], TokenUsage(input_tokens=7, output_tokens=3)) == 3  # 2.85
