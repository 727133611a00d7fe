"""Catalog reload on a running gateway (SIGHUP and `POST /admin/v1/catalog/reload`).

- A generation held mid-flight at the upstream completes, and is charged, while a reload swaps
  in a catalog that no longer has its model or its provider; afterwards the new model answers
  and the removed one is MODEL_NOT_FOUND.
- A broken file is refused with 400 CATALOG_INVALID naming the field; the old catalog serves on.
- SIGHUP on a served process (and on `serve --workers 2`, whose supervisor forwards it to each
  worker) reloads the file; a broken file on SIGHUP is logged and the old catalog kept.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import UPSTREAM_KEY, Env
from tests.mocks.openai_upstream import MockOpenAIUpstream
from tests.support.live import ADMIN_TOKEN
from tests.support.processes import free_port

#: after a reload: the local provider only, and a model that did not exist before
RELOADED = """
providers:
  local:
    adapter: local-preview
models:
  local-preview:
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 64, max: 2048, multiple_of: 8, default: 256}
      height: {type: integer, min: 64, max: 2048, multiple_of: 8, default: 256}
    pricing: {per_image: 0.001}
  fresh-model:
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 64, max: 256, default: 64}
      height: {type: integer, min: 64, max: 256, default: 64}
    pricing: {per_image: 0.002}
