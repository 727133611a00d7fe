"""`images.generate` through the official SDK: local-preview and the openai adapter (mock upstream),
every response format, every sizing style, and what the client is charged."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.support.books import assert_books_balance


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def balance(env: Env) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return await assert_books_balance(engine, env.account_id)

    return env.run(read)


def test_local_preview_b64_with_size(env: Env) -> None:
    before = balance(env)
    result = env.client().images.generate(model="local-preview", prompt="a red fox", size="512x384")
    image = decode(result.data[0].b64_json)
    assert image.format == "PNG"
    assert image.size == (512, 384)
    assert result.size == "512x384"
    assert result.data[0].index == 0
    assert result.to_dict()["usage"]["cost"]["total_cost"] == 0.001
    assert balance(env) == before - 1000


def test_local_preview_url_format_is_inline_data_uri(env: Env) -> None:
    result = env.client().images.generate(
        model="local-preview",
        prompt="a blue whale",
        response_format="url",
        output_format="webp",
        n=2,
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.url is not None
        prefix = "data:image/webp;base64,"
        assert item.url.startswith(prefix)
        assert decode(item.url[len(prefix) :]).format == "WEBP"


def test_local_preview_pixel_fields_via_extra_body_and_jpeg(env: Env) -> None:
    result = env.client().images.generate(
        model="local-preview",
        prompt="a cat",
        output_format="jpeg",
        extra_body={"width": 320, "height": 200, "seed": 7},
    )
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == ("JPEG", (320, 200))
    again = env.client().images.generate(
        model="local-preview",
        prompt="a cat",
        output_format="jpeg",
        extra_body={"width": 320, "height": 200, "seed": 7},
    )
    assert again.data[0].b64_json == result.data[0].b64_json  # deterministic from prompt+seed


def test_openai_adapter_b64_preset_and_quality_pricing(env: Env) -> None:
    before = balance(env)
    result = env.client().images.generate(
        model="gpt-image-1",
        prompt="a lighthouse",
        size="1536x1024",
        quality="low",
        n=2,
    )
    assert len(result.data) == 2
    assert decode(result.data[0].b64_json).size == (1536, 1024)
    assert result.size == "1536x1024"
    sent = env.upstream.requests[-1]
    assert sent.json["model"] == "gpt-image-1"
    assert sent.json["size"] == "1536x1024"
    assert sent.json["quality"] == "low"
    assert sent.json["n"] == 2
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret-0123456789"
    assert balance(env) == before - 2 * 16_000


def test_openai_adapter_url_mode_upstream_is_downloaded_and_inlined(env: Env) -> None:
    env.upstream.mode = "url"
    result = env.client().images.generate(
        model="gpt-image-1",
        prompt="a harbour",
        size="1024x1024",
        response_format="url",
    )
    url = result.data[0].url
    assert url is not None and url.startswith("data:image/png;base64,")
    assert decode(url.split(",", 1)[1]).size == (1024, 1024)


def test_transcodes_when_upstream_returns_another_format(env: Env) -> None:
    env.upstream.image_format = "jpeg"
    result = env.client().images.generate(
        model="pixel-model",
        prompt="a bridge",
        output_format="webp",
        size="512x512",
    )
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == ("WEBP", (512, 512))


@pytest.mark.parametrize(
    ("model", "extra_body", "expected_size"),
    [
        ("vendor/tier-model", {"aspect_ratio": "16:9", "resolution": "1K"}, "1024x576"),
        ("aspect-model", {"aspect_ratio": "9:16"}, "576x1024"),
        ("gpt-image-1", {"image_size": "1024x1536"}, "1024x1536"),
        ("pixel-model", {"width": 768, "height": 512}, "768x512"),
    ],
)
def test_each_sizing_style_via_extra_body(
    env: Env, model: str, extra_body: dict[str, object], expected_size: str
) -> None:
    result = env.client().images.generate(model=model, prompt="p", extra_body=extra_body)
    assert env.upstream.requests[-1].json["size"] == expected_size
    assert result.size == expected_size
    width, height = (int(v) for v in expected_size.split("x"))
    assert decode(result.data[0].b64_json).size == (width, height)


def test_plain_size_is_translated_for_tier_model(env: Env) -> None:
    before = balance(env)
    result = env.client().images.generate(model="vendor/tier-model", prompt="p", size="1792x1024")
    sent = env.upstream.requests[-1].json
    assert sent["model"] == "tier-upstream"
    # nearest ratio 16:9; 1K (1024) does not cover the longer side 1792, 2K does
    assert sent["size"] == "2048x1152"
    assert result.size == "2048x1152"
    assert balance(env) == before - 200_000  # the 2K price


def test_foreign_sizing_fields_are_ignored_and_unknown_fields_forwarded(env: Env) -> None:
    env.client().images.generate(
        model="aspect-model",
        prompt="p",
        extra_body={"width": 999, "resolution": "4K", "style_preset": "noir"},
    )
    sent = env.upstream.requests[-1].json
    assert "width" not in sent and "resolution" not in sent
    assert sent["style_preset"] == "noir"


def test_per_megapixel_charges_the_actual_output(env: Env) -> None:
    before = balance(env)
    result = env.client().images.generate(model="pixel-model", prompt="p", size="512x512")
    cost = result.to_dict()["usage"]["cost"]["total_cost"]
    # 512*512 = 0.262144 MP at $0.01/MP = $0.00262144 -> rounded up to the micro-dollar
    assert cost == 0.002622
    assert balance(env) == before - 2622
