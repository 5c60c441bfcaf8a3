"""What a request made with an API key must pass before it does anything.

One function for every way in: the scoped API base view (`tenants.api`) calls it for each HTTP
request, and the dashboard's playground calls it for the key the user picked, so both refuse the
same things with the same errors and count against the same per-minute limit.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from tenants import errors
from tenants.limits import RateLimitResult, rate_limit_hit
from tenants.models import ApiKey, Organization
from tenants.selectors import organization_limits, organization_payment_blocked


def api_key_check_usable(*, api_key: ApiKey, now=None) -> None:
    now = now or timezone.now()
    if api_key.revoked_at is not None:
        raise errors.InvalidApiKey("This API key was revoked.")
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise errors.InvalidApiKey("This API key has expired.")


def generation_admit(*, organization: Organization, api_key: ApiKey) -> None:
    """May this key generate now? Refuses suspended tenants and, for live keys, plans with nothing
    to pay (Free) and tenants blocked for payment. `generation.jobs.services.job_submit` calls it
    for every job (API requests, batch items, the playground), so no way in can skip it."""
    if not organization.is_active:
        raise errors.TenantSuspended()
    if api_key.mode != ApiKey.Mode.LIVE:
        return
    if organization.plan.is_free:  # a live image costs us an upstream call nobody would pay for
        raise errors.PaymentRequired(
            f"Live images are not part of the {organization.plan.name} plan: use a test key (the "
            "sandbox, free) or subscribe to a paid plan on the dashboard's billing page."
        )
    if organization_payment_blocked(organization=organization):
        raise errors.PaymentRequired()


def request_admit(*, api_key: ApiKey, scope: str) -> RateLimitResult:
    """Refuse suspended tenants, missing scopes and (for live generation) unpaid tenants, then
    count the request against the organization's per-minute limit. Returns the limit's state (its
    headers go on the response); raises `RateLimited`, carrying the same headers, when exceeded."""
    organization = api_key.organization
    if not organization.is_active:
        raise errors.TenantSuspended()
    if scope not in api_key.scopes:
        raise errors.PermissionDenied(f"This API key does not have the '{scope}' scope.")
    if scope == ApiKey.Scope.GENERATE:
        generation_admit(organization=organization, api_key=api_key)
    result = rate_limit_hit(
        key=f"org:{organization.public_id}",
        limit=organization_limits(organization=organization).requests_per_minute,
        window_seconds=settings.RATE_LIMIT_WINDOW_SECONDS,
    )
    if not result.allowed:
        raise errors.RateLimited(
            f"Rate limit of {result.limit} requests per minute exceeded.",
            retry_after=result.retry_after,
            headers=result.headers(),
        )
    return result
