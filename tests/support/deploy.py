"""Helpers for the deployment tests: the Docker client, external tools, commands with output.

The container and reverse-proxy tests need system packages (docker.io, docker-compose,
debootstrap, nginx) that `.ci/run` installs (`scripts/ci-setup`). Without them a test skips,
saying which script installs them; with CI=true it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(problem: str) -> None:
    message = f"{problem} (scripts/ci-setup installs and starts what these tests need)"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def docker() -> list[str]:
    """Debian's docker client (its BuildKit speaks to Debian's engine without the buildx
    plugin); another `docker` earlier on PATH may be a newer client that needs buildx."""
    debian = Path("/usr/bin/docker")
    return [str(debian)] if debian.is_file() else ["docker"]


def docker_or_skip(*, engine: bool = True, tool: str = "dockerd") -> None:
    if shutil.which(tool) is None and not Path("/usr/sbin", tool).is_file():
        missing(f"{tool} is not installed")
    if engine and tool == "dockerd" and shutil.which(docker()[0]) is None:
        missing("the docker client is not installed")


def run(
    command: Sequence[str],
    *,
    timeout: float = 300,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure (with `check`) an AssertionError carrying its output."""
    done = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"
        )
    return done


def provider_variables() -> set[str]:
    """Every ${VAR} the shipped catalog's providers read (keys, base URLs, versions)."""
    providers = yaml.safe_load((ROOT / "config" / "models.yaml").read_text())["providers"]
    found: set[str] = set()
    for provider in providers.values():
        found |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", json.dumps(provider)))
    return found
