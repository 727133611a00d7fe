"""The one pooled HTTP client every adapter shares, built once at start-up.

Adapters speak a small subset of httpx's API, `UpstreamHttp`: `stream(method, url, ...)`
yielding a response with `status_code`, `headers`, `is_success`, `is_redirect` and
`aiter_bytes()`, and httpx's exceptions (`httpx.TransportError` and its subclasses), which
`app.adapters.upstream_http.transport_errors` maps into gateway errors at one boundary. Two
clients implement it:

- `AiohttpUpstream` (the default): aiohttp called directly. Measured against the bench mock
  at 32 concurrent calls it costs 0.26 ms of CPU per call, against 0.73 ms for httpx on
  aiohttp's transport (httpx-aiohttp) and more for httpcore: httpx builds a `Request`
  (URL parsing and merging, header normalisation), wraps the answer in a `Response` and
  streams it through three layers of byte streams, all per call. aiohttp's own failures
  are translated into httpx's exception classes here (`_translated`), so the adapters and
  the mapping boundary see one vocabulary whichever client runs.
- `httpx.AsyncClient` itself (`GATEWAY_UPSTREAM_TRANSPORT=httpx`, httpcore's pool), should an
  upstream need it; tests may pass any `httpx.AsyncClient` (a `MockTransport` one) as well.

Neither follows redirects (a redirect from a provider is answered, not chased), and neither
keeps cookies: provider APIs authenticate with headers, and a shared jar would leak one
provider's cookies into every later call. aiohttp's `trust_env` (which reads `~/.netrc` and
the proxy variables on every request, in a thread) is on only when a proxy variable
(HTTP(S)_PROXY, ALL_PROXY) is set at start-up, so proxies keep working.

Timeouts follow httpx's meaning of one number: connecting (including the wait for a pooled
connection) and each read may take `timeout` seconds; a whole call is bounded by the
adapters' own deadline. The pool (`Settings.upstream_max_connections`, default 4,096) is sized
for thousands of slow generations in flight at once; calls beyond it wait, counted by
`occupancy` (app.pools).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from http.cookiejar import CookieJar
from typing import Any, Final, Protocol

import aiohttp
import httpx
import orjson

from app import __version__
from app.pools import Occupancy
from app.settings import Settings

KEEPALIVE_S: Final = 60.0
USER_AGENT: Final = f"image-gateway/{__version__}"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})

#: a multipart part as httpx's `files=` takes it: (field, (filename, bytes, content type))
Part = tuple[str, tuple[str | None, bytes, str | None]]


class UpstreamResponse(Protocol):
    """An answer being received; its body is read with `aiter_bytes` inside `stream`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    @property
    def is_success(self) -> bool: ...

    @property
    def is_redirect(self) -> bool: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class UpstreamHttp(Protocol):
    """What adapters call: the subset of `httpx.AsyncClient` they use."""

    def stream(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Sequence[Part] | None = None,
        timeout: float,
    ) -> AbstractAsyncContextManager[UpstreamResponse]: ...

    async def aclose(self) -> None: ...


@contextmanager
def _translated() -> Iterator[None]:
    """aiohttp's failures as httpx's exception classes (the adapters' vocabulary).

    A refused or unresolvable connection is a `ConnectError` (503: the provider is down),
    never a timeout (504: the provider is slow), which httpx-aiohttp's table got wrong.
    """
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # connect, or the wait for a pooled one
        raise httpx.ConnectTimeout(f"connect timeout ({exc})") from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(f"read timeout ({exc})") from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx.TimeoutException(str(exc)) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError("server disconnected") from exc
    except aiohttp.ClientPayloadError as exc:  # body cut short, bad chunking or encoding
        raise httpx.ReadError(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:  # a malformed status line or headers
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except aiohttp.ClientOSError as exc:  # reset while sending or receiving
        raise httpx.ReadError(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc)) from exc


class _Response:
    """An aiohttp answer behind the `UpstreamResponse` protocol."""

    __slots__ = ("_raw",)

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw

    @property
    def status_code(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._raw.headers

    @property
    def is_success(self) -> bool:
        return 200 <= self._raw.status < 300

    @property
    def is_redirect(self) -> bool:
        return self._raw.status in _REDIRECTS and "location" in self._raw.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        with _translated():
            async for chunk in self._raw.content.iter_any():
                yield chunk


def _body(
    headers: Mapping[str, str] | None,
    content: bytes | None,
    json: Any,
    data: Mapping[str, str] | None,
    files: Sequence[Part] | None,
) -> tuple[Mapping[str, str] | None, bytes | None]:
    """The request's headers and bytes, encoded as httpx would (the caller's headers win)."""
    if json is None and data is None and files is None:
        return headers, content
    if json is not None:
        content, content_type = orjson.dumps(json), "application/json"
    else:
        # multipart (edits, Stability): httpx's own encoder, so the wire format stays the one
        # the adapters' tests know; these calls carry images, the encoding is not their cost
        encoded = httpx.Request("POST", "http://multipart.invalid/", data=data, files=files)
        content, content_type = encoded.read(), encoded.headers["content-type"]
    merged = dict(headers or {})
    if not any(name.lower() == "content-type" for name in merged):
        merged["Content-Type"] = content_type
    return merged, content


class AiohttpUpstream:
    """`UpstreamHttp` on aiohttp, with the pool's calls in flight counted."""

    def __init__(self, *, size: int, trust_env: bool) -> None:
        self.occupancy = Occupancy("upstream", size)
        self._size = size
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use (inside the running loop)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._size, keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=self._trust_env,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:  # a handful of values (one per provider): built once each
            timeout = aiohttp.ClientTimeout(
                total=None, connect=seconds, sock_connect=seconds, sock_read=seconds
            )
            self._timeouts[seconds] = timeout
        return timeout

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Sequence[Part] | None = None,
        timeout: float,  # noqa: ASYNC109  (httpx's per-operation timeout, kept)
    ) -> AsyncIterator[UpstreamResponse]:
        merged, body = _body(headers, content, json, data, files)
        self.occupancy.enter()
        try:
            with _translated():
                raw = await self.session().request(
                    method,
                    url,
                    params=params or None,
                    headers=merged,
                    data=body,
                    allow_redirects=False,
                    timeout=self._timeout(timeout),
                )
            try:
                yield _Response(raw)
            finally:
                # back to the pool when the body was read to its end, closed otherwise
                raw.release()
        finally:
            self.occupancy.leave()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _NoCookies(httpx.Cookies):
    """A cookie jar that never stores anything (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.jar = CookieJar()

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def make_http_client(settings: Settings) -> UpstreamHttp:
    size = settings.upstream_max_connections
    if settings.upstream_transport == "aiohttp":
        return AiohttpUpstream(size=size, trust_env=settings.upstream_proxy_from_env)
    limits = httpx.Limits(
        max_connections=size, max_keepalive_connections=size, keepalive_expiry=KEEPALIVE_S
    )
    client = httpx.AsyncClient(
        limits=limits,
        # per-provider timeouts are applied per call by the adapters and routing
        timeout=httpx.Timeout(120.0),
        follow_redirects=False,
        trust_env=settings.upstream_proxy_from_env,
        headers={"User-Agent": USER_AGENT},
    )
    client._cookies = _NoCookies()
    return client


def upstream_occupancy(client: UpstreamHttp) -> Occupancy | None:
    """The pool occupancy of the default client (httpx's pool does not report one)."""
    return client.occupancy if isinstance(client, AiohttpUpstream) else None
