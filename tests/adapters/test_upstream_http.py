"""Shared adapter plumbing: retry hints, message redaction, host names, downloads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from app.adapters.upstream_http import download, host_of, redact, retry_after
from app.errors import UpstreamError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-4"}, 0.0),
    ],
)
async def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(httpx.Headers(headers)) == expected


async def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after(httpx.Headers({"retry-after": when}))
    assert seconds is not None and 25 <= seconds <= 31


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("plain words", "plain words"),
        ("key my-own-secret leaked", "key [redacted] leaked"),
        (
            "Incorrect API key provided: sk-proj-abc123def456",
            "Incorrect API key provided: [redacted]",
        ),
        ("header was Bearer abc.def.ghi", "header was [redacted]"),
        ("xai-0123456789abcdef", "[redacted]"),
        ("multi\n  line\ttext", "multi line text"),
    ],
)
async def test_redact(message: str, expected: str) -> None:
    assert redact(message, ["my-own-secret", None, ""]) == expected


async def test_redact_bounds_the_length() -> None:
    assert len(redact("x" * 5000)) == 500


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://api.openai.com/v1", "api.openai.com"),
        ("http://user:pw@127.0.0.1:8080/v1?key=secret", "127.0.0.1:8080"),
    ],
)
async def test_host_of(url: str, host: str) -> None:
    assert host_of(url) == host


async def test_download_inlines_data_uris() -> None:
    async with httpx.AsyncClient() as http:
        uri = "data:image/png;base64," + base64.b64encode(b"abc").decode()
        assert await download(http, uri, max_bytes=10, timeout_s=1) == b"abc"
        with pytest.raises(UpstreamError, match="limit"):
            await download(http, uri, max_bytes=2, timeout_s=1)
        with pytest.raises(UpstreamError, match="data URI"):
            await download(http, "data:image/png;base64,%%%", max_bytes=10, timeout_s=1)


async def test_download_refuses_other_schemes() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError, match="not http"):
            await download(http, "file:///etc/passwd", max_bytes=10, timeout_s=1)


async def test_download_failure_status() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(403))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(UpstreamError, match=r"cdn\.example failed \(HTTP 403\)"):
            await download(
                http,
                "https://cdn.example/a.png",
                max_bytes=10,
                timeout_s=1,
                allow_private_network=True,
            )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.png",
        "http://10.1.2.3/a.png",
        "http://169.254.169.254/latest",
        "http://[::1]/a.png",
        "http://localhost/a.png",
        "http://[::ffff:192.168.0.1]/x",
    ],
)
async def test_downloads_refuse_private_addresses_unless_allowed(url: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("a private address must not be requested")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(UpstreamError, match="private, loopback or link-local"):
            await download(http, url, max_bytes=10, timeout_s=1)


async def test_a_redirect_to_a_private_address_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "93.184.216.34"
        return httpx.Response(302, headers={"location": "http://127.0.0.1:8080/secret"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(UpstreamError, match=r"127\.0\.0\.1"):
            await download(http, "http://93.184.216.34/a.png", max_bytes=10, timeout_s=1)
