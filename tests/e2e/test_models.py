"""`models.list` / `models.retrieve` through the SDK."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Env


def test_list_shows_visible_models_with_their_schema(env: Env) -> None:
    models = {m.id: m for m in env.client().models.list()}
    assert set(models) == {
        "local-preview",
        "gpt-image-1",
        "vendor/tier-model",
        "aspect-model",
        "pixel-model",
    }  # hidden-model's provider has no credentials
    local = models["local-preview"].model_dump()
    assert local["object"] == "model"
    assert local["parameters"]["width"] == {
        "type": "integer",
        "min": 64,
        "max": 2048,
        "multiple_of": 8,
        "default": 256,
    }
    assert local["edit"] == {"supported": True, "max_reference_images": 4}
    assert local["prompt_max_length"] == 1000
    assert local["max_n"] == 4
    assert local["output_formats"] == ["png", "jpeg", "webp"]
    assert local["output_modalities"] == ["image"]
    assert "image" in local["input_modalities"]


def test_retrieve_ids_with_slashes(env: Env) -> None:
    model = env.client().models.retrieve("vendor/tier-model")
    assert model.id == "vendor/tier-model"
    encoded = httpx.get(
        f"{env.gateway.base_url}/models/vendor%2Ftier-model",
        headers={"Authorization": f"Bearer {env.secret}"},
    )
    assert encoded.status_code == 200
    assert encoded.json()["id"] == "vendor/tier-model"
