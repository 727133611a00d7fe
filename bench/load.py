"""The benchmark's load generator: N requests at concurrency C, in its own process.

    python bench/load.py '{"url": ..., "key": ..., "body": {...}, "requests": 200,
                           "concurrency": 32, "stream": false}'

prints one JSON object: `ok`, `errors`, `wall_s`, `rps`, `p50_ms`, `p90_ms`, `p99_ms`, and the
first error seen. Driven by aiohttp over keep-alive connections (one per concurrent worker),
with uvloop when installed; it runs in a process of its own so it never shares a GIL with
what it measures. A response counts as OK when it is a 200 whose body carries an image
(`b64_json`), or for `stream: true` when the `...completed` event has arrived: latency is
measured to the end of the body, i.e. to the completed event.

`concurrency >= requests` sends everything at once (scenario S5: 2,000 slow generations in
flight together); `wall_s` is then the time until the last answer. A warm-up of
`min(concurrency, 20)` requests opens the connections and fills caches before the clock starts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url: str = spec["url"]
    body = json.dumps(spec["body"]).encode()
    total: int = spec["requests"]
    concurrency: int = max(1, min(spec["concurrency"], total))
    stream: bool = bool(spec.get("stream", False))
    marker = b"completed" if stream else b"b64_json"
    headers = {"Authorization": f"Bearer {spec['key']}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout_s", 120))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, limit_per_host=0)
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False, skip_auto_headers=("User-Agent",)
    ) as session:

        async def one() -> None:
            nonlocal errors, first_error
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    good = response.status == 200 and marker in payload[-4096:] + payload[:256]
                    if not good and first_error is None:
                        first_error = f"{response.status}: {payload[:300]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                good = False
                if first_error is None:
                    first_error = repr(exc)
            if good:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

        warmup = min(concurrency, 20, total)
        if spec.get("warmup", True):
            await asyncio.gather(*(one() for _ in range(warmup)))
            latencies.clear()
            errors = 0
            first_error = None
        remaining = iter(range(total))

        async def worker() -> None:
            for _ in remaining:
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "ok": len(latencies),
        "errors": errors,
        "first_error": first_error,
        "wall_s": wall,
        "rps": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
