"""The README's first command on a fresh checkout: `./scripts/serve`.

It creates `.venv` from the runtime lock only (no test or lint tools), says what it is doing,
and the gateway prints the demo account id, the admin-API hint and a key that works; the port
is chosen with `--port` (or GATEWAY_PORT). Then the README's one step for the CLI
(`source .venv/bin/activate`) makes `image-gateway` answer from any directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.deploy import ROOT
from tests.support.processes import free_port

pytestmark = pytest.mark.slow

#: in the full lock, never in the runtime one
DEV_ONLY = ("pytest", "ruff", "mypy", "openai", "playwright")


def fresh_checkout(folder: Path) -> Path:
    """The repository's files as a clone would have them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    target = folder / "checkout"
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def operator_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "GATEWAY_", "VIRTUAL_ENV", "REDIS_URL"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    return env


def test_scripts_serve_installs_the_runtime_lock_and_prints_a_working_demo(
    tmp_path: Path,
) -> None:
    checkout = fresh_checkout(tmp_path)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["./scripts/serve", "--port", str(port)],
            cwd=checkout,
            env=operator_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 900  # pip may download the runtime lock first
        while "curl" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        printed = log_path.read_text()
        assert "requirements-runtime.lock" in printed  # says what it installs
        assert "Starting image-gateway" in printed
        account = re.search(r"demo account: (acct_\S+)", printed)
        secret = re.search(r"(sk-[A-Za-z0-9_-]{20,})", printed)
        assert account and secret, printed
        assert f"image-gateway accounts show {account.group(1)}" in printed  # admin hint
        assert "GATEWAY_ADMIN_TOKEN" in printed
        assert f"http://localhost:{port}/v1/images/generations" in printed

        installed = subprocess.run(
            [str(checkout / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.lower()
        assert "fastapi==" in installed and "uvicorn==" in installed
        for tool in DEV_ONLY:
            assert f"\n{tool}==" not in f"\n{installed}", f"{tool} installed for serving"

        response = None
        for _ in range(200):
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/v1/images/generations",
                    headers={"Authorization": f"Bearer {secret.group(1)}"},
                    json={"model": "local-preview", "prompt": "first run", "size": "64x64"},
                    timeout=30,
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None and response.status_code == 200, response

        # the README's one step for the CLI, then the CLI from another directory
        cli = subprocess.run(
            ["bash", "-c", f"source {checkout}/.venv/bin/activate && image-gateway accounts list"],
            cwd=tmp_path,
            env=operator_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        assert account.group(1) in cli.stdout  # found the checkout's data/ from elsewhere
    finally:
        process.terminate()
        process.wait(30)
