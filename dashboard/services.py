"""Dashboard writes that are not tenant administration: the playground's generation requests and
invitation e-mails.

The playground submits through `generation.jobs.services.job_submit` with a key the user picks, after the
admission checks the API applies to that key (`tenants.admission`: usable key, active tenant,
`generate` scope, payment state for live keys, the organization's per-minute limit), so quotas,
concurrency, billing and routing are exactly those of an API request.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

from generation.files.services import Upload
from generation.jobs.services import GenerationRequest, job_submit, request_with_inputs
from generation.models import Job
from tenants import errors
from tenants import services as tenant_services
from tenants.admission import api_key_check_usable, request_admit
from tenants.models import ApiKey, Invitation, Organization


def playground_submit(
    *,
    organization: Organization,
    api_key_id: str,
    request: GenerationRequest,
    images: list[Upload] | None = None,
) -> Job:
    """Submit with the chosen key, like the API: `images` (uploaded in the page) are stored as
    input files through the same path as the API's."""
    api_key = ApiKey.objects.for_org(organization).filter(public_id=api_key_id).first()
    if api_key is None:
        raise errors.InvalidRequest("Choose one of this organization's API keys.", param="api_key")
    api_key_check_usable(api_key=api_key)
    request_admit(api_key=api_key, scope=ApiKey.Scope.GENERATE)
    if images:
        request = request_with_inputs(
            organization=organization, api_key=api_key, request=request, images=images
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


def verification_send(*, user) -> None:
    """The e-mail verification link; the token travels in the query string, which access logs
    never record (platform/gunicorn.conf.py)."""
    token = tenant_services.email_verification_token(user=user)
    url = f"{settings.PUBLIC_BASE_URL}{reverse('email-verify')}?{urlencode({'token': token})}"
    send_mail(
        subject="Verify your e-mail address for Imagegate",
        message=render_to_string("registration/email/verify.txt", {"user": user, "verify_url": url}),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[user.email],
    )


def signup_conflict_send(*, email: str, username: str, conflict: str) -> None:
    """A sign-up whose address or user name is taken creates nothing; the address owner, and only
    they, learn why, so the sign-up page itself never reveals who has an account."""
    context = {
        "conflict": conflict,
        "username": username,
        "login_url": settings.PUBLIC_BASE_URL + reverse("login"),
        "reset_url": settings.PUBLIC_BASE_URL + reverse("password_reset"),
        "signup_url": settings.PUBLIC_BASE_URL + reverse("signup"),
    }
    send_mail(
        subject="Your Imagegate sign-up",
        message=render_to_string("registration/email/signup_conflict.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[email],
    )
