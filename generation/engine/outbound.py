"""Calling a URL a tenant gave us (webhook receivers, reference images) without being turned
against our own network (SSRF).

A URL is checked before it is stored and again right before each call: https only, no
credentials, and every address its host resolves to must be public. The call then goes to the very
address that was checked (`outbound_pin`), with the original host name in the Host header and for
TLS (SNI and certificate), since DNS can change between the check and the call. Callers never
follow redirects (a redirect could lead anywhere unchecked).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from tenants.errors import InvalidRequest


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# DNS is the network edge: tests swap this for a function returning chosen addresses.
resolver: Callable[[str, int], list[str]] = _system_resolver


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


def outbound_url_check(*, url: str, param: str = "url") -> tuple[str, int, list[str]]:
    """Refuse URLs we must not call; returns (host, port, addresses checked).

    https only, and every address the host resolves to must be public, unless
    WEBHOOK_ALLOW_PRIVATE_URLS is on (tests only)."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest("The URL is malformed.", param=param) from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise InvalidRequest("The URL must use https.", param=param)
    host = parts.hostname
    if not host or parts.username or parts.password:
        raise InvalidRequest("The URL needs a host and no credentials.", param=param)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError):
            raise InvalidRequest(f"The host {host} does not resolve.", param=param) from None
    if not addresses:
        raise InvalidRequest(f"The host {host} does not resolve.", param=param)
    if not allow_private:
        for address in addresses:
            if not _address_allowed(ipaddress.ip_address(address.split("%", 1)[0])):
                raise InvalidRequest(
                    "The URL resolves to a private, loopback, link-local or reserved address.",
                    param=param,
                )
    return host, port, addresses


@dataclass(frozen=True)
class PinnedURL:
    """Where to send the request (the checked address) and what makes it reach the right host."""

    target: str
    headers: dict[str, str]
    extensions: dict[str, str]


def outbound_pin(*, url: str, param: str = "url") -> PinnedURL:
    """Check `url` now and pin it to the first address that passed."""
    host, port, addresses = outbound_url_check(url=url, param=param)
    parts = urlsplit(url)
    address = addresses[0]
    netloc_ip = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{netloc_ip}:{port}", parts.path or "/", parts.query, ""))
    default_port = 443 if parts.scheme == "https" else 80
    headers = {"Host": host if port == default_port else f"{host}:{port}"}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return PinnedURL(target=target, headers=headers, extensions=extensions)
