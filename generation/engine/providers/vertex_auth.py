"""OAuth access tokens for Vertex AI from a service-account dict, cached per process.

Invariants: one cached token per `client_email`; it is refreshed when missing or within
`REFRESH_MARGIN` of expiry, by one coroutine at a time per account (the others wait and reuse
its token). google-auth's refresh is blocking HTTP, so it runs in a thread. The cache is meant
for one event loop per process (our worker's model); a lock is re-created if the loop changes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import service_account

from generation.engine.providers.base import (
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
)

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# Refresh this long before expiry, so a token never expires in the middle of a slow call
# (4K generations take minutes) and clock skew with Google does not matter.
REFRESH_MARGIN = timedelta(minutes=5)


@dataclass
class _Entry:
    credentials: service_account.Credentials
    private_key_id: str | None
    lock: asyncio.Lock | None = None
    loop: asyncio.AbstractEventLoop | None = None


class TokenCache:
    """Access tokens keyed by service-account email. Use the module's `token_cache` in code;
    tests may build their own for isolation."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    async def access_token(self, info: dict) -> str:
        entry = self._entry(info)
        token = self._fresh_token(entry)
        if token:
            return token
        loop = asyncio.get_running_loop()
        if entry.lock is None or entry.loop is not loop:
            # An asyncio.Lock binds to the loop that first waits on it; a new loop (tests, a
            # restarted worker loop) gets a new lock instead of a RuntimeError.
            entry.lock, entry.loop = asyncio.Lock(), loop
        async with entry.lock:
            token = self._fresh_token(entry)  # another coroutine may have refreshed while we waited
            if token:
                return token
            await asyncio.to_thread(_refresh, entry.credentials)
            if not entry.credentials.token:
                raise UpstreamAuthError("Vertex token endpoint returned no access token")
            return entry.credentials.token

    def _entry(self, info: dict) -> _Entry:
        email = info.get("client_email") or ""
        entry = self._entries.get(email)
        if entry is None or entry.private_key_id != info.get("private_key_id"):
            # First use, or the account's key was rotated: build new credentials (no token yet).
            try:
                credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
            except (ValueError, KeyError) as exc:
                # The message names missing fields, never the key material.
                raise UpstreamAuthError(f"Vertex service account is unusable: {exc}") from None
            entry = _Entry(credentials=credentials, private_key_id=info.get("private_key_id"))
            self._entries[email] = entry
        return entry

    @staticmethod
    def _fresh_token(entry: _Entry) -> str | None:
        credentials = entry.credentials
        if not credentials.token or credentials.expiry is None:
            return None
        expiry = credentials.expiry.replace(tzinfo=UTC)  # google-auth keeps naive UTC
        if datetime.now(UTC) >= expiry - REFRESH_MARGIN:
            return None
        return credentials.token


def _refresh(credentials: service_account.Credentials) -> None:
    """Blocking: sign a JWT and exchange it at the account's `token_uri`."""
    try:
        credentials.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.RefreshError as exc:
        # google-auth marks token-endpoint 5xx/429 as retryable; a 400 invalid_grant is not.
        error_class: type[UpstreamError] = (
            UpstreamServerError if getattr(exc, "retryable", False) else UpstreamAuthError
        )
        raise error_class(f"Vertex token refresh failed: {_first_arg(exc)}") from None
    except google.auth.exceptions.TransportError as exc:
        raise UpstreamConnectionError(f"Vertex token endpoint unreachable: {_first_arg(exc)}") from None


def _first_arg(exc: Exception) -> str:
    # RefreshError args are (message, response_body); the message is enough and stays short.
    return str(exc.args[0] if exc.args else exc)[:300]


token_cache = TokenCache()


async def access_token(info: dict) -> str:
    """A bearer token for this service account, valid for at least `REFRESH_MARGIN`."""
    return await token_cache.access_token(info)
