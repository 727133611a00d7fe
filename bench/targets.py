"""Starting what the benchmark measures: the mock, image-gateway (Postgres or SQLite, 1 or 2
workers) and the LiteLLM proxy, all on 127.0.0.1 with ephemeral ports.

The gateway runs exactly as an operator runs it: `image-gateway serve` (migrations, uvicorn,
access log off as shipped, billing, request log and every middleware on), default settings
except the catalog (one model, `gpt-image-1`, routed to the mock at $0.001 per image) and
the database. Its account and key are made with the CLI, like an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg

from bench.procs import Target, spawn, wait_http

ROOT = Path(__file__).resolve().parents[1]


def _find_peer() -> Path:
    """`shared/` sits beside the repository (a clone) or two levels up (a git worktree)."""
    override = os.environ.get("BENCH_LITELLM_PROXY")
    if override:
        return Path(override)
    for folder in (ROOT.parent, ROOT.parent.parent):
        candidate = folder / "shared" / "peers" / "litellm-proxy"
        if candidate.exists():
            return candidate
    return ROOT.parent / "shared" / "peers" / "litellm-proxy"


PEER = _find_peer()
CLI = ROOT / ".venv" / "bin" / "image-gateway"
PRICE_MICROS = 1000
OPENING_BALANCE_USD = 1_000_000

CATALOG = """\
providers:
  mock: {{adapter: openai, base_url: "{upstream}", api_key: sk-upstream, timeout_s: 120}}
models:
  gpt-image-1:
    routes: [{{provider: mock}}]
    max_n: 4
    output_formats: [png, jpeg, webp]
    parameters:
      image_size: {{type: enum, values: [auto, 1024x1024, 1536x1024, 1024x1536], default: auto}}
    pricing: {{per_image: 0.001}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_mock(workdir: Path) -> Target:
    log = workdir / "mock.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py")],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().decode().strip()
    if not base_url:
        raise RuntimeError(f"the mock upstream did not start; see {log}")
    return Target("direct", f"{base_url}/images/generations", "sk-upstream", process)


async def _recreate_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def database_url(db: str, admin_url: str, workdir: Path, label: str) -> str:
    if db == "sqlite":
        path = workdir / f"{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    name = f"igw_bench_{os.getpid()}_{label}"
    asyncio.run(_recreate_database(admin_url, name))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [str(CLI), *args], env=env, check=True, capture_output=True, text=True, cwd=ROOT
    )
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


def start_gateway(
    *, name: str, upstream: str, database: str, workers: int, workdir: Path
) -> Target:
    catalog = workdir / "bench-models.yaml"
    catalog.write_text(CATALOG.format(upstream=upstream))
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "GATEWAY_CONFIG": str(catalog),
        "GATEWAY_LOG_LEVEL": "warning",
    }
    subprocess.run([str(CLI), "migrate"], env=env, check=True, capture_output=True, cwd=ROOT)
    account = _cli(
        env, "accounts", "create", "bench", "--balance", str(OPENING_BALANCE_USD), "--json"
    )
    key = _cli(env, "keys", "create", str(account["id"]), "--name", "bench", "--json")
    port = free_port()
    log = workdir / f"{name}.log"
    process = spawn(
        [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        log=log,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", process=process, timeout_s=60, log=log)
    url = f"http://127.0.0.1:{port}/v1/images/generations"
    return Target(name, url, str(key["key"]), process, database, str(account["id"]))


def litellm_available() -> bool:
    return PEER.exists()


def start_litellm(*, upstream: str, workdir: Path) -> Target:
    """The peer script installs litellm[proxy] into /tmp/litellm-venv on first use (minutes)."""
    port = free_port()
    log = workdir / "litellm.log"
    process = spawn([str(PEER), upstream, str(port)], log=log)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", process=process, timeout_s=900, log=log)
    return Target("litellm", f"http://127.0.0.1:{port}/v1/images/generations", "sk-bench", process)
