"""`serve --workers 2`: one `/metrics` answer covers both workers (prometheus-client's
multiprocess mode), and the metrics directory lives and dies with `serve`.

- Requests are sent until each worker has answered some (read from each worker's own counter
  file); then every scrape, whichever worker answers it, reports the exact total sent.
- A worker killed with SIGKILL is replaced; its live gauges leave the merged view while its
  counts stay in the totals.
- The private directory `serve` created is gone after it exits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support import factories
from tests.support.metrics import parse, scrape
from tests.support.serve_command import ServeCommand
from tests.support.served import run_db

pytestmark = pytest.mark.slow

CATALOG = """
providers:
  local:
    adapter: local-preview
    options: {latency_ms: 50}
models:
  tiny:
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 16, max: 64, default: 16}
      height: {type: integer, min: 16, max: 64, default: 16}
    pricing: {per_image: 0.001}
"""
GENERATED = "image_gateway_requests_total"


@pytest.fixture
def postgres_url(postgres_session_url: str) -> str:
    from tests.support import databases

    asyncio.run(databases.truncate_postgres(postgres_session_url))
    return postgres_session_url


def worker_files(directory: Path, kind: str) -> dict[int, Path]:
    """`<kind>_<pid>.db` files by pid (kind: counter, histogram, gauge_livesum, ...)."""
    found: dict[int, Path] = {}
    for path in directory.glob(f"{kind}_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit():
            found[int(pid)] = path
    return found


def answered_by(path: Path, scratch: Path) -> float:
    """Generations one worker answered, read from its own counter file alone."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    shutil.copy(path, scratch / path.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(scratch))  # type: ignore[no-untyped-call]
    from prometheus_client import generate_latest

    return parse(generate_latest(registry).decode()).value(GENERATED, status="200")


async def generate(url: str, secret: str, count: int) -> list[int]:
    async def one(i: int) -> int:
        # a fresh connection per request, so the kernel may hand it to either worker
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{url}/v1/images/generations",
                json={"model": "tiny", "prompt": f"p{i}"},
                headers={"Authorization": f"Bearer {secret}"},
            )
            return response.status_code

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_two_workers_one_view(postgres_url: str, tmp_path: Path) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    temp = tmp_path / "tmp"
    temp.mkdir()

    async def seed(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=100_000_000)
        _, secret = await factories.make_key(engine, account)
        return secret

    secret = run_db(postgres_url, seed)
    with ServeCommand(
        database_url=postgres_url, catalog=catalog, log_dir=tmp_path, workers=2, TMPDIR=str(temp)
    ) as served:
        (directory,) = temp.glob("image-gateway-metrics-*")
        sent = 0
        deadline = time.monotonic() + 120
        while True:
            statuses = asyncio.run(generate(served.url, secret, 8))
            assert statuses == [200] * 8
            sent += 8
            counters = worker_files(directory, "counter")
            per_worker = {
                pid: answered_by(path, tmp_path / "scratch") for pid, path in counters.items()
            }
            if len([n for n in per_worker.values() if n > 0]) >= 2:
                break
            assert time.monotonic() < deadline, f"one worker answered everything: {per_worker}"
        assert sum(per_worker.values()) == sent

        for _ in range(8):  # each scrape may land on either worker: all must see everything
            samples = scrape(served.url)
            assert samples.value(GENERATED, endpoint="generations", status="200") == sent
            assert samples.value("image_gateway_images_total", model="tiny") == sent
            assert samples.value("image_gateway_in_flight", endpoint="generations") == 0
            assert samples.value("image_gateway_pool_size", pool="database") > 0

        # a worker dies: it is replaced, its live gauges go, its counts stay
        victim = max(per_worker, key=lambda pid: per_worker[pid])
        os.kill(victim, signal.SIGKILL)
        while victim in worker_files(directory, "gauge_livesum"):
            assert time.monotonic() < deadline + 60, "the dead worker's gauges were kept"
            time.sleep(0.1)
        served.wait_ready()
        samples = scrape(served.url)
        assert samples.value(GENERATED, endpoint="generations", status="200") == sent
    assert not directory.exists(), "serve left its metrics directory behind"
