"""Organization, membership and API-key writes.

Invariants: an API key's secret is returned exactly once (by `api_key_create`) and only its SHA-256
is stored; suspension and revocation take effect on the next request (keys are never cached).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from tenants.errors import InvalidRequest
from tenants.models import ApiKey, Membership, Organization, Plan

KEY_PREFIXES = {ApiKey.Mode.LIVE: "ig_live_", ApiKey.Mode.TEST: "ig_test_"}
KEY_SECRET_LENGTH = 40  # base62 characters: ~238 bits of entropy
_BASE62 = string.ascii_letters + string.digits


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def plan_default() -> Plan:
    plan = Plan.objects.filter(is_default=True).first() or Plan.objects.order_by("base_price_monthly").first()
    if plan is None:
        raise InvalidRequest("No plan is configured.")
    return plan


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def organization_create(
    *, name: str, owner: User | None = None, plan: Plan | None = None, slug: str | None = None
) -> Organization:
    name = name.strip()
    if not name:
        raise InvalidRequest("An organization needs a name.", param="name")
    for _ in range(5):
        try:
            with transaction.atomic():
                organization = Organization.objects.create(
                    name=name, slug=slug or _unique_slug(name), plan=plan or plan_default()
                )
            break
        except IntegrityError:
            if slug:
                raise InvalidRequest(f"The slug {slug!r} is taken.", param="slug") from None
    else:  # pragma: no cover - five slug races in a row
        raise InvalidRequest("Could not allocate a slug; try another name.", param="name")
    if owner is not None:
        Membership.objects.create(user=owner, organization=organization, role=Membership.Role.OWNER)
    return organization


def membership_add(*, organization: Organization, user: User, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        organization=organization, user=user, defaults={"role": Membership.Role(role)}
    )
    return membership


def api_key_create(
    *,
    organization: Organization,
    name: str,
    mode: str,
    scopes: list[str],
    created_by: User | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never retrievable again."""
    name = name.strip()
    if not name:
        raise InvalidRequest("A key needs a name.", param="name")
    try:
        mode = ApiKey.Mode(mode)
    except ValueError:
        raise InvalidRequest("mode must be 'live' or 'test'.", param="mode") from None
    valid_scopes = set(ApiKey.Scope.values)
    if not scopes or not set(scopes) <= valid_scopes:
        raise InvalidRequest(f"scopes must be a non-empty subset of {sorted(valid_scopes)}.", param="scopes")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest("expires_at must be in the future.", param="expires_at")
    raw = KEY_PREFIXES[mode] + "".join(secrets.choice(_BASE62) for _ in range(KEY_SECRET_LENGTH))
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        mode=mode,
        key_hash=api_key_hash(raw),
        last4=raw[-4:],
        scopes=sorted(set(scopes)),
        created_by=created_by,
        expires_at=expires_at,
    )
    return api_key, raw


def api_key_revoke(*, api_key: ApiKey, now: datetime | None = None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = now or timezone.now()
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=api_key.revoked_at)
    return api_key


def api_key_touch(*, api_key: ApiKey, now: datetime) -> None:
    """Record use, writing at most once per interval per key (a conditional UPDATE, so also across
    processes), to keep authentication free of writes on the hot path."""
    interval = timedelta(seconds=settings.API_KEY_LAST_USED_INTERVAL_SECONDS)
    if api_key.last_used_at is not None and now - api_key.last_used_at < interval:
        return
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now


def organization_suspend(*, organization: Organization, now: datetime | None = None) -> None:
    Organization.objects.filter(pk=organization.pk).update(
        status=Organization.Status.SUSPENDED, suspended_at=now or timezone.now()
    )
    organization.refresh_from_db(fields=["status", "suspended_at"])


def organization_reactivate(*, organization: Organization) -> None:
    Organization.objects.filter(pk=organization.pk).update(
        status=Organization.Status.ACTIVE, suspended_at=None
    )
    organization.refresh_from_db(fields=["status", "suspended_at"])


def organization_change_plan(*, organization: Organization, plan: Plan) -> None:
    Organization.objects.filter(pk=organization.pk).update(plan=plan)
    organization.refresh_from_db(fields=["plan"])
