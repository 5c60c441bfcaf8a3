"""The client's network address, as far as this deployment can trust it.

Behind nginx or a load balancer every request arrives from the proxy, so `REMOTE_ADDR` alone would
put every client in one throttling bucket. Each trusted proxy appends the address it saw to
`X-Forwarded-For`; with TRUSTED_PROXY_COUNT = N proxies in front of us, the client is the N-th
entry from the right of `X-Forwarded-For + [REMOTE_ADDR]`. Entries further left were written by the
client and are never believed. With N = 0 (the default) the header is ignored.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

UNKNOWN = "unknown"


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:51000"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(request: HttpRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address, or None when the trusted hop holds something that is not an address."""
    trusted = settings.TRUSTED_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR", "")
    if trusted <= 0:
        return _parse(remote)
    forwarded = [item for item in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if item.strip()]
    hops = [*forwarded, remote]
    # Fewer hops than trusted proxies: the request did not come through all of them; the leftmost
    # entry is the best we have (and still one an attacker cannot vary beyond their own requests).
    return _parse(hops[-(trusted + 1)] if len(hops) > trusted else hops[0])


def client_bucket(request: HttpRequest) -> str:
    """The key per-address limits count against: the address itself for IPv4, its /64 for IPv6
    (one subscriber usually holds a whole /64, so per-address IPv6 limits would be free to dodge)."""
    address = client_ip(request)
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_in_networks(request: HttpRequest, networks: list[str]) -> bool:
    address = client_ip(request)
    return address is not None and any(address in ipaddress.ip_network(net, strict=False) for net in networks)
