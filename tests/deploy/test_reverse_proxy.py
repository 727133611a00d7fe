"""Three gateway processes behind a real nginx on loopback, on one Postgres and one Redis.

nginx runs the shipped `deploy/nginx/image-gateway.conf` (its upstream servers pointed at
three loopback ports), round-robin, logging which replica served each request, so the test
can see that every replica took part. Through it:

- exact money: many concurrent generations on one account whose balance covers exactly K:
  exactly K succeed, the rest get 402; the balance ends at zero and equals the sum of the
  ledger; each successful request (by its x-request-id) is charged exactly once;
- Idempotency-Key across replicas: the same key sent three times lands on three replicas and
  is charged once, every answer the same;
- shared rate limits: a key with rpm N gets exactly N requests through across the three
  replicas (each replica alone would have let N through), the rest get 429.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.support import databases, factories
from tests.support.books import assert_books_balance
from tests.support.deploy import ROOT, missing
from tests.support.processes import GatewayProcess, free_port
from tests.support.served import run_db

pytestmark = pytest.mark.slow

REPLICAS = 3
PRICE = 1_000  # $0.001, as priced below
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

CATALOG = """
providers:
  local: {adapter: local-preview}
models:
  tiny:
    routes: [{provider: local}]
    parameters:
      width:  {type: integer, min: 16, max: 64, default: 16}
      height: {type: integer, min: 16, max: 64, default: 16}
    pricing: {per_image: 0.001}
"""

SHIPPED = ROOT / "deploy" / "nginx" / "image-gateway.conf"


def nginx_binary() -> str:
    for candidate in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if Path(candidate).is_file():
            return candidate
    missing("nginx is not installed")
    raise AssertionError  # unreachable: missing() skips or fails


def nginx_config(folder: Path, listen: int, upstreams: list[int]) -> Path:
    """The shipped snippet with loopback servers, inside a minimal main configuration."""
    snippet = SHIPPED.read_text()
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams)
    snippet, replaced = re.subn(r"(?m)^    server gateway-\d+:8000;\n", "", snippet)
    assert replaced == 3, "the shipped upstream block changed: update this test"
    snippet = snippet.replace("upstream image_gateway {\n", "upstream image_gateway {\n" + servers)
    snippet, listens = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{listen};", snippet)
    assert listens == 1
    (folder / "conf.d").mkdir()
    (folder / "conf.d" / "image-gateway.conf").write_text(snippet)
    temp = folder / "temp"
    temp.mkdir()
    main = folder / "nginx.conf"
    main.write_text(
        f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
{"user root root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 2048; }}
http {{
    log_format replicas '$upstream_addr $status $request_method $uri';
    access_log {folder}/access.log replicas;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {folder}/conf.d/*.conf;
}}
"""
    )
    return main


@dataclass
class Cluster:
    url: str
    database_url: str
    gateways: list[GatewayProcess]
    access_log: Path

    def served_by(self) -> collections.Counter[str]:
        """Generations per replica (upstream address), from nginx's access log."""
        rows = [line.split() for line in self.access_log.read_text().splitlines()]
        return collections.Counter(
            row[0] for row in rows if row[2:] == ["POST", "/v1/images/generations"]
        )


