"""Helpers for CLI tests: read what `image-gateway` printed (CliRunner results)."""

from __future__ import annotations

import json
import re
from typing import Any

from typer.testing import Result


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def table(result: Result) -> list[list[str]]:
    """The printed table as rows of cells (columns are separated by two or more spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines() if line]
