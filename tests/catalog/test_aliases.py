"""Model aliases (`aliases:` in the catalog): resolved per account, listed, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog import CatalogError, load_catalog
from tests.catalog.factories import write

CATALOG = """\
providers:
  local: {adapter: local-preview}
  keyed: {adapter: openai, api_key: "${MISSING_KEY}"}
models:
  small:
    routes: [{provider: local}]
    pricing: {per_image: 0.01}
  large:
    routes: [{provider: local}]
    pricing: {per_image: 0.02}
  hidden:
    routes: [{provider: keyed}]
    pricing: {per_image: 0.02}
aliases:
"""


def load(tmp_path: Path, aliases: str):  # type: ignore[no-untyped-def]
    return load_catalog(write(tmp_path, CATALOG + aliases), {})


def test_an_alias_resolves_per_account_and_is_listed(tmp_path: Path) -> None:
    catalog = load(
        tmp_path,
        "  img: {model: small, accounts: {acct_big: large}}\n  short: small\n",
    )
    assert catalog.get("img").id == "small"  # type: ignore[union-attr]
    assert catalog.get("img", "acct_other").id == "small"  # type: ignore[union-attr]
    assert catalog.get("img", "acct_big").id == "large"  # type: ignore[union-attr]
    assert catalog.get("short").id == "small"  # type: ignore[union-attr]
    assert catalog.get("nope") is None
    listed = [(name, model.id) for name, model in catalog.listed("acct_big")]
    assert listed == [("small", "small"), ("large", "large"), ("img", "large"), ("short", "small")]


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ("  small: large\n", "aliases.small: alias 'small' is also a model id"),
        ("  img: missing\n", "aliases.img.model: alias target 'missing' is not a model"),
        (
            "  img: {model: small, accounts: {acct_x: missing}}\n",
            "aliases.img.accounts.acct_x: alias target 'missing'",
        ),
        ("  img: {target: small}\n", "aliases.img"),
    ],
)
def test_bad_aliases_fail_start_up_naming_the_field(
    tmp_path: Path, aliases: str, message: str
) -> None:
    with pytest.raises(CatalogError) as info:
        load(tmp_path, aliases)
    assert message in str(info.value)


def test_an_alias_of_a_hidden_model_is_hidden_with_a_warning(tmp_path: Path) -> None:
    catalog = load(tmp_path, "  img: hidden\n")
    assert catalog.get("img") is None
    assert "alias 'img' is hidden: its model 'hidden' is hidden" in catalog.warnings
