"""Calling a URL a tenant gave us (webhook receivers, reference images) without being turned
against our own network (SSRF).

A URL is checked before it is stored and again right before each call: https only, no
credentials, and every address its host resolves to must be public. The call then goes to the very
address that was checked (`outbound_pin`), with the original host name in the Host header and for
TLS (SNI and certificate), since DNS can change between the check and the call. Webhook sends
never follow redirects; `outbound_fetch` (input images) follows a few, checking and pinning each
target like the first, so a redirect cannot lead to an address we would have refused.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from django.conf import settings

from tenants.errors import InvalidRequest


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# DNS is the network edge: tests swap this for a function returning chosen addresses.
resolver: Callable[[str, int], list[str]] = _system_resolver
# The HTTP edge of `outbound_fetch`: None is the real network; tests may set an httpx
# MockTransport to play a public server they cannot reach from a sandbox.
fetch_transport: httpx.BaseTransport | None = None


# Denied explicitly, whatever `is_global` says on this Python version (3.11 treats some as global):
# transition ranges that embed or tunnel to another address, and deprecated site-local space.
DENIED_NETWORKS = [
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",
        "198.18.0.0/15",
        "::/96",  # IPv4-compatible (deprecated)
        "2001::/32",  # Teredo tunnels
        "2001:db8::/32",
        "2002::/16",  # 6to4: embeds any IPv4 address, 127.0.0.1 included
        "fc00::/7",
        "fec0::/10",  # site-local (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
    )
]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:  # well-known NAT64 prefix: judge the IPv4 address it carries
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in DENIED_NETWORKS if network.version == address.version):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


# Ports of services that are commonly reachable on a "public" address but must never receive a
# request we were told to make (Docker, etcd, databases, caches, brokers, cluster agents).
DENIED_PORTS = frozenset(
    {2375, 2376, 2379, 2380, 3306, 5432, 5672, 5984, 6379, 6443, 8500, 9200, 9300, 10250, 11211, 15672, 27017}
)


def port_allowed(port: int) -> bool:
    """443 and 80, or an unprivileged port (>= 1024) that is not a known internal service's."""
    return port in (80, 443) or (1024 <= port <= 65535 and port not in DENIED_PORTS)


def outbound_url_check(
    *, url: str, param: str = "url", allow_private: bool | None = None
) -> tuple[str, int, list[str]]:
    """Refuse URLs we must not call; returns (host, port, addresses checked).

    https only, an allowed port (`port_allowed`), and every address the host resolves to must be
    public (`_address_allowed`, with DENIED_NETWORKS and NAT64's embedded IPv4), unless
    `allow_private` (default: WEBHOOK_ALLOW_PRIVATE_URLS, tests only)."""
    if allow_private is None:
        allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    try:
        if not isinstance(url, str) or any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
            raise ValueError("control characters")  # a NUL would reach getaddrinfo as a ValueError
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
    if not allow_private and not port_allowed(port):
        raise InvalidRequest(
            f"Port {port} is not allowed: use 443, 80, or a port from 1024 up that is not a database "
            "or cluster service's.",
            param=param,
        )
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


def outbound_pin(*, url: str, param: str = "url", allow_private: bool | None = None) -> PinnedURL:
    """Check `url` now and pin it to the first address that passed."""
    host, port, addresses = outbound_url_check(url=url, param=param, allow_private=allow_private)
    parts = urlsplit(url)
    address = addresses[0]
    netloc_ip = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{netloc_ip}:{port}", parts.path or "/", parts.query, ""))
    default_port = 443 if parts.scheme == "https" else 80
    headers = {"Host": host if port == default_port else f"{host}:{port}"}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return PinnedURL(target=target, headers=headers, extensions=extensions)


@dataclass(frozen=True)
class FetchedBody:
    url: str  # where the body finally came from (after redirects)
    content: bytes
    content_type: str


def outbound_fetch(
    *,
    url: str,
    param: str,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    allow_private: bool | None = None,
) -> FetchedBody:
    """GET a tenant's URL safely: every hop (the URL and each redirect target, at most
    `max_redirects`) is checked and pinned; the body is read in chunks and refused past
    `max_bytes`; the whole fetch, redirects included, must finish within `timeout` seconds.
    Every failure is an InvalidRequest naming `param` (the tenant's URL is at fault, not us)."""
    deadline = time.monotonic() + timeout
    current = url
    with httpx.Client(follow_redirects=False, timeout=timeout, transport=fetch_transport) as client:
        for _hop in range(max_redirects + 1):
            pinned = outbound_pin(url=current, param=param, allow_private=allow_private)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InvalidRequest(f"Fetching the URL took more than {timeout:g} s.", param=param)
            try:
                with client.stream(
                    "GET",
                    pinned.target,
                    headers={**pinned.headers, "Accept": "image/*", "User-Agent": "Imagegate-Fetch/1"},
                    extensions={**pinned.extensions, "timeout": _timeouts(remaining)},
                ) as response:
                    if response.is_redirect:
                        location = response.headers.get("Location")
                        if not location:
                            raise InvalidRequest("The URL redirected without a Location.", param=param)
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(
                            f"Fetching the URL answered HTTP {response.status_code}.", param=param
                        )
                    declared = response.headers.get("Content-Length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise InvalidRequest(_too_large(max_bytes), param=param)
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise InvalidRequest(_too_large(max_bytes), param=param)
                        if time.monotonic() > deadline:
                            raise InvalidRequest(
                                f"Fetching the URL took more than {timeout:g} s.", param=param
                            )
                        chunks.append(chunk)
                    return FetchedBody(
                        url=current,
                        content=b"".join(chunks),
                        content_type=response.headers.get("Content-Type", ""),
                    )
            except httpx.TimeoutException:
                raise InvalidRequest(f"Fetching the URL took more than {timeout:g} s.", param=param) from None
            except httpx.HTTPError as exc:
                raise InvalidRequest(
                    f"The URL could not be fetched ({type(exc).__name__}).", param=param
                ) from None
    raise InvalidRequest(f"The URL redirected more than {max_redirects} times.", param=param)


def _timeouts(seconds: float) -> dict[str, float]:
    return {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}


def _too_large(max_bytes: int) -> str:
    return f"The image at the URL is larger than {max_bytes // (1024 * 1024) or 1} MB."
