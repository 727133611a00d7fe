"""What a cheap hostile request can cost the gateway, measured on a real server process.

- 8 concurrent edits, each a ~400 KB PNG that decodes to 10000x10000 RGBA (400 MB): the
  image work pool's megapixel budget queues them, so the process's peak RSS stays within
  ~500 MiB of idle (unbounded, four of them took 3.2 GiB).
- a 60 MB JSON edit body costs three copies of itself for the instant it is parsed and one
  after, not five: read into one buffer, freed once parsed, its data URIs refused from their
  length (413) or decoded one at a time with each one's text freed as its bytes appear (it
  used to cost +304 MiB before its 413; now ~175 MiB).
- `/healthz` keeps answering promptly while 19 MB JPEGs made of 4-byte APP0 segments upload
  (the header walk used to freeze the event loop for 1-1.5 s per file).
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.support.hostile_images import segmented_jpeg, sparse_png
from tests.support.served import ServedGateway, served_gateway

pytestmark = pytest.mark.slow

MiB = 1024 * 1024

CATALOG = """
providers:
  local:
    adapter: local-preview
models:
  preview:
    routes: [{provider: local}]
    max_n: 2
    output_formats: [png, jpeg]
    parameters:
      width:  {type: integer, min: 64, max: 1024, default: 1024}
      height: {type: integer, min: 64, max: 1024, default: 1024}
    edit: {supported: true, max_reference_images: 2}
    pricing:
      per_image: 0.001
"""


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    from tests.support import databases

    return databases.fresh_sqlite_copy(sqlite_template, tmp_path)


async def _edit(client: httpx.AsyncClient, gateway: ServedGateway, image: bytes) -> httpx.Response:
    return await client.post(
        f"{gateway.url}/v1/images/edits",
        headers=gateway.auth,
        data={"model": "preview", "prompt": "worst case", "size": "1024x1024"},
        files=[("image[]", ("x.png", image, "image/png"))],
        timeout=300,
    )


def test_eight_concurrent_worst_case_edits_stay_within_the_memory_budget(
    tmp_path: Path, sqlite_url: str
) -> None:
    bomb = sparse_png(10_000, 10_000)
    assert len(bomb) < 600_000

    async def scenario(gateway: ServedGateway) -> tuple[int, int, list[int]]:
        async with httpx.AsyncClient() as client:
            warm = await _edit(client, gateway, sparse_png(512, 512))  # imports, fonts, pools
            assert warm.status_code == 200, warm.text
            idle = gateway.rss_bytes()
            started = time.perf_counter()
            responses = await asyncio.gather(*(_edit(client, gateway, bomb) for _ in range(8)))
            elapsed = time.perf_counter() - started
        statuses = [response.status_code for response in responses]
        print(f"\n8 worst-case edits: {elapsed:.1f} s, statuses {statuses}")
        return idle, gateway.peak_rss_bytes(), statuses

    with served_gateway(tmp_path, sqlite_url, CATALOG, GATEWAY_IMAGE_WORKERS="2") as gateway:
        idle, peak, statuses = asyncio.run(scenario(gateway))
    print(
        f"idle RSS {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, "
        f"above idle {(peak - idle) / MiB:.0f} MiB"
    )
    assert statuses == [200] * 8  # queued, not refused: they are all legitimate requests
    assert peak - idle < 500 * MiB


def _json_edit(images: list[bytes]) -> bytes:
    uris = b",".join(
        b'{"image_url":"data:image/png;base64,' + base64.b64encode(data) + b'"}' for data in images
    )
    return b'{"model":"preview","prompt":"x","images":[' + uris + b"]}"


def test_a_60_mb_json_edit_is_not_multiplied_in_memory(tmp_path: Path, sqlite_url: str) -> None:
    # one data URI of 45 MB: over the 20 MB per-image limit, refused from its length
    body = _json_edit([b"\x89PNG\r\n\x1a\n" + b"\x00" * 45_000_000])
    assert 59 * 1000**2 < len(body) < 61 * 1000**2
    with served_gateway(tmp_path, sqlite_url, CATALOG) as gateway:
        headers = {**gateway.auth, "Content-Type": "application/json"}
        warm = httpx.post(
            f"{gateway.url}/v1/images/edits", content=_json_edit([b"x"]), headers=headers
        )
        assert warm.status_code == 400, warm.text  # imports and pools, not a real image
        before = gateway.rss_bytes()
        gateway.reset_peak_rss()
        response = httpx.post(
            f"{gateway.url}/v1/images/edits", content=body, headers=headers, timeout=120
        )
        peak = gateway.peak_rss_bytes()
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    above = (peak - before) / MiB
    print(f"\n60 MB JSON edit -> 413: peak {above:.0f} MiB above idle")
    # the body is 57 MiB. At the peak, for the moment orjson runs: the bytes read (57), its
    # parser's copy of them (57) and the parsed text (57); after that one copy or less. The
    # old path held five copies at once (+304 MiB); the bound leaves room for the allocator.
    assert above < 240


def test_healthz_stays_responsive_while_hostile_jpegs_upload(
    tmp_path: Path, sqlite_url: str
) -> None:
    hostile = segmented_jpeg(19_000_000)

    async def scenario(gateway: ServedGateway) -> tuple[list[float], list[int]]:
        latencies: list[float] = []
        done = asyncio.Event()

        async def probe(client: httpx.AsyncClient) -> None:
            while not done.is_set():
                started = time.perf_counter()
                response = await client.get(f"{gateway.url}/healthz", timeout=30)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
                await asyncio.sleep(0.01)

        async def uploads(client: httpx.AsyncClient) -> list[int]:
            # two at a time, for at least 3 s and 6 uploads of 19 MB
            statuses: list[int] = []
            started = time.perf_counter()
            try:
                while len(statuses) < 6 or time.perf_counter() - started < 3:
                    pair = await asyncio.gather(
                        _edit(client, gateway, hostile), _edit(client, gateway, hostile)
                    )
                    statuses += [response.status_code for response in pair]
                return statuses
            finally:
                done.set()

        async with httpx.AsyncClient() as probes, httpx.AsyncClient() as uploaders:
            await probes.get(f"{gateway.url}/healthz")
            _, statuses = await asyncio.gather(probe(probes), uploads(uploaders))
        return latencies, statuses

    with served_gateway(tmp_path, sqlite_url, CATALOG) as gateway:
        latencies, statuses = asyncio.run(scenario(gateway))
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    stalls = sum(1 for latency in latencies if latency > 0.25)
    print(
        f"\n/healthz during hostile uploads: {len(latencies)} probes, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms, {stalls} over 250 ms"
    )
    assert set(statuses) == {400}  # refused from the header, not decoded
    assert len(latencies) >= 20
    # generous on a loaded 2-core machine (other processes share the cores): the old walk
    # stalled every probe of an upload for 1-6 s, so these bounds still fail without the fix
    assert stalls <= max(2, len(latencies) // 10)
    # one outlier may be the test's own client (it sends the 19 MB bodies on the same loop as
    # its probes); the old walk put every probe of every upload over a second
    assert latencies[-2] < 1.0
