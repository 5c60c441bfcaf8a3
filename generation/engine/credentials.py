"""Provider credentials, read from the environment or a secret file at call time (so a rotation
needs no restart) and never stored in the database: an account stores only a reference to them
(`credentials_ref`: `env:NAME`, `envfile:NAME` or `file:/path`), which must pass the policy in
generation.models (allowed variable names, the secrets directory, Google's hosts)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from generation.engine.providers.base import Credentials
from generation.models import ProviderAccount, base_url_allowed, credentials_ref_problem

logger = logging.getLogger(__name__)


def account_credentials(account: ProviderAccount) -> Credentials | None:
    """The account's credentials now; None when they are not configured, or when the account would
    send them somewhere not allowed: a row edited outside the admin (or before the policy) must not
    leak a secret either, so this checks again at every use."""
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


def read_secret(ref: str) -> str | None:
    scheme, _, value = ref.partition(":")
    if credentials_ref_problem(ref):
        if ref:
            logger.warning("Provider credentials reference %r is not allowed; not reading it", ref)
        return None
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
