"""The runtime lock (Docker image) and the full lock (dev, CI) pin the same versions."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", re.MULTILINE)


def pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return {m.group(1).lower(): m.group(2) for m in PIN.finditer(text)}


def test_runtime_lock_is_a_consistent_subset_of_the_full_lock() -> None:
    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime, "no pins read"
    assert {name: full.get(name) for name in runtime} == runtime
    assert "pytest" in full and "pytest" not in runtime


def test_the_bench_extras_do_not_move_a_package_the_full_lock_pins() -> None:
    # they are pip-installed into the dev venv on first use: a different pin would silently
    # replace a locked package there (python-dateutil 4 under botocore, once)
    extras, full = pins("bench/requirements.txt"), pins("requirements.lock")
    assert extras, "no pins read"
    assert {name: full[name] for name in extras if name in full} == {
        name: version for name, version in extras.items() if name in full
    }
