"""Provider credentials, read from the environment or a secret file at call time (so a rotation
needs no restart) and never stored in the database: an account stores only a reference to them
(`credentials_ref`: `env:NAME`, `envfile:NAME` or `file:/path`).

Where a secret may come from and go to is a policy, not a free field: a staff user edits provider
accounts in the admin, and without it could point an account's credentials at any variable
(STRIPE_SECRET_KEY) or file (/proc/self/environ) and its base_url at their own host, and the worker
would send that secret there as its API key. So references must name a variable matching
PROVIDER_SECRET_ENV_NAMES or a file inside PROVIDER_SECRETS_DIR, and a base_url must be https to a
host in PROVIDER_BASE_URL_HOSTS. The admin refuses other values on save (generation/admin.py), and
`account_credentials` checks again at use, so a row edited any other way leaks nothing either.
"""

from __future__ import annotations

import json
import logging
import os
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from generation.engine.providers.base import Credentials
from generation.models import ProviderAccount

logger = logging.getLogger(__name__)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def account_credentials(account: ProviderAccount) -> Credentials | None:
    """The account's credentials now; None when they are not configured or not allowed (the route
    then counts as unconfigured)."""
    if account.kind == ProviderAccount.Kind.SANDBOX:
        return Credentials()
    if account.base_url and not base_url_allowed(account.base_url):
        logger.warning("Provider account %s: base_url host not allowed; not using it", account.name)
        return None
    secret = read_secret(account.credentials_ref)
    if not secret:
        return None
    if secret.lstrip().startswith("{"):
        try:
            info = json.loads(secret)
        except ValueError:
            return None
        return Credentials(service_account_info=info, project=account.project or info.get("project_id"))
    return Credentials(api_key=secret.strip(), project=account.project or None)


def env_name_allowed(name: str) -> bool:
    return bool(name) and any(fnmatchcase(name, pattern) for pattern in settings.PROVIDER_SECRET_ENV_NAMES)


def secret_path_allowed(path: str) -> bool:
    """Inside PROVIDER_SECRETS_DIR after resolving symlinks and `..`."""
    try:
        resolved = Path(path).resolve(strict=False)
        root = Path(settings.PROVIDER_SECRETS_DIR).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):
        return False
    return resolved != root and resolved.is_relative_to(root)


def credentials_ref_problem(ref: str) -> str | None:
    """Why this reference may not be read, or None when it may."""
    scheme, _, value = ref.partition(":")
    if scheme in ("env", "envfile"):
        if not env_name_allowed(value):
            names = ", ".join(settings.PROVIDER_SECRET_ENV_NAMES)
            return f"Environment variables must match PROVIDER_SECRET_ENV_NAMES ({names})."
        return None
    if scheme == "file":
        if not secret_path_allowed(value):
            return f"Files must be inside PROVIDER_SECRETS_DIR ({settings.PROVIDER_SECRETS_DIR})."
        return None
    return "Use env:VAR, envfile:VAR or file:/path."


def base_url_allowed(url: str) -> bool:
    """https to a host matching PROVIDER_BASE_URL_HOSTS; plain http only to an allowed loopback
    host (the fake upstream of development and tests)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if parts.username or parts.password or not host:
        return False
    if not any(fnmatchcase(host, pattern.lower()) for pattern in settings.PROVIDER_BASE_URL_HOSTS):
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS)


def read_secret(ref: str) -> str | None:
    if credentials_ref_problem(ref):
        if ref:
            logger.warning("Provider credentials reference %r is not allowed; not reading it", ref)
        return None
    scheme, _, value = ref.partition(":")
    try:
        if scheme == "env":
            return os.environ.get(value) or None
        if scheme == "envfile":
            path = os.environ.get(value)  # set by the operator's environment, not the admin
            return Path(path).read_text() if path else None
        if scheme == "file":
            return Path(value).read_text()
    except OSError:
        return None
    return None
