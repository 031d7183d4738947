"""The client's address behind a reverse proxy: X-Forwarded-For, believed only from the proxies named.

Behind nginx every connection comes from nginx's address, so the per-address limits (wrong room codes, join
attempts, the one log line per address for malformed input) would count every user as one. When the peer is
one of `trusted` (THEATRUM_FORWARDED_ALLOW_IPS, e.g. 127.0.0.1 for an nginx on the same host), the request's
`remote` becomes the address that proxy appended last to X-Forwarded-For; from anyone else the header is
ignored, so a client cannot choose its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web


def forwarded_middleware(trusted: Iterable[str]):
    proxies = frozenset(trusted)

    @web.middleware
    async def middleware(request: web.Request, handler):
        if proxies and request.remote in proxies:
            client = _last_hop(request.headers.get("X-Forwarded-For", ""))
            if client is not None:
                request = request.clone(remote=client)
        return await handler(request)

    return middleware


def _last_hop(header: str) -> str | None:
    """The address the trusted proxy appended (the last entry), if it is an IP address."""
    entries = [entry.strip() for entry in header.split(",") if entry.strip()]
    if not entries:
        return None
    try:
        return str(ipaddress.ip_address(entries[-1]))
    except ValueError:
        return None
