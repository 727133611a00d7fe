"""Helpers for the catalog tests: build one compiled model from a dict, or write a YAML file."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from app.catalog.parameters import CompiledModel, compile_model
from app.catalog.schema import ModelConfig


def model(**fields: Any) -> CompiledModel:
    """A compiled model with sensible defaults (one route, flat $0.01) overridden by `fields`."""
    config: dict[str, Any] = {"routes": [{"provider": "p"}], "pricing": {"per_image": 0.01}}
    config.update(fields)
    return compile_model("m", ModelConfig.model_validate(config))


def write(tmp_path: Path, text: str, name: str = "models.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
