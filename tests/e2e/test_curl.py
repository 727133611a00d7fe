"""curl as a client, the way the README and OpenAI's own docs show the API: a JSON generation,
a multipart edit with repeated `image[]` parts, a stream (`-N`), and an error. Every body is
also checked against the SDK types by the e2e harness (`tests.support.sdk_contract`).

Without curl the test is skipped locally and fails under CI=true.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import Env
from tests.e2e.helpers import balance
from tests.support.sdk_contract import parse_sse


@pytest.fixture
def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but curl is not installed", pytrace=False)
        pytest.skip("curl is not installed")
    return path


def run(curl: str, env: Env, path: str, *args: str) -> tuple[int, str]:
    """curl against the gateway; (HTTP status, body)."""
    result = subprocess.run(
        [
            curl,
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "-H",
            f"Authorization: Bearer {env.secret}",
            *args,
            f"{env.gateway.base_url}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def test_curl_generates_edits_streams_and_reads_errors(env: Env, curl: str, tmp_path: Path) -> None:
    before = balance(env)
    request = {"model": "local-preview", "prompt": "a fox", "size": "128x96", "n": 2}
    status, body = run(
        curl, env, "/images/generations", "-H", "Content-Type: application/json",
        "-d", json.dumps(request),
    )  # fmt: skip
    assert status == 200
    answer = json.loads(body)
    assert [item["index"] for item in answer["data"]] == [0, 1]
    image = Image.open(io.BytesIO(base64.b64decode(answer["data"][0]["b64_json"])))
    assert image.size == (128, 96) and answer["size"] == "128x96"
    assert answer["usage"]["total_tokens"] == 0 and answer["usage"]["cost"]["total_cost"] == 0.002

    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / name)
    status, body = run(
        curl, env, "/images/edits", "-F", "model=local-preview", "-F", "prompt=greener",
        "-F", f"image[]=@{tmp_path / 'a.png'}", "-F", f"image[]=@{tmp_path / 'b.png'}",
        "-F", "size=64x64",
    )  # fmt: skip
    assert status == 200, body
    assert json.loads(body)["size"] == "64x64"

    status, body = run(
        curl, env, "/images/generations", "-N", "-H", "Content-Type: application/json",
        "-d", json.dumps({**request, "n": 1, "stream": True}),
    )  # fmt: skip
    assert status == 200
    [(name, data)] = parse_sse(body.encode())
    assert name == "image_generation.completed"
    assert json.loads(data)["usage"]["cost"]["total_cost"] == 0.001

    status, body = run(
        curl, env, "/images/generations", "-H", "Content-Type: application/json",
        "-d", json.dumps({"model": "nope", "prompt": "x"}),
    )  # fmt: skip
    assert status == 400
    assert json.loads(body)["error"]["code"] == "MODEL_NOT_FOUND"
    assert balance(env) == before - 4000
