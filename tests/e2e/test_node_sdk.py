"""The official openai **Node** SDK against a live gateway: models.list, images.generate,
images.edit with two files, a streamed generation, and an error surfacing as the SDK's
`BadRequestError` with our `code` and `param`.

`scripts/test` installs the pinned SDK (`tests/node/package-lock.json`) with `npm ci`. Without
Node the test is skipped locally and fails under CI=true: never silently skipped in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Env

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def node_ready() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        return "the Node SDK is not installed (run: npm ci --prefix tests/node)"
    return None


def test_node_sdk_generates_lists_and_raises(env: Env) -> None:
    problem = node_ready()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {problem}", pytrace=False)
        pytest.skip(problem)
    result = subprocess.run(
        ["node", str(NODE_DIR / "sdk_check.mjs"), env.gateway.base_url, env.secret],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert "local-preview" in seen["models"]
    assert seen["size"] == "320x200"
    assert seen["jpeg"] is True
    assert seen["cost"] == 0.001
    assert seen["editSize"] == "128x96"
    assert seen["streamTypes"] == ["image_generation.completed"] * 2
    assert seen["streamCost"] == 0.002
    assert seen["error"] == {
        "status": 400,
        "code": "MODEL_NOT_FOUND",
        "param": "model",
        "type": "invalid_request_error",
        "name": "BadRequestError",
    }
