"""Where webhooks may be sent: HTTPS, to public addresses, unless the operator opts in.

An endpoint URL is operator input the gateway will POST to from inside its network, the
classic SSRF shape (Standard Webhooks spec, "Server side request forgery"). So, like result
downloads (`app.security.addresses`):
- the scheme must be `https` (`GATEWAY_WEBHOOK_ALLOW_HTTP=true` admits `http` for tests/dev);
- every address the host resolves to must be public, checked before every attempt (DNS may
  change), unless `GATEWAY_WEBHOOK_ALLOW_PRIVATE=true` (in-cluster receivers; the tests'
  loopback receiver); when the endpoint is saved, a literal private address or a local name
  (`localhost`, `*.local`) is refused at once, without a DNS lookup;
- no credentials in the URL, and redirects are never followed (a 3xx is a failed attempt).

The same DNS-rebinding limit as result downloads applies: check and connection resolve
separately; egress rules are the place for that guarantee.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import InvalidParameter
from app.security.addresses import is_public, resolve

MAX_URL_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    allow_http: bool = False
    allow_private: bool = False


class DestinationRefused(Exception):
    """An endpoint's URL may not be called (now): the attempt fails with this message."""


def check_url_shape(url: str, policy: DestinationPolicy) -> tuple[str, int]:
    """(host, port) of an acceptable URL, or 400 `INVALID_PARAMETER` naming `url`."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidParameter(f"url is longer than {MAX_URL_LENGTH} characters", param="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidParameter(f"url is not a valid URL: {exc}", param="url") from exc
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in allowed:
        raise InvalidParameter(
            "url must be an https:// URL"
            + ("" if policy.allow_http else " (http:// needs GATEWAY_WEBHOOK_ALLOW_HTTP=true)"),
            param="url",
        )
    if not parts.hostname:
        raise InvalidParameter("url has no host", param="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidParameter("url must not carry credentials", param="url")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_addresses(host: str, port: int, policy: DestinationPolicy) -> None:
    """Raise `DestinationRefused` unless `host` resolves, and only to public addresses
    (any address, with `allow_private`)."""
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise DestinationRefused(f"cannot resolve {host}") from exc
    if not addresses:
        raise DestinationRefused(f"cannot resolve {host}")
    if not policy.allow_private and not all(is_public(address) for address in addresses):
        raise DestinationRefused(
            f"{host} resolves to a private, loopback or link-local address "
            "(GATEWAY_WEBHOOK_ALLOW_PRIVATE is off)"
        )


#: names that are local by definition (RFC 6761 `localhost`, mDNS `.local`)
_LOCAL_SUFFIXES = (".localhost", ".local")


def check_destination(url: str, policy: DestinationPolicy) -> None:
    """At registration: the URL's shape, and a literal address or a local name refused,
    as a 400 naming `url`. Names are not resolved here (the admin API never waits on DNS,
    and an answer can change anyway): every attempt resolves and checks them."""
    host, _ = check_url_shape(url, policy)
    if policy.allow_private:
        return
    name = host.lower().rstrip(".")
    local = name == "localhost" or name.endswith(_LOCAL_SUFFIXES)
    try:
        literal = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        literal = None
    if local or (literal is not None and not is_public(str(literal))):
        raise InvalidParameter(
            f"url refused: {host} is a private, loopback or link-local address "
            "(GATEWAY_WEBHOOK_ALLOW_PRIVATE is off)",
            param="url",
        )
