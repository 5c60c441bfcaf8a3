"""Organization, membership and API-key writes.

Invariants: an API key's secret is returned exactly once (by `api_key_create`) and only its SHA-256
is stored; suspension and revocation take effect on the next request (keys are never cached).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from tenants.errors import EmailNotVerified, InvalidRequest
from tenants.models import ApiKey, EmailVerification, Invitation, Membership, Organization, Plan

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
    if mode == ApiKey.Mode.LIVE:
        user_require_verified_email(user=created_by)
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


MAX_ALERT_THRESHOLDS = 5


def _cap(value: Decimal | int | None, *, param: str) -> Decimal | int | None:
    if value is not None and value < 0:
        raise InvalidRequest("A cap cannot be negative; leave it empty for no cap.", param=param)
    return value


def api_key_caps_set(
    *, api_key: ApiKey, monthly_image_cap: int | None, monthly_spend_cap: Decimal | None
) -> ApiKey:
    """Set (or clear, with None) a key's monthly image and spend caps. They apply to requests made
    after the change; what is already reserved this month keeps counting against them."""
    api_key.monthly_image_cap = _cap(monthly_image_cap, param="monthly_image_cap")  # type: ignore[assignment]
    api_key.monthly_spend_cap = _cap(monthly_spend_cap, param="monthly_spend_cap")  # type: ignore[assignment]
    ApiKey.objects.filter(pk=api_key.pk).update(
        monthly_image_cap=api_key.monthly_image_cap, monthly_spend_cap=api_key.monthly_spend_cap
    )
    return api_key


def spend_alert_thresholds_clean(values: list) -> list[int]:
    """Percentages of the spend cap, 1-100, at most five, sorted and without duplicates."""
    try:
        thresholds = sorted({int(value) for value in values})
    except (TypeError, ValueError):
        raise InvalidRequest("Thresholds are whole percentages.", param="spend_alert_thresholds") from None
    if len(thresholds) > MAX_ALERT_THRESHOLDS or any(not 1 <= t <= 100 for t in thresholds):
        raise InvalidRequest(
            f"Up to {MAX_ALERT_THRESHOLDS} thresholds between 1 and 100 (percent of the cap).",
            param="spend_alert_thresholds",
        )
    return thresholds


def organization_spend_controls_set(
    *, organization: Organization, monthly_spend_cap: Decimal | None, alert_thresholds: list
) -> Organization:
    """Set (or clear) the organization's monthly spend cap and the percentages of it at which the
    owners are e-mailed (once per threshold per month)."""
    organization.monthly_spend_cap = _cap(monthly_spend_cap, param="monthly_spend_cap")  # type: ignore[assignment]
    organization.spend_alert_thresholds = spend_alert_thresholds_clean(alert_thresholds)
    Organization.objects.filter(pk=organization.pk).update(
        monthly_spend_cap=organization.monthly_spend_cap,
        spend_alert_thresholds=organization.spend_alert_thresholds,
    )
    return organization


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


def organization_payment_failed_set(*, organization_id: int, failed_at: datetime | None) -> None:
    """Record when an invoice payment first failed (None once paid). Billing owns the truth
    (BillingAccount); this copy lets admission refuse live generation without reading billing."""
    Organization.objects.filter(pk=organization_id).update(payment_failed_at=failed_at)


def organization_change_plan(*, organization: Organization, plan: Plan) -> None:
    Organization.objects.filter(pk=organization.pk).update(plan=plan)
    organization.refresh_from_db(fields=["plan"])


# --- Sign-up and invitations ----------------------------------------------------------------
INVITATION_TTL = timedelta(days=7)


@transaction.atomic
def user_signup(
    *, username: str, email: str, password: str, organization_name: str
) -> tuple[User, Organization]:
    """A new user, unverified until they follow the e-mailed link, and their organization, of which
    they are the owner. Callers check first that neither the name nor the address is taken
    (`user_signup_conflict`)."""
    user = User.objects.create_user(username=username, email=email, password=password)
    EmailVerification.objects.create(user=user, email=email)
    organization = organization_create(name=organization_name, owner=user)
    return user, organization


def user_signup_conflict(*, username: str, email: str) -> str | None:
    """Which of the e-mail or the user name is taken, if any. Only ever e-mailed to the address typed,
    never shown on the page, so the sign-up form does not tell who has an account."""
    if User.objects.filter(email__iexact=email).exists():
        return "email"
    if User.objects.filter(username__iexact=username).exists():
        return "username"
    return None


_VERIFY_SALT = "imagegate.tenants.email-verification"


def email_verification_token(*, user: User) -> str:
    """A signed (SECRET_KEY, or any SECRET_KEY_FALLBACKS while rotating), timestamped token naming
    the user and the address; nothing is stored. It stops working once the address is verified."""
    return signing.dumps({"u": user.pk, "e": user.email.lower()}, salt=_VERIFY_SALT, compress=True)


def email_verify(*, token: str, now: datetime | None = None) -> User | None:
    """Mark the address verified; the user, or None for a bad, expired or already used token."""
    try:
        payload = signing.loads(token, salt=_VERIFY_SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE_SECONDS)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), int):
        return None
    pending = EmailVerification.objects.filter(
        user_id=payload["u"], email__iexact=str(payload.get("e", "")), verified_at__isnull=True
    )
    verification = pending.select_related("user").first()
    if verification is None or verification.user.email.lower() != verification.email.lower():
        return None
    if not pending.update(verified_at=now or timezone.now()):  # used concurrently
        return None
    return verification.user


def user_email_verified(*, user: User) -> bool:
    return not EmailVerification.objects.filter(user=user, verified_at__isnull=True).exists()


def user_require_verified_email(*, user: User | AnonymousUser | None) -> None:
    """Live keys and paid plans are for verified addresses only (test mode is not). None: a key
    created by the platform itself (management commands), not by a person."""
    if user is None:
        return
    if not isinstance(user, User) or not user_email_verified(user=user):
        raise EmailNotVerified(
            "Verify your e-mail address first: follow the link we sent you (the keys page can send it again)."
        )


def invitation_create(
    *,
    organization: Organization,
    email: str,
    role: str,
    invited_by: User | None,
    actor_role: str = Membership.Role.OWNER,
    now: datetime | None = None,
) -> tuple[Invitation, str]:
    """An invitation and its token, which is returned once (for the e-mail) and stored hashed."""
    email = email.strip().lower()
    if not email:
        raise InvalidRequest("An invitation needs an e-mail address.", param="email")
    try:
        role = Membership.Role(role)
    except ValueError:
        raise InvalidRequest("role must be owner, admin or member.", param="role") from None
    _check_role_change(actor_role=actor_role, old_role=None, new_role=role)
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise InvalidRequest(f"{email} is already a member of {organization.name}.", param="email")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role=role,
        token_hash=api_key_hash(token),
        invited_by=invited_by,
        expires_at=(now or timezone.now()) + INVITATION_TTL,
    )
    return invitation, token


def invitation_get_pending(*, token: str, now: datetime | None = None) -> Invitation | None:
    """The pending, unexpired invitation this token opens, or None (unknown, used, revoked, expired)."""
    invitation = (
        Invitation.objects.select_related("organization").filter(token_hash=api_key_hash(token)).first()
    )
    if invitation is None or not invitation.is_pending or invitation.expires_at <= (now or timezone.now()):
        return None
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User, now: datetime | None = None) -> Membership:
    """Join the organization with the invited role. Conditional UPDATE: a token is used once.

    The invitation is bound to the address it was sent to: the joining account must have that
    e-mail, verified, so a forwarded or leaked link does not let someone else in."""
    now = now or timezone.now()
    if (user.email or "").strip().lower() != invitation.email.lower() or not user_email_verified(user=user):
        raise InvalidRequest(
            f"This invitation is for {invitation.email}. Log in with the account that has this verified "
            "address (or log out and create one from the link).",
            param="email",
        )
    taken = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
    ).update(accepted_at=now, accepted_by=user)
    if not taken:
        raise InvalidRequest("This invitation was already used, revoked or has expired.", param="token")
    existing = Membership.objects.filter(organization=invitation.organization, user=user).first()
    if existing is not None:  # never downgrade an existing member through an invitation
        return existing
    return Membership.objects.create(organization=invitation.organization, user=user, role=invitation.role)


def invitation_revoke(*, invitation: Invitation, now: datetime | None = None) -> None:
    Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )


def organization_update_settings(
    *, organization: Organization, fallback_policy: str, image_url_ttl_seconds: int, auto_migrate_models: bool
) -> Organization:
    try:
        fallback_policy = Organization.Fallback(fallback_policy)
    except ValueError:
        raise InvalidRequest("Unknown fallback policy.", param="fallback_policy") from None
    if not 60 <= image_url_ttl_seconds <= 7 * 24 * 3600:
        raise InvalidRequest(
            "The image URL lifetime must be between 60 seconds and 7 days.", param="image_url_ttl_seconds"
        )
    Organization.objects.filter(pk=organization.pk).update(
        fallback_policy=fallback_policy,
        image_url_ttl_seconds=image_url_ttl_seconds,
        auto_migrate_models=auto_migrate_models,
    )
    organization.fallback_policy = fallback_policy
    organization.image_url_ttl_seconds = image_url_ttl_seconds
    organization.auto_migrate_models = auto_migrate_models
    return organization


@transaction.atomic
def invitation_signup(*, invitation: Invitation, username: str, password: str) -> User:
    """A new account for the invited address, joined to the organization; both or neither."""
    user = User.objects.create_user(username=username, email=invitation.email, password=password)
    invitation_accept(invitation=invitation, user=user)
    return user


# --- Members --------------------------------------------------------------------------------
def _check_role_change(*, actor_role: str, old_role: str | None, new_role: str | None) -> None:
    """Owners grant and take away any role; admins manage members and admins, never owners."""
    if actor_role == Membership.Role.OWNER:
        return
    if Membership.Role.OWNER in (old_role, new_role):
        raise InvalidRequest("Only an owner can make or unmake owners.", param="role")


def _ensure_another_owner(membership: Membership) -> None:
    if membership.role != Membership.Role.OWNER:
        return
    owners = Membership.objects.filter(organization_id=membership.organization_id, role=Membership.Role.OWNER)
    if not owners.exclude(pk=membership.pk).exists():
        raise InvalidRequest("An organization needs at least one owner; make someone else owner first.")


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor_role: str) -> Membership:
    try:
        role = Membership.Role(role)
    except ValueError:
        raise InvalidRequest("role must be owner, admin or member.", param="role") from None
    # Lock the organization's owners so two concurrent demotions cannot leave it without one.
    list(Membership.objects.select_for_update().filter(organization_id=membership.organization_id))
    _check_role_change(actor_role=actor_role, old_role=membership.role, new_role=role)
    if role != Membership.Role.OWNER:
        _ensure_another_owner(membership)
    Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.role = role
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor_role: str) -> None:
    list(Membership.objects.select_for_update().filter(organization_id=membership.organization_id))
    _check_role_change(actor_role=actor_role, old_role=membership.role, new_role=None)
    _ensure_another_owner(membership)
    membership.delete()
