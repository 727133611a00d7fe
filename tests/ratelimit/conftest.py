"""Fixtures for the rate limiter tests: a fake clock, the shared Redis, a private Redis.

`limiters` is parametrized over both implementations and hides how time passes: the memory
limiter gets a fake clock that `advance` moves instantly, the Redis one (whose script reads
the server's clock) gets a 1 s window and `advance` really sleeps.

Redis tests use the server at `TEST_REDIS_URL` (default 127.0.0.1:6379) under a key prefix
unique to this run, and delete only the keys under it. Tests that must restart or flush a
server get their own `redis-server` process on a free port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.asyncio import Redis

from app.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"
#: every key this run writes starts with this
PREFIX = f"igw-test:{secrets.token_hex(4)}:rl"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def unique_key() -> str:
    return f"key_{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if IN_CI:
            pytest.fail(f"CI=true and Redis at {REDIS_URL} is down: {exc!r}", pytrace=False)
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    yield REDIS_URL
    keys = list(client.scan_iter(match=f"{PREFIX}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A raw client for looking at what the limiter stored."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Limiters:
    """Builds limiters of one kind and closes them after the test."""

    kind: str
    window_s: float
    advance: Callable[[float], Awaitable[None]]
    _build: Callable[..., RateLimiter]
    _made: list[RateLimiter] = field(default_factory=list)

    def make(self, **options: Any) -> RateLimiter:
        limiter = self._build(**options)
        self._made.append(limiter)
        return limiter

    async def close(self) -> None:
        for limiter in self._made:
            await limiter.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiters(request: pytest.FixtureRequest) -> AsyncIterator[Limiters]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        window_s = 60.0
        made = Limiters(
            "memory",
            window_s,
            advance,
            lambda **kw: MemoryRateLimiter(window_s=window_s, clock=clock, **kw),
        )
    else:
        url: str = request.getfixturevalue("redis_url")
        window_s = 1.0
        made = Limiters(
            "redis",
            window_s,
            anyio.sleep,
            lambda **kw: RedisRateLimiter.from_url(url, window_s=window_s, key_prefix=PREFIX, **kw),
        )
    yield made
    await made.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A throwaway `redis-server` this test may stop, restart and flush at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)
            self._process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
