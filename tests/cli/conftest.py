"""`run`: invoke the CLI in-process against the test database, asserting its exit code."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner, Result

from app.cli import cli


@pytest.fixture
def run(database_url: str) -> Any:
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), env={"DATABASE_URL": database_url})
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return invoke
