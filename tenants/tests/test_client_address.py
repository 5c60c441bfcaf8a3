"""Client addresses for throttling: trusted proxy hops only, IPv6 by /64."""

import pytest
from django.test import RequestFactory

from config.client_address import client_bucket, client_ip


def request(remote="127.0.0.1", forwarded=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    assert str(client_ip(request("198.51.100.1", "203.0.113.5"))) == "198.51.100.1"


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "6.6.6.6, 203.0.113.5", "203.0.113.5"),  # the client cannot choose its address
        (2, "6.6.6.6, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        (2, "", "127.0.0.1"),  # did not come through the proxies: the socket peer
        (1, "[2001:db8::1]:443", "2001:db8::1"),
        (1, "203.0.113.5:51000", "203.0.113.5"),
        (1, "::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_the_trusted_hop_is_the_client(settings, count, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count
    assert str(client_ip(request("127.0.0.1", forwarded))) == expected


def test_ipv6_is_bucketed_by_64_and_garbage_is_one_bucket(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    a = client_bucket(request(forwarded="2001:db8:1:2:aaaa::1"))
    b = client_bucket(request(forwarded="2001:db8:1:2:bbbb::9"))
    c = client_bucket(request(forwarded="2001:db8:1:3::1"))
    assert a == b == "2001:db8:1:2::/64" and c != a
    assert client_bucket(request(forwarded="not-an-address")) == "unknown"
    assert client_bucket(request(forwarded="203.0.113.5")) == "203.0.113.5"
