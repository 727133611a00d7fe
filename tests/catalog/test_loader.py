"""load_catalog: env substitution, cross-checks with precise error paths, hidden models."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.catalog import CatalogError, load_catalog
from tests.catalog.factories import write

REPO_CATALOG = Path(__file__).resolve().parents[2] / "config" / "models.yaml"

PROVIDERS = """\
providers:
  local: {adapter: local-preview}
"""


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path, env or {})
    return str(info.value)


def one_model(body: str) -> str:
    """A catalog with the keyless provider and model `m` whose entry is `body` (YAML)."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return PROVIDERS + "models:\n  m:\n    routes: [{provider: local}]\n" + indented + "\n"


# the shipped catalog -------------------------------------------------------------------------
#: every provider secret the shipped catalog references
ALL_KEYS = (
    "OPENAI_API_KEY", "XAI_API_KEY", "GEMINI_API_KEY", "BFL_API_KEY", "STABILITY_API_KEY",
    "ARK_API_KEY", "FAL_KEY", "REPLICATE_API_TOKEN",
)  # fmt: skip


def test_default_catalog_without_secrets_shows_only_local_preview(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.catalog.loader"):
        catalog = load_catalog(REPO_CATALOG, {})
    assert list(catalog.models) == ["local-preview"]
    assert list(catalog.providers) == ["local"]
    assert catalog.get("gpt-image-1") is None
    # lines grouped by what is missing: every missing key is named, every hidden model once
    assert all(any(key in w for w in catalog.warnings) for key in ALL_KEYS)
    hidden = load_catalog(REPO_CATALOG, dict.fromkeys(ALL_KEYS, "k")).models.keys() - {
        "local-preview"
    }
    for model in hidden:
        assert sum(f"'{model}'" in w for w in catalog.warnings) == 1, model
    assert len(catalog.warnings) < len(hidden)
    assert any(
        "'gpt-image-1', 'dall-e-3' are hidden" in w and "OPENAI_API_KEY" in w
        for w in catalog.warnings
    )
    assert any("grok-2-image" in w and "XAI_API_KEY" in w for w in catalog.warnings)
    assert [r.getMessage() for r in caplog.records] == [f"catalog: {w}" for w in catalog.warnings]


def test_default_catalog_with_secrets_shows_everything() -> None:
    env = {name: "k-test" for name in ALL_KEYS} | {"OPENAI_API_KEY": "sk-test"}
    catalog = load_catalog(REPO_CATALOG, env)
    assert list(catalog.models)[:4] == ["local-preview", "gpt-image-1", "dall-e-3", "grok-2-image"]
    assert {"nano-banana-pro", "flux-pro-1.1", "stable-image-ultra", "seedream-4.5"} <= set(
        catalog.models
    )
    assert catalog.warnings == []
    assert catalog.providers["openai"].api_key == "sk-test"
    assert catalog.providers["openai"].base_url == "https://api.openai.com/v1"
    assert catalog.providers["xai"].base_url == "https://api.x.ai/v1"
    local = catalog.models["local-preview"]
    assert local.sizing == "pixel"
    assert local.public["parameters"]["width"] == {
        "type": "integer",
        "min": 64,
        "max": 2048,
        "multiple_of": 8,
        "default": 1024,
    }
    gpt = catalog.models["gpt-image-1"]
    assert gpt.sizing == "preset"
    assert catalog.models["grok-2-image"].sizing == "none"


def test_base_url_override_from_env() -> None:
    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://localhost:9000/v1"}
    catalog = load_catalog(REPO_CATALOG, env)
    assert catalog.providers["openai"].base_url == "http://localhost:9000/v1"


# env substitution ----------------------------------------------------------------------------
def test_substitution_in_every_string(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          up:
            adapter: openai
            base_url: ${BASE:-http://fallback/v1}
            api_key: key-${KEY}
            headers: {X-Org: "${ORG}", X-Literal: "$${NOT_A_VAR}", X-Empty: "${EMPTY:-dflt}"}
            timeout_s: ${TIMEOUT:-30}
        models:
          m:
            routes: [{provider: up, upstream_model: "${UPSTREAM:-m-1}"}]
            pricing: {per_image: 0.01}
        """,
    )
    catalog = load_catalog(path, {"KEY": "abc", "ORG": "acme", "EMPTY": ""})
    provider = catalog.providers["up"]
    assert provider.base_url == "http://fallback/v1"
    assert provider.api_key == "key-abc"
    assert provider.headers == {"X-Org": "acme", "X-Literal": "${NOT_A_VAR}", "X-Empty": "dflt"}
    assert provider.timeout_s == 30.0
    assert catalog.models["m"].routes[0].upstream_model == "m-1"


def test_empty_optional_provider_fields_are_unset(tmp_path: Path) -> None:
    text = "providers:\n  up: {adapter: bfl, base_url: '${BFL_URL}', api_key: k, api_version: ''}\n"
    provider = load_catalog(write(tmp_path, text), {}).providers["up"]
    assert (provider.base_url, provider.api_version, provider.api_key) == (None, None, "k")


@pytest.mark.parametrize("value", ["${UNCLOSED", "${1BAD}", "${}"])
def test_bad_variable_reference(tmp_path: Path, value: str) -> None:
    message = load_error(
        tmp_path, f'providers:\n  up: {{adapter: openai, api_key: "{value}"}}\nmodels: {{}}\n'
    )
    assert message.startswith(f"{tmp_path / 'models.yaml'}: providers.up.api_key: ")


# hidden models --------------------------------------------------------------------------------
FALLBACK = """\
providers:
  paid: {adapter: bfl, api_key: "${PAID_KEY}"}
  selfhosted: {adapter: openai, base_url: "http://gpu:8000/v1", options: {auth: none}}
  nokey: {adapter: openai, base_url: "http://x/v1"}
models:
  both:
    routes: [{provider: paid}, {provider: selfhosted}]
    pricing: {per_image: 0.01}
  paid-only:
    routes: [{provider: paid}]
    pricing: {per_image: 0.01}
  plain-openai:
    routes: [{provider: nokey}]
    pricing: {per_image: 0.01}
"""


def test_models_keep_only_usable_routes(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, FALLBACK), {})
    assert list(catalog.models) == ["both"]
    assert [r.provider for r in catalog.models["both"].routes] == ["selfhosted"]
    assert set(catalog.providers) == {"selfhosted"}
    assert catalog.warnings == [
        "model 'both': routes skipped (provider 'paid': set PAID_KEY)",
        "model 'paid-only' is hidden: no usable route (provider 'paid': set PAID_KEY)",
        "model 'plain-openai' is hidden: no usable route (provider 'nokey': no api_key)",
    ]


def test_key_present_keeps_all_routes(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, FALLBACK), {"PAID_KEY": "secret"})
    assert list(catalog.models) == ["both", "paid-only"]
    assert [r.provider for r in catalog.models["both"].routes] == ["paid", "selfhosted"]


def test_hidden_models_are_still_validated(tmp_path: Path) -> None:
    text = FALLBACK.replace("paid-only:\n    routes", "paid-only:\n    max_n: 9\n    routes")
    message = load_error(tmp_path, text)
    assert "models.paid-only.max_n: Input should be less than or equal to 4" in message


# error messages name file, model and field ------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        (
            "parameters:\n  resolution: {type: enum, values: [1K, 2K], default: 8K}\n"
            "pricing: {per_image: 0.1}",
            "models.m.parameters.resolution.default",
            "'8K' is not allowed",
        ),
        (
            "parameters:\n  steps: {type: integer, min: 1, max: 50, default: 80}\n"
            "pricing: {per_image: 0.1}",
            "models.m.parameters.steps.default",
            "between 1 and 50",
        ),
        (
            "parameters:\n  steps: {type: integer, multiple_of: 4, default: 6}\n"
            "pricing: {per_image: 0.1}",
            "models.m.parameters.steps.default",
            "multiple of 4",
        ),
        (
            "parameters:\n  steps: {type: integer, min: 9, max: 3}\npricing: {per_image: 0.1}",
            "models.m.parameters.steps.min",
            "above max",
        ),
        (
            "parameters:\n  steps: {type: integer, default: fast}\npricing: {per_image: 0.1}",
            "models.m.parameters.steps.default",
            "valid integer",
        ),
        (
            "parameters:\n  steps: {type: integr}\npricing: {per_image: 0.1}",
            "models.m.parameters.steps",
            "does not match any of the expected tags",
        ),
        ("colour: red\npricing: {per_image: 0.1}", "models.m.colour", "Extra inputs"),
        ("pricing: {per_image: 0.0000001}", "models.m.pricing.per_image", "finer than one"),
        ("pricing: {per_image: -1}", "models.m.pricing.per_image", "negative"),
        ("pricing: {}", "models.m.pricing", "exactly one of"),
        (
            "pricing: {per_image: 0.1, per_megapixel: 0.01}",
            "models.m.pricing",
            "found per_image, per_megapixel",
        ),
        (
            "pricing: {per_image: {by: resolution, values: {1K: 0.1}}}",
            "models.m.pricing.per_image.by",
            "does not declare",
        ),
        (
            "parameters:\n  speed: {type: enum, values: [slow, fast, turbo], default: fast}\n"
            "pricing: {per_image: {by: speed, values: {slow: 0.1, fast: 0.2}}}",
            "models.m.pricing.per_image.values",
            "no price for speed = turbo",
        ),
        (
            "parameters:\n  quality: {type: enum, values: [low, high]}\n"
            "pricing: {per_image: {by: [quality, size], values: {low: {1024x1024: 0.1},"
            " high: {1024x1024: 0.1, 1024x1536: 0.1x}}}}",
            "models.m.pricing.per_image.values.high.1024x1536",
            "not a decimal amount",
        ),
        (
            "parameters:\n  quality: {type: enum, values: [low, high]}\n"
            "pricing: {per_image: {by: quality, values: {low: 0.1, high: 0.2, hgh: 0.3}}}",
            "models.m.pricing.per_image.values",
            "hgh is not a value of quality",
        ),
        (
            "parameters:\n  steps: {type: integer}\n"
            "pricing: {per_image: {by: steps, values: {1: 0.1}}}",
            "models.m.pricing.per_image.by",
            "needs an enum or boolean parameter",
        ),
        (
            "pricing: {per_image: {price: 0.1, by: x, values: {a: 1}}}",
            "models.m.pricing.per_image",
            "not both",
        ),
        ("pricing: {per_megapixel: 0.01}", "models.m.pricing.per_megapixel", "bounded"),
        ("output_formats: []\npricing: {per_image: 0.1}", "models.m.output_formats", "at least 1"),
        ("output_formats: [gif]\npricing: {per_image: 0.1}", "models.m.output_formats.0", "png"),
        (
            "parameters:\n  aspect_ratio: {type: enum, values: [1:1, 16:9]}\n"
            "pricing: {per_image: 0.1}",
            "models.m.parameters.aspect_ratio.values",
            "quote them",
        ),
        (
            "parameters:\n  resolution: {type: enum, values: [1K, big]}\n"
            "  aspect_ratio: {type: enum, values: ['1:1']}\npricing: {per_image: 0.1}",
            "models.m.parameters.resolution.values",
            "'big' is not a tier",
        ),
        (
            "parameters:\n  resolution: {type: enum, values: [1K]}\npricing: {per_image: 0.1}",
            "models.m.parameters",
            "resolution needs aspect_ratio",
        ),
        (
            "parameters:\n  width: {type: integer}\npricing: {per_image: 0.1}",
            "models.m.parameters",
            "declared together",
        ),
        (
            "parameters:\n  image_size: {type: enum, values: [1024x1024]}\n"
            "  aspect_ratio: {type: enum, values: ['1:1']}\npricing: {per_image: 0.1}",
            "models.m.parameters",
            "mix styles",
        ),
        (
            "parameters:\n  n: {type: integer}\npricing: {per_image: 0.1}",
            "models.m.parameters.n",
            "common request field",
        ),
        (
            "parameters:\n  quality: {type: string}\npricing: {per_image: 0.1}",
            "models.m.parameters.quality.type",
            "enum",
        ),
    ],
)
def test_errors_name_the_field(tmp_path: Path, body: str, where: str, what: str) -> None:
    message = load_error(tmp_path, one_model(body))
    prefix = f"{tmp_path / 'models.yaml'}: {where}: "
    assert prefix in message, message
    assert what in message.split(prefix, 1)[1], message


def test_route_to_unknown_provider(tmp_path: Path) -> None:
    text = (
        PROVIDERS + "models:\n  m:\n    routes: [{provider: google}]\n    pricing: {per_image: 1}"
    )
    message = load_error(tmp_path, text)
    assert message == (
        f"{tmp_path / 'models.yaml'}: models.m.routes.0.provider: "
        "unknown provider 'google' (declared: local)"
    )


def test_duplicate_model_id(tmp_path: Path) -> None:
    text = one_model("pricing: {per_image: 1}") + "  m:\n    routes: []\n"
    assert "duplicate key 'm'" in load_error(tmp_path, text)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    assert "invalid YAML" in load_error(tmp_path, "models: [unclosed\n")
    assert "top level must be a mapping" in load_error(tmp_path, "- a\n- b\n")
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(tmp_path / "absent.yaml", {})


def test_empty_file_is_an_empty_catalog(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, ""), {})
    assert catalog.models == {} and catalog.providers == {} and catalog.warnings == []
