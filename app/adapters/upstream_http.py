"""HTTP plumbing every HTTP adapter shares: the one boundary where transport failures become
gateway errors, size-limited body reads, result-URL downloads and message hygiene.

The shared client (`app.upstream_client.UpstreamHttp`, aiohttp underneath by default) raises
httpx's exception classes whichever client runs, so this is the one table:

    httpx.TimeoutException ──▶ UpstreamTimeout (504)
    httpx.TransportError   ──▶ UpstreamUnavailable (503)   (refused, reset, DNS, protocol)
    body over the limit    ──▶ UpstreamError (502)

Provider messages are passed to clients only through `redact`, which removes the
provider's key (and anything shaped like an API key or bearer token) and bounds the length:
upstream error texts sometimes quote the credential they rejected. Messages built here name
the provider's host, which the logs want; before any of them reaches a client, the router
passes it through `hide_addresses`, which puts "the provider" in place of the provider's host
and "[address]" in place of any other URL, IP address or host:port (a self-hosted provider's
address is the operator's network layout, not the client's business).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from time import time
from typing import Final

import anyio
import httpx

from app.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.images.codec import ImageError, decode_data_uri
from app.security.addresses import check_public_host
from app.upstream_client import UpstreamHttp, UpstreamResponse

MAX_MESSAGE_CHARS: Final = 500
MAX_REDIRECTS: Final = 5
_KEY_SHAPED: Final = re.compile(
    r"(?i)\b(?:bearer\s+\S+|(?:sk|pk|rk|xai|key|api[-_]?key)[-_][A-Za-z0-9_*.\-]{6,})"
)
_WHITESPACE: Final = re.compile(r"\s+")
#: URLs, IPv4 (with a port or not), bracketed IPv6, and host:port where the host has a letter
_ADDRESS: Final = re.compile(
    r"(?i)\b[a-z][a-z0-9+.-]*://\S+"
    r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"
    r"|\[[0-9a-f:.]+\](?::\d{1,5})?"
    r"|\b(?=[\w.-]*[a-z])[\w.-]+:\d{1,5}\b"
    r"|\blocalhost\b"
)


def host_of(url: str) -> str:
    """`host[:port]` of a URL, for messages: never the scheme's userinfo or the query."""
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


@contextmanager
def deadline(host: str, timeout_s: float) -> Iterator[None]:
    """One bound on a whole adapter call (fan-out, polling, downloads), as a 504.

    httpx's own timeouts are per read: a server trickling bytes, or a job left pending
    forever, would otherwise never time out.
    """
    try:
        with anyio.fail_after(timeout_s):
            yield
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{host} did not answer within {timeout_s:g} s") from exc


@contextmanager
def transport_errors(host: str, timeout_s: float) -> Iterator[None]:
    """Translate httpx's transport failures (not HTTP statuses) into gateway errors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"{host} did not answer within {timeout_s:g} s") from exc
    except httpx.TransportError as exc:
        # The class name says enough (ConnectError, ReadError...); str(exc) may carry URLs.
        raise UpstreamUnavailable(f"cannot reach {host} ({type(exc).__name__})") from exc


async def read_limited(response: UpstreamResponse, limit: int, *, what: str) -> bytes:
    """The body of a streamed response, aborting as soon as it grows past `limit` bytes."""
    return bytes(await read_buffer(response, limit, what=what))


async def read_buffer(response: UpstreamResponse, limit: int, *, what: str) -> bytearray:
    """`read_limited`'s body in one buffer, never joined from pieces: allocated once at the
    declared Content-Length (for an unencoded body; one over `limit` is refused before a byte
    is read) and filled in place, so a multi-megabyte answer is held once while it arrives.
    A body longer or shorter than it declared is an `UpstreamError` (502), as is one past
    `limit`; without a usable Content-Length the buffer grows as the body comes."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UpstreamError(f"{what} is {declared} bytes, over the {limit}-byte limit")
    # a decoded (gzip, br...) body is not the length its header declares
    identity = response.headers.get("content-encoding", "identity").lower() == "identity"
    expected = int(declared) if declared is not None and declared.isdigit() and identity else None
    buffer = bytearray(expected or 0)
    size = 0
    async for chunk in response.aiter_bytes():
        end = size + len(chunk)
        if end > limit:
            raise UpstreamError(f"{what} exceeds the {limit}-byte limit")
        if expected is None:
            buffer += chunk
        elif end > expected:
            raise UpstreamError(f"{what} is longer than its declared {expected} bytes")
        else:
            buffer[size:end] = chunk
        size = end
    if expected is not None and size != expected:
        raise UpstreamError(f"{what} is {size} bytes, shorter than its declared {expected}")
    return buffer


