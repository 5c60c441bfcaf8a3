"""Vertex service-account tokens: fetched from the account's token_uri (the fake), cached per
account, reused, refreshed within 5 minutes of expiry, one refresh at a time."""

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from generation.engine.providers import generate_content, vertex_auth
from generation.engine.providers.base import (
    ProviderRequest,
    UpstreamAuthError,
    UpstreamConnectionError,
)

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def bearer_suffixes(fake_upstream) -> list[str]:
    return [r["headers"]["authorization"] for r in fake_upstream.model_requests()]


async def test_token_is_fetched_once_and_reused(fake_upstream):
    cache = vertex_auth.TokenCache()
    info = fake_upstream.service_account_info()

    first = await cache.access_token(info)
    second = await cache.access_token(info)

    assert first == second
    assert first.startswith("ya29.")
    stats = fake_upstream.stats()
    assert stats["token_refreshes_by_client"] == {info["client_email"]: 1}
    token_request = fake_upstream.requests()[-1]
    assert token_request["path"] == "/token"
    assert token_request["body"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


async def test_each_account_has_its_own_token(fake_upstream):
    cache = vertex_auth.TokenCache()
    one, two = fake_upstream.service_account_info(), fake_upstream.service_account_info()

    assert await cache.access_token(one) != await cache.access_token(two)
    assert fake_upstream.stats()["token_refreshes"] == 2


async def test_concurrent_callers_share_one_refresh(fake_upstream):
    cache = vertex_auth.TokenCache()
    info = fake_upstream.service_account_info()

    tokens = await asyncio.gather(*(cache.access_token(info) for _ in range(8)))

    assert len(set(tokens)) == 1
    assert fake_upstream.stats()["token_refreshes"] == 1


async def test_token_is_refreshed_within_five_minutes_of_expiry(fake_upstream):
    # The fake issues tokens for 3599 s and rejects expired ones, on the same (travelled) clock.
    target = fake_upstream.target(kind="vertex_ai")
    request = ProviderRequest(prompt="a lighthouse", count=1, resolution="512")

    with time_machine.travel(START, tick=True) as traveller:
        await fake_upstream.call(generate_content.generate, target, request)
        traveller.move_to(START + timedelta(minutes=50))  # 10 min left: still reused
        await fake_upstream.call(generate_content.generate, target, request)
        assert fake_upstream.stats()["token_refreshes"] == 1

        traveller.move_to(START + timedelta(minutes=56))  # under 5 min left: refreshed first
        result = await fake_upstream.call(generate_content.generate, target, request)

    assert len(result.images) == 1
    assert fake_upstream.stats()["token_refreshes"] == 2
    first, reused, refreshed = bearer_suffixes(fake_upstream)
    assert first == reused != refreshed


async def test_an_expired_token_is_never_sent(fake_upstream):
    target = fake_upstream.target(kind="vertex_ai")
    request = ProviderRequest(prompt="a lighthouse", count=1, resolution="512")

    with time_machine.travel(START, tick=True) as traveller:
        await fake_upstream.call(generate_content.generate, target, request)
        traveller.move_to(START + timedelta(hours=3))
        result = await fake_upstream.call(generate_content.generate, target, request)

    assert len(result.images) == 1
    assert [r["status"] for r in fake_upstream.model_requests()] == [200, 200]


async def test_rotated_key_gets_a_new_token(fake_upstream):
    cache = vertex_auth.TokenCache()
    info = fake_upstream.service_account_info()
    old = await cache.access_token(info)

    new = await cache.access_token({**info, "private_key_id": "rotated"})

    assert new != old
    assert fake_upstream.stats()["token_refreshes"] == 2


async def test_token_endpoint_refusal_is_an_auth_error(fake_upstream):
    info = {
        **fake_upstream.service_account_info(),
        "token_uri": f"{fake_upstream.url}/not-the-token-endpoint",
    }

    with pytest.raises(UpstreamAuthError) as raised:
        await vertex_auth.TokenCache().access_token(info)

    assert "token refresh failed" in raised.value.message
    assert "PRIVATE KEY" not in raised.value.message


async def test_unreachable_token_endpoint_is_a_connection_error(fake_upstream):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    info = {**fake_upstream.service_account_info(), "token_uri": f"http://127.0.0.1:{port}/token"}

    with pytest.raises(UpstreamConnectionError):
        await vertex_auth.TokenCache().access_token(info)


async def test_incomplete_service_account_is_an_auth_error_without_key_material(fake_upstream):
    info = fake_upstream.service_account_info()
    del info["token_uri"]

    with pytest.raises(UpstreamAuthError) as raised:
        await vertex_auth.TokenCache().access_token(info)

    assert "token_uri" in raised.value.message
    assert "PRIVATE KEY" not in raised.value.message
