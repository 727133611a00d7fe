"""Which addresses the gateway may fetch provider result URLs from.

A provider's response names a URL and the gateway downloads it: a compromised or hostile
provider (or a client-controlled field echoed by one) could point it at the metadata service,
the database or anything else on the internal network. So every hop of a download is
resolved first and refused when any address it resolves to is private, loopback,
link-local, multicast, reserved or unspecified, unless the catalog allows it for that
provider (`allow_private_network: true`: an in-cluster provider, a test mock).

Known limit: the check and the connection resolve separately, so a DNS answer that changes
between the two (rebinding with a zero TTL) is not caught here; egress rules are the place
for that guarantee.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from app.errors import UpstreamError


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` stands for (a literal IP as itself); `OSError` if unresolvable."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]


async def check_public_host(host: str, port: int) -> None:
    """Raise `UpstreamError` unless every address `host` resolves to is public."""
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise UpstreamError(f"cannot resolve the image host {host}") from exc
    if not addresses or not all(is_public(address) for address in addresses):
        raise UpstreamError(
            f"refused to download an image from {host}: it resolves to a private, loopback "
            "or link-local address (allow_private_network is off for this provider)"
        )