async def download(
    http: UpstreamHttp,
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private_network: bool = False,
) -> bytes:
    """Fetch a result URL (or decode a `data:` URI), at most `max_bytes`.

    Only http(s) is followed, and without the provider's credentials: result URLs are
    pre-signed links, often on another host, which must never see our key. Every hop (the
    URL and each of at most MAX_REDIRECTS redirects) is resolved and refused when it leads
    to a private, loopback or link-local address, unless the provider allows it
    (`app.security.addresses`).
    """
    if url.startswith("data:"):
        try:
            data = decode_data_uri(url)
        except ImageError as exc:
            raise UpstreamError(f"provider returned an unreadable data URI: {exc}") from exc
        if len(data) > max_bytes:
            raise UpstreamError(f"image is {len(data)} bytes, over the {max_bytes}-byte limit")
        return data
    for _ in range(MAX_REDIRECTS + 1):
        if not url.startswith(("https://", "http://")):
            raise UpstreamError("provider returned an image URL that is not http(s)")
        parsed = httpx.URL(url)
        host = host_of(url)
        if not allow_private_network:
            await check_public_host(
                parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
            )
        with transport_errors(host, timeout_s):
            async with http.stream("GET", url, timeout=timeout_s) as response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    url = str(parsed.join(location))
                    continue
                if not response.is_success:
                    raise UpstreamError(
                        f"downloading the image from {host} failed (HTTP {response.status_code})"
                    )
                return await read_limited(response, max_bytes, what=f"image from {host}")
    raise UpstreamError(f"downloading the image took more than {MAX_REDIRECTS} redirects")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (delta-seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def hide_addresses(message: str, hosts: Iterable[str | None] = ()) -> str:
    """`message` naming no host, port or URL: each of `hosts` (the provider's `host[:port]`
    and bare host) becomes "the provider", anything else address-shaped "[address]"."""
    for host in sorted((h for h in hosts if h), key=len, reverse=True):
        message = message.replace(host, "the provider")
    return _ADDRESS.sub("[address]", message)


def redact(message: str, secrets: Iterable[str | None] = ()) -> str:
    """A provider message fit for a client: no secrets, one line, bounded length."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "[redacted]")
    message = _KEY_SHAPED.sub("[redacted]", message)
    message = _WHITESPACE.sub(" ", message).strip()
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message


def status_error(
    status: int,
    headers: Mapping[str, str],
    *,
    host: str,
    detail: str,
    label: str | None = None,
    fallback_retry_after: float | None = None,
) -> GatewayError:
    """The HTTP-status table every adapter shares, after its provider-specific cases
    (moderation, out-of-credit, ...): what the client and the router see.

    `detail` must already be redacted. `label` defaults to "HTTP <status>" (Gemini adds the
    RPC status); `fallback_retry_after` is a provider's own hint when no header gives one.
    """
    label = label or f"HTTP {status}"
    if status in (401, 403):
        # Never echo the provider's text here: it often quotes (part of) the rejected key.
        # Retryable: another route may hold working credentials.
        return UpstreamError(f"{host} rejected the gateway's credentials ({label})")
    if status in (429, 503):
        return UpstreamUnavailable(
            f"{host} is rate limiting or overloaded ({label}): {detail}",
            retry_after=retry_after(headers) or fallback_retry_after,
        )
    if status in (408, 504):
        return UpstreamTimeout(f"{host} timed out ({label}): {detail}")
    if 400 <= status < 500:
        error = UpstreamError(f"{host} rejected the request ({label}): {detail}")
        error.retryable = False  # the same request would be rejected again
        return error
    return UpstreamError(f"{host} failed ({label}): {detail}")
