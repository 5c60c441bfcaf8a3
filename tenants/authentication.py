"""API-key authentication for DRF.

The key is read from `Authorization: Bearer <key>` or `x-goog-api-key` (what Google's SDKs send),
never from a query string, so keys do not land in access logs. Only the SHA-256 is looked up.
"""

from __future__ import annotations

import hmac
import re

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from tenants.admission import api_key_check_usable
from tenants.errors import InvalidApiKey
from tenants.models import ApiKey
from tenants.selectors import api_key_get_by_hash
from tenants.services import KEY_SECRET_LENGTH, api_key_hash, api_key_touch

_KEY_FORMAT = re.compile(rf"^ig_(live|test)_[A-Za-z0-9]{{{KEY_SECRET_LENGTH}}}$")


class ApiKeyPrincipal:
    """What `request.user` is for API-key requests: the key, never a dashboard user."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self) -> str:
        return f"api-key:{self.api_key.public_id}"


def key_from_headers(headers) -> str | None:
    authorization = headers.get("Authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidApiKey("Authorization must be 'Bearer <API key>'.")
        return value.strip()
    google_key = headers.get("x-goog-api-key", "")
    return google_key.strip() or None


def api_key_authenticate(*, raw_key: str) -> ApiKey:
    if not _KEY_FORMAT.match(raw_key):
        raise InvalidApiKey("Malformed API key. Keys look like ig_live_… or ig_test_….")
    key_hash = api_key_hash(raw_key)
    api_key = api_key_get_by_hash(key_hash=key_hash)
    if api_key is None or not hmac.compare_digest(api_key.key_hash, key_hash):
        raise InvalidApiKey("Invalid API key.")
    now = timezone.now()
    api_key_check_usable(api_key=api_key, now=now)
    api_key_touch(api_key=api_key, now=now)
    return api_key


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        raw_key = key_from_headers(request.headers)
        if raw_key is None:
            return None
        api_key = api_key_authenticate(raw_key=raw_key)
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when no key was sent.
        return 'Bearer realm="imagegate"'
