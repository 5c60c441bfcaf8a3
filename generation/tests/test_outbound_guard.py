"""The SSRF guard's explicit deny ranges and port rule (issue 13)."""

import ipaddress

import pytest

from generation.engine import outbound
from tenants.errors import InvalidRequest

PUBLIC = "93.184.215.14"


@pytest.fixture(autouse=True)
def public_dns(monkeypatch, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    monkeypatch.setattr(outbound, "resolver", lambda host, port: [PUBLIC])


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::1",  # 6to4 embedding 127.0.0.1
        "2002:5db8:d70e::1",  # 6to4 embedding a public address: the whole range is refused
        "fec0::1",  # site-local
        "64:ff9b::7f00:1",  # NAT64 embedding 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 embedding the metadata service
        "64:ff9b:1::1",  # local-use NAT64
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "::7f00:1",  # IPv4-compatible
        "100.64.1.1",  # carrier-grade NAT
        "fd00::1",
        "::ffff:10.0.0.1",
    ],
)
def test_transition_and_deprecated_ranges_are_refused(address):
    assert not outbound._address_allowed(ipaddress.ip_address(address))
    with pytest.raises(InvalidRequest):
        outbound.outbound_url_check(
            url=f"https://[{address}]/hook" if ":" in address else f"https://{address}/"
        )


def test_nat64_of_a_public_address_and_plain_public_addresses_are_allowed():
    assert outbound._address_allowed(ipaddress.ip_address("64:ff9b::5db8:d70e"))
    assert outbound._address_allowed(ipaddress.ip_address(PUBLIC))
    assert outbound._address_allowed(ipaddress.ip_address("2606:4700::1111"))


@pytest.mark.parametrize(
    ("port", "allowed"),
    [
        (443, True),
        (80, True),
        (8443, True),
        (3000, True),
        (22, False),
        (25, False),
        (6379, False),
        (5432, False),
        (10250, False),
        (2375, False),
    ],
)
def test_the_port_rule(port, allowed):
    url = f"https://hooks.example.com:{port}/x"
    if allowed:
        assert outbound.outbound_url_check(url=url)[1] == port
    else:
        with pytest.raises(InvalidRequest) as caught:
            outbound.outbound_url_check(url=url)
        assert "Port" in caught.value.message and caught.value.param == "url"


def test_the_api_refuses_a_hook_on_a_database_port(alice):
    response = alice.client().put("/v1/webhook", {"url": "https://hooks.example.com:6379/x"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "url"