@pytest.fixture
def cluster(postgres_session_url: str, tmp_path: Path) -> Iterator[Cluster]:
    nginx = nginx_binary()
    redis_problem = redis_error()
    if redis_problem:
        missing(redis_problem)
    asyncio.run(databases.truncate_postgres(postgres_session_url))
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG)
    gateways = [
        GatewayProcess(
            database_url=postgres_session_url,
            catalog=catalog,
            log_dir=tmp_path,
            REDIS_URL=REDIS_URL,
            GATEWAY_DB_POOL_SIZE="5",
        ).start()
        for _ in range(REPLICAS)
    ]
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for gateway in gateways:
            gateway.wait_ready()
        listen = free_port()
        config = nginx_config(tmp_path, listen, [g.port for g in gateways])
        check = subprocess.run(
            [nginx, "-t", "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "e.log")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        proxy = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "e.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{listen}"
        wait_for_proxy(url, proxy)
        yield Cluster(url, postgres_session_url, gateways, tmp_path / "access.log")
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                proxy.wait(20)
            except subprocess.TimeoutExpired:
                proxy.kill()
        for gateway in gateways:
            gateway.stop()


def redis_error() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is not reachable: {exc!r}"
    return None


def wait_for_proxy(url: str, proxy: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proxy.poll() is None, "nginx exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("nginx did not answer")


def seed(database_url: str, balance_micros: int, **key: object) -> tuple[str, str]:
    async def work(engine):  # type: ignore[no-untyped-def]
        account = await factories.make_account(engine, balance_micros=balance_micros)
        _, secret = await factories.make_key(engine, account, **key)  # type: ignore[arg-type]
        return account, secret

    return run_db(database_url, work)


async def fire(
    url: str, secret: str, count: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1/images/generations",
                    json={"model": "tiny", "prompt": f"p{i}"},
                    headers={"Authorization": f"Bearer {secret}", **(headers or {})},
                )
                for i in range(count)
            )
        )


def charges(database_url: str, account_id: str) -> collections.Counter[str]:
    async def read(engine):  # type: ignore[no-untyped-def]
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT request_id FROM ledger_entries "
                    "WHERE account_id = :a AND kind = 'charge'"
                ),
                {"a": account_id},
            )
            return collections.Counter(rows.scalars())

    return run_db(database_url, read)  # type: ignore[no-any-return]


def test_exact_money_through_the_proxy(cluster: Cluster) -> None:
    k, requests = 60, 180
    account, secret = seed(cluster.database_url, k * PRICE)
    responses = asyncio.run(fire(cluster.url, secret, requests))
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {200: k, 402: requests - k}, statuses
    assert all(
        r.json()["error"]["code"] == "INSUFFICIENT_BALANCE"
        for r in responses
        if r.status_code == 402
    )
    served = cluster.served_by()
    assert len(served) == REPLICAS and all(served.values()), served  # every replica served
    assert sum(served.values()) == requests

    balance = run_db(cluster.database_url, lambda e: assert_books_balance(e, account))
    assert balance == 0
    succeeded = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
    charged = charges(cluster.database_url, account)
    assert set(charged) == succeeded  # every success charged, nothing else
    assert set(charged.values()) == {1}  # and each exactly once


def test_an_idempotency_key_is_charged_once_across_replicas(cluster: Cluster) -> None:
    account, secret = seed(cluster.database_url, 100 * PRICE)

    async def send_each_three_times() -> dict[str, list[httpx.Response]]:
        answers: dict[str, list[httpx.Response]] = {}
        async with httpx.AsyncClient(timeout=60) as client:
            for n in range(8):
                key = f"retry-{n}"
                answers[key] = [
                    await client.post(  # one after the other: round-robin spreads them
                        f"{cluster.url}/v1/images/generations",
                        json={"model": "tiny", "prompt": f"same {n}"},
                        headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": key},
                    )
                    for _ in range(REPLICAS)
                ]
        return answers

    answers = asyncio.run(send_each_three_times())
    for key, responses in answers.items():
        assert [r.status_code for r in responses] == [200] * REPLICAS, key
        assert len({r.content for r in responses}) == 1, key  # the stored answer, replayed
    served = cluster.served_by()
    assert len(served) == REPLICAS, served
    balance = run_db(cluster.database_url, lambda e: assert_books_balance(e, account))
    assert balance == (100 - len(answers)) * PRICE
    assert sum(charges(cluster.database_url, account).values()) == len(answers)


def test_rate_limit_is_shared_by_the_replicas(cluster: Cluster) -> None:
    rpm, requests = 12, 48  # each replica gets ~16: alone, each would admit 12 (36 in all)
    account, secret = seed(cluster.database_url, 1_000 * PRICE, rpm=rpm)
    responses = asyncio.run(fire(cluster.url, secret, requests))
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {200: rpm, 429: requests - rpm}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "RATE_LIMITED" for r in refused)
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    served = cluster.served_by()
    assert len(served) == REPLICAS, served
    # what per-process limits would have let through, given how nginx spread the requests
    assert sum(min(count, rpm) for count in served.values()) > rpm, served
    balance = run_db(cluster.database_url, lambda e: assert_books_balance(e, account))
    assert balance == (1_000 - rpm) * PRICE
