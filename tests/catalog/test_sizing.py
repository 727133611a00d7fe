"""`size` translation into each sizing style (SPEC 1.5), and the size an upstream receives."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog import CompiledModel
from app.errors import InvalidParameter
from tests.catalog.factories import model

ASPECTS = ["auto", "1:1", "16:9", "9:16", "4:3", "3:4", "21:9"]


def pixel(**extra: Any) -> CompiledModel:
    return model(
        parameters={
            "width": {
                "type": "integer",
                "min": 256,
                "max": 1440,
                "multiple_of": 32,
                "default": 1024,
            },
            "height": {
                "type": "integer",
                "min": 256,
                "max": 1440,
                "multiple_of": 32,
                "default": 768,
            },
        },
        **extra,
    )


def tier(resolution_default: str | None = "1K") -> CompiledModel:
    return model(
        parameters={
            "resolution": {
                "type": "enum",
                "values": ["4K", "1K", "2K"],
                "default": resolution_default,
            },
            "aspect_ratio": {"type": "enum", "values": ASPECTS, "default": "auto"},
        }
    )


def aspect() -> CompiledModel:
    return model(parameters={"aspect_ratio": {"type": "enum", "values": ASPECTS, "default": "1:1"}})


def preset(values: list[str], default: str) -> CompiledModel:
    return model(parameters={"image_size": {"type": "enum", "values": values, "default": default}})


def sized(m: CompiledModel, **body: Any) -> tuple[dict[str, Any], str | None]:
    request = m.validate({"prompt": "a", **body}).request
    return request.params, request.size


# size syntax --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["1024", "1024X1024", "0x512", "-1x5", "10x", 1024, "auto_2K", ""])
def test_bad_size_is_a_400_on_size(size: Any) -> None:
    for m in (pixel(), tier(), preset(["1024x1024"], "1024x1024"), model()):
        with pytest.raises(InvalidParameter) as info:
            m.validate({"prompt": "a", "size": size})
        assert info.value.param == "size"


# pixel --------------------------------------------------------------------------------------
def test_pixel_size_maps_to_width_height() -> None:
    assert sized(pixel(), size="512x1024") == ({"width": 512, "height": 1024}, "512x1024")
    assert sized(pixel()) == ({"width": 1024, "height": 768}, "1024x768")
    assert sized(pixel(), size="auto") == ({"width": 1024, "height": 768}, "1024x768")


def test_pixel_size_snaps_to_multiple_within_bounds() -> None:
    # 1000 -> 992 (nearest multiple of 32), 1040 -> 1056 (tie rounds up), 1430 -> 1440 (max)
    assert sized(pixel(), size="1000x1040")[1] == "992x1056"
    assert sized(pixel(), size="1430x257")[1] == "1440x256"


def test_pixel_size_out_of_bounds_is_a_400_on_size() -> None:
    for size in ("2048x1024", "1024x100"):
        with pytest.raises(InvalidParameter) as info:
            pixel().validate({"prompt": "a", "size": size})
        assert info.value.param == "size"
        assert "256..1440" in info.value.message


def test_explicit_fields_win_over_size_and_are_not_snapped() -> None:
    assert sized(pixel(), size="512x512", width=800)[0] == {"width": 800, "height": 512}
    with pytest.raises(InvalidParameter) as info:
        pixel().validate({"prompt": "a", "size": "512x512", "width": 801})
    assert info.value.param == "width"


def test_pixel_max_megapixels() -> None:
    capped = pixel(max_megapixels=1)
    assert sized(capped, width=1024, height=960)[1] == "1024x960"  # 0.98 MP
    with pytest.raises(InvalidParameter) as explicit:
        capped.validate({"prompt": "a", "width": 1024, "height": 1024})
    assert explicit.value.param == "width" and "at most 1" in explicit.value.message
    with pytest.raises(InvalidParameter) as from_size:
        capped.validate({"prompt": "a", "size": "1440x1440"})
    assert from_size.value.param == "size"


# tier ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "ratio", "resolution", "upstream"),
    [
        ("1024x1024", "1:1", "1K", "1024x1024"),
        ("1920x1080", "16:9", "2K", "2048x1152"),
        ("1080x1920", "9:16", "2K", "1152x2048"),
        ("1200x900", "4:3", "2K", "2048x1536"),
        ("2560x1080", "21:9", "4K", "4096x1760"),
        ("8000x8000", "1:1", "4K", "4096x4096"),  # nothing covers: the largest tier
        ("1000x990", "1:1", "1K", "1024x1024"),  # nearest ratio
        ("512x512", "1:1", "1K", "1024x1024"),
    ],
)
def test_tier_translation(size: str, ratio: str, resolution: str, upstream: str) -> None:
    params, upstream_size = sized(tier(), size=size)
    assert params == {"aspect_ratio": ratio, "resolution": resolution}
    assert upstream_size == upstream


def test_tier_explicit_fields_win_and_auto_has_no_size() -> None:
    assert sized(tier(), size="1920x1080", resolution="1K")[0] == {
        "aspect_ratio": "16:9",
        "resolution": "1K",
    }
    assert sized(tier(), size="1920x1080", aspect_ratio="1:1")[0] == {
        "aspect_ratio": "1:1",
        "resolution": "2K",
    }
    assert sized(tier()) == ({"resolution": "1K", "aspect_ratio": "auto"}, None)
    assert sized(tier(None), aspect_ratio="16:9") == ({"aspect_ratio": "16:9"}, None)


# aspect ----------------------------------------------------------------------------------------
def test_aspect_translation() -> None:
    assert sized(aspect(), size="1792x1024") == ({"aspect_ratio": "16:9"}, "1024x576")
    assert sized(aspect(), size="1024x1536") == ({"aspect_ratio": "3:4"}, "768x1024")
    assert sized(aspect()) == ({"aspect_ratio": "1:1"}, "1024x1024")
    assert sized(aspect(), size="1792x1024", aspect_ratio="auto") == (
        {"aspect_ratio": "auto"},
        None,
    )


# preset ----------------------------------------------------------------------------------------
GPT = ["auto", "1024x1024", "1536x1024", "1024x1536"]


def test_preset_exact_and_nearest() -> None:
    m = preset(GPT, "auto")
    assert sized(m, size="1536x1024") == ({"image_size": "1536x1024"}, "1536x1024")
    assert sized(m, size="1792x1024") == ({"image_size": "1536x1024"}, "1536x1024")
    assert sized(m, size="512x512") == ({"image_size": "1024x1024"}, "1024x1024")
    assert sized(m, size="600x1000") == ({"image_size": "1024x1536"}, "1024x1536")
    assert sized(m) == ({"image_size": "auto"}, "auto")
    assert sized(m, size="auto") == ({"image_size": "auto"}, "auto")
    assert sized(m, size="1024x1024", image_size="auto") == ({"image_size": "auto"}, "auto")


def test_preset_nearest_prefers_aspect_then_area() -> None:
    m = preset(["512x512", "2048x2048", "2048x1024", "auto_2K"], "auto_2K")
    assert sized(m, size="1800x1800")[1] == "2048x2048"
    assert sized(m, size="600x600")[1] == "512x512"
    assert sized(m, size="1000x600")[1] == "2048x1024"
    assert sized(m)[1] == "auto_2K"
    only_named = preset(["square_hd", "landscape_16_9"], "square_hd")
    assert sized(only_named, size="1920x1080") == ({"image_size": "square_hd"}, "square_hd")


# none --------------------------------------------------------------------------------------------
def test_no_sizing_passes_size_through() -> None:
    assert sized(model(), size="1024x768") == ({}, "1024x768")
    assert sized(model(), size="auto") == ({}, "auto")
    assert sized(model()) == ({}, None)
    assert model().sizing == "none"
