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
