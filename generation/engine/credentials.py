"""Provider credentials, read from the environment or a secret file at call time (so a rotation
needs no restart) and never stored in the database: an account stores only a reference to them
(`credentials_ref`: `env:NAME`, `envfile:NAME` or `file:/path`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from generation.engine.providers.base import Credentials
from generation.models import ProviderAccount


def account_credentials(account: ProviderAccount) -> Credentials | None:
    """The account's credentials now; None when they are not configured."""
    if account.kind == ProviderAccount.Kind.SANDBOX:
        return Credentials()
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


def read_secret(ref: str) -> str | None:
    scheme, _, value = ref.partition(":")
    try:
        if scheme == "env":
            return os.environ.get(value) or None
        if scheme == "envfile":
            path = os.environ.get(value)
            return Path(path).read_text() if path else None
        if scheme == "file":
            return Path(value).read_text()
    except OSError:
        return None
    return None