"""

BROKEN = RELOADED.replace("per_image: 0.002", "per_image: -5")


class GatedUpstream(MockOpenAIUpstream):
    """The mock OpenAI upstream, holding every request until `gate` is set (no timing)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(latency_s=1.0, **kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Semaphore(0)

    async def _sleep(self, seconds: float) -> None:
        self.waiting.release()
        deadline = time.monotonic() + 120  # bounded: a broken test must not hang forever
        while not self.gate.is_set() and time.monotonic() < deadline:
            await super()._sleep(0.02)


@pytest.fixture
def upstream() -> Iterator[MockOpenAIUpstream]:
    with GatedUpstream(api_key=UPSTREAM_KEY) as mock:
        yield mock


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_in_flight_request_completes_while_a_reload_swaps_the_catalog(env: Env) -> None:
    upstream = env.upstream
    assert isinstance(upstream, GatedUpstream)
    client = env.client()
    upstream.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(
            client.images.generate, model="gpt-image-1", prompt="slow one", size="1024x1024"
        )
        assert upstream.waiting.acquire(timeout=30), "the request never reached the upstream"
        env.catalog_path.write_text(RELOADED)
        with env.admin() as admin:
            response = admin.post("/catalog/reload")
        assert response.status_code == 200, response.text
        reloaded = response.json()
        assert reloaded["added"] == ["fresh-model"]
        assert "gpt-image-1" in reloaded["removed"]
        assert reloaded["workers_signalled"] is False  # one process, nobody else to tell
        assert not in_flight.done()  # still held at the upstream across the swap
        upstream.gate.set()
        result = in_flight.result(timeout=60)
    assert result.data and result.data[0].b64_json
    # charged at the old catalog's price (quality auto, 1024x1024)
    assert result.to_dict()["usage"]["cost"]["total_cost"] == pytest.approx(0.167)

    assert {m.id for m in client.models.list()} == {"local-preview", "fresh-model"}
    fresh = client.images.generate(model="fresh-model", prompt="new", size="64x64")
    assert fresh.to_dict()["usage"]["cost"]["total_cost"] == pytest.approx(0.002)
    with pytest.raises(openai.BadRequestError) as gone:
        client.images.generate(model="gpt-image-1", prompt="old", size="1024x1024")
    assert gone.value.code == "MODEL_NOT_FOUND"


def test_a_broken_file_is_refused_and_the_old_catalog_keeps_serving(env: Env) -> None:
    before = {m.id for m in env.client().models.list()}
    env.catalog_path.write_text(BROKEN)
    with env.admin() as admin:
        response = admin.post("/catalog/reload")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "CATALOG_INVALID"
    assert "models.fresh-model.pricing" in error["message"]
    assert str(env.catalog_path) in error["message"]
    assert {m.id for m in env.client().models.list()} == before
    result = env.client().images.generate(model="gpt-image-1", prompt="still here")
    assert result.data[0].b64_json


def test_reload_needs_the_admin_token(env: Env) -> None:
    response = httpx.post(
        f"{env.gateway.url}/admin/v1/catalog/reload",
        headers={"Authorization": "Bearer not-the-admin-token"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_ADMIN_TOKEN"


# -- SIGHUP on served processes ------------------------------------------------------------
#: before: local-preview alone
ONE = RELOADED[: RELOADED.index("  fresh-model:")]


def listed(url: str, secret: str) -> set[str]:
    # a new connection each time, so that `serve --workers N` spreads them over its workers
    response = httpx.get(
        f"{url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {model["id"] for model in response.json()["data"]}


def test_sighup_reloads_a_served_process(tmp_path: Path, sqlite_template: Path) -> None:
    from tests.support.databases import fresh_sqlite_copy
    from tests.support.served import served_gateway

    database_url = fresh_sqlite_copy(sqlite_template, tmp_path)
    with served_gateway(tmp_path, database_url, ONE, GATEWAY_LOG_LEVEL="info") as gw:
        catalog = tmp_path / "served-models.yaml"
        assert listed(gw.url, gw.secret) == {"local-preview"}
        catalog.write_text(RELOADED)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: "fresh-model" in listed(gw.url, gw.secret), "the reloaded catalog")
        catalog.write_text(BROKEN)
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: "catalog reload refused" in gw.log(), "the refusal in the log")
        assert "models.fresh-model.pricing" in gw.log()
        assert gw.process.process is not None and gw.process.process.poll() is None
        assert listed(gw.url, gw.secret) == {"local-preview", "fresh-model"}
        response = httpx.post(
            f"{gw.url}/v1/images/generations",
            headers=gw.auth,
            json={"model": "fresh-model", "prompt": "kept"},
            timeout=30,
        )
        assert response.status_code == 200, response.text


CLI = Path(sys.executable).parent / "image-gateway"


@pytest.mark.slow
def test_serve_workers_forwards_sighup_and_admin_reloads_to_every_worker(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(ONE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "GATEWAY_"))}
    env |= {
        "GATEWAY_HOME": str(tmp_path),
        "GATEWAY_CONFIG": str(catalog),
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_LOG_LEVEL": "info",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # a SIGHUP while the workers are still starting (no handler yet) must not kill them
        wait_for(lambda: "Started parent process" in log_path.read_text(), "the supervisor")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "demo key" in log_path.read_text(), "the banner")
        secret = re.search(r"(sk-[A-Za-z0-9_-]{20,})", log_path.read_text())
        assert secret, log_path.read_text()

        def every_worker_lists(model: str, present: bool) -> bool:
            try:
                return all((model in listed(url, secret.group(1))) is present for _ in range(12))
            except httpx.TransportError:  # not listening yet
                return False

        wait_for(lambda: every_worker_lists("local-preview", True), "two workers up")
        assert "died" not in log_path.read_text(), log_path.read_text()
        catalog.write_text(RELOADED)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: every_worker_lists("fresh-model", True), "every worker reloaded")
        # each worker logs its own refusal of a broken file: proof that both got the signal
        catalog.write_text(BROKEN)
        process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: log_path.read_text().count("catalog reload refused") == 2,
            "both workers' refusals",
        )
        assert every_worker_lists("fresh-model", True)
        # the admin endpoint, answered by one worker, reaches the other through the supervisor
        catalog.write_text(ONE)
        response = httpx.post(
            f"{url}/admin/v1/catalog/reload",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["workers_signalled"] is True
        wait_for(lambda: every_worker_lists("fresh-model", False), "every worker reloaded")
        assert process.poll() is None, log_path.read_text()
        assert "died" not in log_path.read_text(), log_path.read_text()
    finally:
        process.terminate()
        process.wait(30)
