"""The README's first command: `image-gateway serve` on the embedded default.

On an empty SQLite database it migrates, creates a demo account and key, prints the key and a
ready `curl` line, and `local-preview` answers that key at once. A restart prints the same key.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "image-gateway"


def serve(workdir: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "GATEWAY_"))}
    env["GATEWAY_CONFIG"] = str(ROOT / "config" / "models.yaml")
    env["GATEWAY_HOME"] = str(workdir)  # data/ goes here, not into the checkout
    process = subprocess.Popen(
        [str(CLI), "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed = ""
    deadline = time.monotonic() + 60
    while "curl" not in printed and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        printed += line
    assert "curl" in printed, printed
    return process, printed


def wait_ready(port: int) -> None:
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)


def test_first_start_prints_a_working_demo_key(tmp_path: Path) -> None:
    port = free_port()
    process, printed = serve(tmp_path, port)
    try:
        match = re.search(r"(sk-[A-Za-z0-9_-]{20,})", printed)
        assert match, printed
        secret = match.group(1)
        assert f"curl http://localhost:{port}/v1/images/generations" in printed
        account = re.search(r"demo account: (acct_\S+)", printed)
        assert account, printed
        assert f"image-gateway accounts show {account.group(1)}" in printed  # admin API off
        assert (tmp_path / "data" / "image-gateway.db").exists()
        wait_ready(port)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/images/generations",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "local-preview", "prompt": "a lighthouse at dusk", "size": "512x512"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
        assert image.size == (512, 512)
    finally:
        process.terminate()
        process.wait(15)

    again, printed_again = serve(tmp_path, port)
    again.terminate()
    again.wait(15)
    assert secret in printed_again  # the same demo key, not a second account
