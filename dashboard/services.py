"""Dashboard writes that are not tenant administration: the playground's generation requests and
invitation e-mails.

The playground submits through `generation.jobs.job_submit` with a key the user picks, after the
same admission checks the API applies to that key (usable key, active tenant, `generate` scope,
payment state for live keys, the organization's per-minute limit), so quotas, concurrency, billing
and routing are exactly those of an API request.
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from billing.selectors import live_generation_blocked
from generation.jobs import GenerationRequest, job_submit
from generation.models import Job
from tenants import errors
from tenants.limits import rate_limit_hit
from tenants.models import ApiKey, Invitation, Organization
from tenants.selectors import organization_limits


def playground_submit(*, organization: Organization, api_key_id: str, request: GenerationRequest) -> Job:
    api_key = ApiKey.objects.for_org(organization).filter(public_id=api_key_id).first()
    if api_key is None:
        raise errors.InvalidRequest("Choose one of this organization's API keys.", param="api_key")
    if api_key.revoked_at is not None:
        raise errors.InvalidApiKey("This API key was revoked.")
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        raise errors.InvalidApiKey("This API key has expired.")
    if not organization.is_active:
        raise errors.TenantSuspended()
    if ApiKey.Scope.GENERATE not in api_key.scopes:
        raise errors.PermissionDenied("This API key does not have the 'generate' scope.")
    if api_key.mode == ApiKey.Mode.LIVE and live_generation_blocked(organization=organization):
        raise errors.PaymentRequired()
    result = rate_limit_hit(
        key=f"org:{organization.public_id}",
        limit=organization_limits(organization=organization).requests_per_minute,
        window_seconds=settings.RATE_LIMIT_WINDOW_SECONDS,
    )
    if not result.allowed:
        raise errors.RateLimited(
            f"Rate limit of {result.limit} requests per minute exceeded.", retry_after=result.retry_after
        )
    job, _ = job_submit(organization=organization, api_key=api_key, request=request)
    return job


def invitation_send(*, invitation: Invitation, token: str, accept_url: str) -> None:
    context = {"invitation": invitation, "accept_url": accept_url}
    send_mail(
        subject=f"You are invited to {invitation.organization.name} on Imagegate",
        message=render_to_string("dashboard/email/invitation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[invitation.email],
    )
