"""Benchmark: image-gateway vs the LiteLLM proxy, in front of the same mock OpenAI upstream.

    .venv/bin/python scripts/bench.py [--requests N] [--concurrency 1,16,64] [--db sqlite|postgres]

Everything runs on loopback: the mock upstream (its own process, one cached PNG per size, so
the upstream costs the same for everyone), image-gateway (one uvicorn worker, billing on),
the LiteLLM proxy (`../shared/peers/litellm-proxy`, one worker), and this load generator
(httpx, keep-alive). Each target gets the same JSON body for `gpt-image-1` at 1024x1024,
`b64_json`; the script reports throughput and latency percentiles, plus the direct-to-mock
baseline so a gateway's own overhead can be read off. Not a test: numbers go in the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "litellm-proxy"
sys.path.insert(0, str(ROOT))

from tests.support.processes import free_port  # noqa: E402

BODY = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "size": "1024x1024", "n": 1}
CATALOG = """
providers:
  mock: {{adapter: openai, base_url: "{upstream}", api_key: sk-upstream}}
models:
  gpt-image-1:
    routes: [{{provider: mock}}]
    max_n: 4
    output_formats: [png, jpeg, webp]
    parameters:
      image_size: {{type: enum, values: [auto, 1024x1024, 1536x1024, 1024x1536], default: auto}}
    pricing: {{per_image: 0.001}}
"""


def wait_http(url: str, timeout_s: float = 180, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2, headers=headers)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def load(url: str, key: str, total: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    # the load generator must cost as little CPU as possible: this 2-core box also runs the
    # mock, the gateway under test and Postgres (httpcore's pool would eat a core at c=64)
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(min(50, total)):  # warm-up: connections, caches, JIT-less but lazy paths
            await client.post(url, json=BODY, headers=headers)
        queue = iter(range(total))

        async def worker() -> None:
            nonlocal errors
            for _ in queue:
                started = time.perf_counter()
                response = await client.post(url, json=BODY, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or b"b64_json" not in response.content:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
    }


def start_gateway(
    upstream: str, db: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], str, str]:
    catalog = workdir / "bench-models.yaml"
    catalog.write_text(CATALOG.format(upstream=upstream))
    if db == "postgres":
        database_url = "postgresql://postgres@127.0.0.1:5432/igw_bench"
        subprocess.run(
            [
                "psql",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-c",
                "DROP DATABASE IF EXISTS igw_bench WITH (FORCE)",
                "-c",
                "CREATE DATABASE igw_bench",
            ],
            check=True,
        )
    else:
        database_url = f"sqlite:///{workdir}/bench.db"
        Path(f"{workdir}/bench.db").unlink(missing_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_CONFIG": str(catalog),
        "GATEWAY_LOG_LEVEL": "warning",
    }
    cli = [str(ROOT / ".venv/bin/image-gateway")]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    account = subprocess.run(
        [*cli, "accounts", "create", "bench", "--balance", "100000", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    import json

    account_id = json.loads(account)["id"]
    key = subprocess.run(
        [*cli, "keys", "create", account_id, "--name", "bench", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    secret = json.loads(key)["key"]
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=ROOT,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process, f"http://127.0.0.1:{port}/v1/images/generations", secret


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    workdir = Path("/tmp/igw-bench")
    workdir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mock = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/mock_upstream.py"), "--fixed-png"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        procs.append(mock)
        assert mock.stdout is not None
        upstream = mock.stdout.readline().decode().strip()
        gateway, gateway_url, secret = start_gateway(upstream, args.db, workdir)
        procs.append(gateway)
        targets = {
            "mock upstream (direct)": (f"{upstream}/images/generations", "sk-upstream"),
            f"image-gateway ({args.db})": (gateway_url, secret),
        }
        if not args.skip_litellm:
            port = free_port()
            litellm = subprocess.Popen(
                [str(PEER), upstream, str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(litellm)
            wait_http(f"http://127.0.0.1:{port}/health/liveliness")
            targets["litellm-proxy 1.100.5"] = (
                f"http://127.0.0.1:{port}/v1/images/generations",
                "sk-bench",
            )
        print(f"{args.requests} requests per row, gpt-image-1 1024x1024 b64_json, loopback\n")
        print(f"{'target':28} {'conc':>5} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for name, (url, key) in targets.items():
                result = asyncio.run(load(url, key, args.requests, concurrency))
                print(
                    f"{name:28} {concurrency:>5} {result['rps']:>9.1f} {result['p50_ms']:>9.2f}"
                    f" {result['p99_ms']:>9.2f} {result['errors']:>7.0f}",
                    flush=True,
                )
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
