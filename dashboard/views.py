"""Customer dashboard pages. Each view resolves the organization through `dashboard_view` (session
switcher + membership), validates its form, calls one service or selector and renders a template.
Another organization's object is a 404, whatever the user's role elsewhere."""

from __future__ import annotations

import csv
from datetime import timedelta
from decimal import Decimal
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from billing import selectors as billing_selectors
from billing.selectors import month_to_date_statement, organization_usage
from config.client_address import client_bucket
from dashboard import forms, selectors
from dashboard.services import (
    invitation_send,
    playground_submit,
    signup_conflict_send,
    verification_send,
)
from generation.batches.services import batch_items
from generation.documents import batch_counts, job_document, job_render
from generation.engine.catalog_sync import open_alerts
from generation.engine.storage import image_open
from generation.files.services import Upload
from generation.jobs.selectors import job_get, models_for_organization, upstream_cost_by_service_tier
from generation.jobs.services import GenerationRequest
from generation.models import Batch, Job
from generation.webhooks.services import (
    webhook_deliveries,
    webhook_delivery_retry,
    webhook_endpoint_delete,
    webhook_endpoint_get,
    webhook_endpoint_set,
    webhook_secret_rotate,
)
from tenants import services as tenant_services
from tenants.access import SESSION_ORGANIZATION, dashboard_view
from tenants.errors import ImagegateError, InvalidRequest, NotFound
from tenants.limits import rate_limit_hit
from tenants.models import ALL_TIERS, ApiKey, Invitation, Membership
from tenants.selectors import billing_period_start

SIGNUPS_PER_ADDRESS_PER_HOUR = 10
MAX_PLAYGROUND_IMAGES = 14


def _error_message(exc: ImagegateError) -> str:
    return exc.message


# --- Overview and organization switcher -------------------------------------------------------
@require_GET
@dashboard_view()
def home(request):
    organization = request.access.organization
    dashboard = selectors.organization_dashboard(organization=organization)
    return render(request, "dashboard/home.html", {"dashboard": dashboard})


@require_POST
@dashboard_view()
def organization_switch(request):
    wanted = request.POST.get("organization", "")
    membership = next((m for m in request.access.memberships if m.organization.public_id == wanted), None)
    if membership is None:
        raise Http404("No such organization.")
    request.session[SESSION_ORGANIZATION] = membership.organization.public_id
    return redirect("dashboard:home")


# --- Sign-up and invitations --------------------------------------------------------------------
@never_cache
@require_http_methods(["GET", "POST"])
def signup(request):
    """Every valid sign-up gets the same answer, "check your inbox", whether or not the name or
    address is taken: only the mailbox owner learns that (dashboard.services.signup_mail)."""
    if request.user.is_authenticated:
        return redirect("dashboard:home")
    form = forms.SignupForm(request.POST or None)
    if request.method == "POST":
        throttle = rate_limit_hit(
            key=f"signup:ip:{client_bucket(request)}",
            limit=SIGNUPS_PER_ADDRESS_PER_HOUR,
            window_seconds=3600,
        )
        if not throttle.allowed:
            form.is_valid()
            form.add_error(
                None, f"Too many sign-ups from your network. Try again in {throttle.retry_after} seconds."
            )
            return render(request, "registration/signup.html", {"form": form}, status=429)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        conflict = tenant_services.user_signup_conflict(username=data["username"], email=data["email"])
        if conflict is None:
            try:
                user, _ = tenant_services.user_signup(
                    username=data["username"],
                    email=data["email"],
                    password=data["password"],
                    organization_name=data["organization_name"],
                )
            except ImagegateError as exc:
                form.add_error(None, _error_message(exc))
                return render(request, "registration/signup.html", {"form": form}, status=400)
            except IntegrityError:  # the same name was signed up a moment ago: a conflict like above
                signup_conflict_send(email=data["email"], username=data["username"], conflict="username")
                return redirect("signup-sent")
            verification_send(user=user)
        else:
            signup_conflict_send(email=data["email"], username=data["username"], conflict=conflict)
        return redirect("signup-sent")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


@require_GET
def signup_sent(request):
    return render(request, "registration/signup_sent.html")


@never_cache
@require_GET
def email_verify(request):
    """The link from the verification e-mail (token in the query string, which is never logged):
    verifies the address and logs the account in, once."""
    user = tenant_services.email_verify(token=request.GET.get("token", ""))
    if user is None:
        return render(request, "registration/verify_invalid.html", status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    membership = Membership.objects.filter(user=user).select_related("organization").first()
    if membership is not None:
        request.session[SESSION_ORGANIZATION] = membership.organization.public_id
    messages.success(request, "Your e-mail address is verified. Create an API key to start.")
    return redirect("dashboard:keys")


@require_POST
@dashboard_view()
def email_verification_resend(request):
    throttle = rate_limit_hit(key=f"verify-resend:{request.user.pk}", limit=5, window_seconds=3600)
    if not throttle.allowed:
        messages.error(request, "Too many verification e-mails. Try again in an hour.")
    elif tenant_services.user_email_verified(user=request.user):
        messages.success(request, "Your e-mail address is already verified.")
    else:
        verification_send(user=request.user)
        messages.success(request, f"Verification link sent to {request.user.email}.")
    return redirect("dashboard:keys")


@never_cache
@require_http_methods(["GET", "POST"])
def invitation_accept(request, token: str):
    invitation = tenant_services.invitation_get_pending(token=token)
    if invitation is None:
        return render(request, "dashboard/invitation_invalid.html", status=404)
    form = None
    if request.user.is_authenticated:
        if request.method == "POST":
            return _join(request, invitation)
    else:
        form = forms.InvitationSignupForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                user = tenant_services.invitation_signup(
                    invitation=invitation,
                    username=form.cleaned_data["username"],
                    password=form.cleaned_data["password"],
                )
            except ImagegateError as exc:
                form.add_error(None, _error_message(exc))
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                return _joined(request, invitation)
    return render(
        request,
        "dashboard/invitation_accept.html",
        {"invitation": invitation, "form": form},
        status=400 if form is not None and form.errors else 200,
    )


def _join(request, invitation: Invitation):
    try:
        tenant_services.invitation_accept(invitation=invitation, user=request.user)
    except ImagegateError as exc:
        messages.error(request, _error_message(exc))
        return redirect("dashboard:home")
    return _joined(request, invitation)


def _joined(request, invitation: Invitation):
    request.session[SESSION_ORGANIZATION] = invitation.organization.public_id
    messages.success(request, f"You joined {invitation.organization.name}.")
    return redirect("dashboard:home")


@require_http_methods(["GET", "POST"])
@dashboard_view(manage=True)
def members(request):
    organization = request.access.organization
    form = forms.InvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation, token = tenant_services.invitation_create(
                organization=organization,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                invited_by=request.user,
                actor_role=request.access.role,
            )
        except ImagegateError as exc:
            form.add_error("email", _error_message(exc))
        else:
            accept_url = settings.PUBLIC_BASE_URL + reverse("invitation-accept", args=[token])
            invitation_send(invitation=invitation, token=token, accept_url=accept_url)
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("dashboard:members")
    context = {
        "form": form,
        "roles": Membership.Role.choices,
        "members": Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("user__username"),
        "invitations": Invitation.objects.for_org(organization).filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        ),
    }
    return render(request, "dashboard/members.html", context, status=400 if form.errors else 200)


def _membership_or_404(request, username: str) -> Membership:
    membership = (
        Membership.objects.filter(organization=request.access.organization, user__username=username)
        .select_related("user")
        .first()
    )
    if membership is None:
        raise Http404("No such member.")
    return membership


@require_POST
@dashboard_view(manage=True)
def member_role(request, username: str):
    membership = _membership_or_404(request, username)
    try:
        tenant_services.membership_change_role(
            membership=membership, role=request.POST.get("role", ""), actor_role=request.access.role
        )
    except ImagegateError as exc:
        messages.error(request, _error_message(exc))
    else:
        messages.success(request, f"{username} is now {membership.get_role_display().lower()}.")
    return redirect("dashboard:members")


@require_POST
@dashboard_view(manage=True)
def member_remove(request, username: str):
    membership = _membership_or_404(request, username)
    try:
        tenant_services.membership_remove(membership=membership, actor_role=request.access.role)
    except ImagegateError as exc:
        messages.error(request, _error_message(exc))
        return redirect("dashboard:members")
    messages.success(request, f"{username} was removed from {request.access.organization.name}.")
    if membership.user_id == request.user.pk:
        request.session.pop(SESSION_ORGANIZATION, None)
        return redirect("dashboard:home")
    return redirect("dashboard:members")


@require_POST
@dashboard_view(manage=True)
def invitation_revoke(request, public_id: str):
    invitation = Invitation.objects.for_org(request.access.organization).filter(public_id=public_id).first()
    if invitation is None:
        raise Http404("No such invitation.")
    tenant_services.invitation_revoke(invitation=invitation)
    messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("dashboard:members")


# --- API keys ----------------------------------------------------------------------------------
def _snippets(raw_key: str) -> dict[str, str]:
    base = settings.PUBLIC_BASE_URL
    return {
        "curl": (
            f'curl -s -X POST "{base}/v1/generations?wait=30" \\\n'
            f'  -H "Authorization: Bearer {raw_key}" -H "Content-Type: application/json" \\\n'
            """  -d '{"prompt": "a lighthouse at dusk", "tier": "fast"}'"""
        ),
        "openai": (
            "from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{base}/v1", api_key="{raw_key}")\n'
            'result = client.images.generate(model="imagen-4-fast", prompt="a lighthouse at dusk", n=1)\n'
            "print(len(result.data), 'image(s)')"
        ),
        "google": (
            "from google import genai\nfrom google.genai import types\n\n"
            "client = genai.Client(\n"
            f'    vertexai=True, api_key="{raw_key}",\n'
            f'    http_options=types.HttpOptions(base_url="{base}", api_version="v1"),\n'
            ")\n"
            "result = client.models.generate_images(\n"
            '    model="imagen-4-fast", prompt="a lighthouse at dusk",\n'
            "    config=types.GenerateImagesConfig(number_of_images=1),\n"
            ")\n"
            "print(len(result.generated_images), 'image(s)')"
        ),
    }


@never_cache
@require_http_methods(["GET", "POST"])
@dashboard_view(manage=True)
def keys(request):
    organization = request.access.organization
    form = forms.ApiKeyCreateForm(request.POST or None)
    created = raw_key = None
    if request.method == "POST" and form.is_valid():
        try:
            created, raw_key = tenant_services.api_key_create(
                organization=organization,
                name=form.cleaned_data["name"],
                mode=form.cleaned_data["mode"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,
            )
        except ImagegateError as exc:
            form.add_error(None, _error_message(exc))
        else:
            form = forms.ApiKeyCreateForm()
    context = {
        "form": form,
        "keys": selectors.api_keys_for_dashboard(organization=organization),
        "created": created,
        # Rendered in this one response only: the secret is never stored or shown again.
        "raw_key": raw_key,
        "snippets": _snippets(raw_key) if raw_key else None,
        "email_verified": tenant_services.user_email_verified(user=request.user),
    }
    return render(request, "dashboard/keys.html", context, status=400 if form.errors else 200)


@require_POST
@dashboard_view(manage=True)
def key_caps(request, public_id: str):
    """Set a key's monthly image and spend caps (empty fields clear them)."""
    api_key = ApiKey.objects.for_org(request.access.organization).filter(public_id=public_id).first()
    if api_key is None:
        raise Http404("No such key.")
    form = forms.ApiKeyCapsForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "; ".join(f"{form.fields[name].label}: {errors[0]}" for name, errors in form.errors.items()),
        )
        return redirect("dashboard:keys")
    tenant_services.api_key_caps_set(
        api_key=api_key,
        monthly_image_cap=form.cleaned_data["monthly_image_cap"],
        monthly_spend_cap=form.cleaned_data["monthly_spend_cap"],
    )
    messages.success(request, f"Caps of {api_key.name} ({api_key.masked}) saved.")
    return redirect("dashboard:keys")


@require_POST
@dashboard_view(manage=True)
def key_revoke(request, public_id: str):
    api_key = ApiKey.objects.for_org(request.access.organization).filter(public_id=public_id).first()
    if api_key is None:
        raise Http404("No such key.")
    tenant_services.api_key_revoke(api_key=api_key)
    messages.success(request, f"Key {api_key.name} ({api_key.masked}) revoked: it no longer works.")
    return redirect("dashboard:keys")


# --- Playground and jobs -------------------------------------------------------------------------
def _wants_json(request) -> bool:
    return request.headers.get("X-Requested-With") == "fetch"


@require_http_methods(["GET", "POST"])
@dashboard_view()
def playground(request):
    organization = request.access.organization
    usable = selectors.playground_keys(organization=organization)
    form = forms.PlaygroundForm(request.POST or None, request.FILES or None, keys=usable)
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = playground_submit(
                    organization=organization,
                    api_key_id=data["api_key"],
                    images=[_upload(f) for f in request.FILES.getlist("images")[:MAX_PLAYGROUND_IMAGES]],
                    request=GenerationRequest(
                        prompt=data["prompt"],
                        tier=data["tier"],
                        aspect_ratio=data["aspect_ratio"],
                        count=data["count"],
                        resolution=data["resolution"],
                        metadata={"source": "playground"},
                    ),
                )
            except ImagegateError as exc:
                form.add_error(exc.param if exc.param in form.fields else None, _error_message(exc))
            else:
                if _wants_json(request):
                    return JsonResponse(
                        {
                            "id": job.public_id,
                            "status_url": reverse("dashboard:job-status", args=[job.public_id]),
                            "detail_url": reverse("dashboard:job-detail", args=[job.public_id]),
                        },
                        status=202,
                    )
                return redirect("dashboard:job-detail", public_id=job.public_id)
        if _wants_json(request):
            errors = {field: [str(e) for e in errs] for field, errs in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
    return render(
        request,
        "dashboard/playground.html",
        {"form": form, "has_keys": bool(usable)},
        status=400 if form.errors else 200,
    )


def _upload(uploaded) -> Upload:
    if uploaded.size > settings.FILES_MAX_BYTES:
        message = f"{uploaded.name} is larger than {settings.FILES_MAX_BYTES // 2**20} MB."
        raise InvalidRequest(message, param="images")
    return Upload(data=uploaded.read(), filename=uploaded.name or "")


def _input_urls(job: Job) -> list[dict]:
    return [
        {
            "id": item.file_public_id,
            "role": item.role,
            "url": reverse("dashboard:input-file", args=[item.file_public_id]) if item.available else None,
        }
        for item in selectors.job_inputs(job=job)
    ]


def _job_or_404(request, public_id: str) -> Job:
    try:
        return job_get(organization=request.access.organization, public_id=public_id)
    except NotFound:
        raise Http404("No such generation.") from None


@require_GET
@dashboard_view()
def job_status(request, public_id: str):
    """The job as the API shows it (signed image URLs), for the playground's live progress."""
    job = _job_or_404(request, public_id)
    document = job_render(job_document(job, list(job.images.all())))
    return JsonResponse({**document, "inputs": _input_urls(job)})


@require_GET
@dashboard_view()
def jobs(request):
    organization = request.access.organization
    status = request.GET.get("status") or None
    tier = request.GET.get("tier") or None
    key = request.GET.get("api_key") or None
    if status not in (None, *Job.Status.values) or tier not in (None, *ALL_TIERS):
        messages.error(request, "Unknown filter value; showing all jobs.")
        status = tier = None
    page, next_cursor = selectors.jobs_for_dashboard(
        organization=organization, status=status, tier=tier, api_key=key, cursor=request.GET.get("cursor")
    )
    context = {
        "jobs": page,
        "next_cursor": next_cursor,
        "filters": {"status": status or "", "tier": tier or "", "api_key": key or ""},
        "statuses": Job.Status.choices,
        "tiers": ALL_TIERS,
        "keys": ApiKey.objects.for_org(organization).only("public_id", "name", "mode", "last4"),
        "batches": selectors.batches_with_counts(organization=organization),
    }
    return render(request, "dashboard/jobs.html", context)


@require_GET
@dashboard_view()
def batch_detail(request, public_id: str):
    raw_cursor = request.GET.get("cursor", "")
    # An item index: ASCII digits of sane length only ("²" passes isdigit(), 5,000 digits overflow).
    cursor = int(raw_cursor) if raw_cursor.isascii() and raw_cursor.isdigit() and len(raw_cursor) <= 9 else 0
    try:
        batch, rows, next_cursor = batch_items(
            organization=request.access.organization, public_id=public_id, cursor=cursor, limit=50
        )
    except NotFound:
        raise Http404("No such batch.") from None
    never_fed = "canceled" if batch.status in (Batch.Status.CANCELING, Batch.Status.CANCELED) else "pending"
    items = [(index, custom_id, job, job.status if job else never_fed) for index, custom_id, job in rows]
    context = {
        "batch": batch,
        "counts": batch_counts(batch=batch),
        "items": items,
        "next_cursor": next_cursor,
    }
    return render(request, "dashboard/batch_detail.html", context)


@require_GET
@dashboard_view()
def job_detail(request, public_id: str):
    job = _job_or_404(request, public_id)
    document = job_render(job_document(job, list(job.images.all())))
    context = {"job": job, "document": document, "inputs": _input_urls(job)}
    return render(request, "dashboard/job_detail.html", context)


@require_GET
@dashboard_view()
def gallery(request):
    images = selectors.recent_images(organization=request.access.organization)
    return render(request, "dashboard/gallery.html", {"images": images})


@require_GET
@dashboard_view()
def input_file(request, public_id: str):
    """An input image of this organization (playground previews, job pages); others are 404."""
    file = selectors.input_file_for_dashboard(organization=request.access.organization, public_id=public_id)
    if file is None:
        raise Http404("No such file.")
    response = FileResponse(image_open(file.storage_path), content_type=file.mime_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- Usage, settings, operator -----------------------------------------------------------------
@require_GET
@dashboard_view()
def usage(request):
    organization = request.access.organization
    today = timezone.now().date()
    data = (
        request.GET
        if "start" in request.GET or "end" in request.GET
        else {"start": billing_period_start().isoformat(), "end": today.isoformat()}
    )
    form = forms.UsageRangeForm(data)
    rows: list = []
    totals: dict[str, Any] = {"images": 0, "amount": Decimal(0), "billable": Decimal(0)}
    by_tier: dict[str, dict] = {}
    by_key: dict[str, dict] = {}
    by_day: dict[str, dict] = {}
    if form.is_valid():
        rows = organization_usage(
            organization=organization, start=form.cleaned_data["start"], end=form.cleaned_data["end"]
        )
        if request.GET.get("format") == "csv":
            return _usage_csv(organization, form.cleaned_data, rows)
        for row in rows:
            for group, key in (
                (by_tier, row.tier),
                (by_key, row.api_key_name),
                (by_day, row.day.isoformat()),
            ):
                entry = group.setdefault(key, {"images": 0, "amount": 0})
                entry["images"] += row.images
                entry["amount"] += row.amount
            totals["images"] += row.images
            totals["amount"] += row.amount
            totals["billable"] += row.amount if row.livemode else 0
    context = {
        "form": form,
        "rows": rows,
        "totals": totals,
        "by_tier": by_tier,
        "by_key": by_key,
        "by_day": by_day,
        "statement": month_to_date_statement(organization=organization),
        "csv_query": urlencode(
            {"start": form.cleaned_data["start"], "end": form.cleaned_data["end"], "format": "csv"}
        )
        if form.is_valid()
        else "",
    }
    return render(request, "dashboard/usage.html", context, status=400 if form.errors else 200)


def _usage_csv(organization, dates, rows) -> HttpResponse:
    name = f"imagegate-usage-{organization.slug}-{dates['start']}-{dates['end']}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(["date", "tier", "api_key", "api_key_name", "mode", "images", "amount", "currency"])
    for row in rows:
        writer.writerow(
            [
                row.day.isoformat(),
                row.tier,
                row.api_key_id or "",
                row.api_key_name,
                "live" if row.livemode else "test",
                row.images,
                f"{row.amount:.4f}",
                organization.plan.currency,
            ]
        )
    return response


def _settings_initial(organization) -> dict:
    return {
        "fallback_policy": organization.fallback_policy,
        "image_url_ttl_seconds": organization.image_url_ttl_seconds,
        "auto_migrate_models": organization.auto_migrate_models,
    }


@require_http_methods(["GET", "POST"])
@dashboard_view(manage=True)
def organization_settings(request):
    organization = request.access.organization
    form = forms.SettingsForm(request.POST or None, initial=_settings_initial(organization))
    if request.method == "POST" and form.is_valid():
        try:
            tenant_services.organization_update_settings(organization=organization, **form.cleaned_data)
        except ImagegateError as exc:
            form.add_error(exc.param if exc.param in form.fields else None, _error_message(exc))
        else:
            messages.success(request, "Settings saved.")
            return redirect("dashboard:settings")
    return _settings_page(request, form=form)


def _settings_page(request, *, form=None, webhook_form=None, new_secret: str | None = None, status=None):
    organization = request.access.organization
    if form is None:
        form = forms.SettingsForm(initial=_settings_initial(organization))
    endpoint = webhook_endpoint_get(organization=organization)
    if webhook_form is None:
        webhook_form = forms.WebhookForm(initial={"url": endpoint.url if endpoint else ""})
    deliveries, _ = webhook_deliveries(organization=organization, limit=20)
    catalog = models_for_organization(organization=organization)
    context = {
        "form": form,
        "models": catalog["data"],
        "tiers": catalog["tiers"],
        "webhook_form": webhook_form,
        "endpoint": endpoint,
        "deliveries": deliveries,
        # Rendered in this one response only, right after it was created or rotated.
        "new_secret": new_secret,
    }
    if status is None:
        status = 400 if form.errors or webhook_form.errors else 200
    return render(request, "dashboard/settings.html", context, status=status)


@never_cache
@require_POST
@dashboard_view(manage=True)
def webhook_set(request):
    organization = request.access.organization
    webhook_form = forms.WebhookForm(request.POST)
    if webhook_form.is_valid():
        had_endpoint = webhook_endpoint_get(organization=organization) is not None
        try:
            endpoint = webhook_endpoint_set(organization=organization, url=webhook_form.cleaned_data["url"])
        except ImagegateError as exc:
            webhook_form.add_error("url", _error_message(exc))
        else:
            messages.success(request, "Webhook URL saved.")
            if had_endpoint:
                return redirect("dashboard:settings")
            return _settings_page(request, new_secret=endpoint.secret)
    return _settings_page(request, webhook_form=webhook_form)


@require_POST
@dashboard_view(manage=True)
def webhook_delete(request):
    try:
        webhook_endpoint_delete(organization=request.access.organization)
    except NotFound:
        messages.error(request, "No webhook URL is set.")
    else:
        messages.success(request, "Webhook URL removed: job and batch events are no longer sent to it.")
    return redirect("dashboard:settings")


@never_cache
@require_POST
@dashboard_view(manage=True)
def webhook_rotate(request):
    endpoint = webhook_secret_rotate(organization=request.access.organization)
    messages.success(request, "New signing secret created; deliveries from now on are signed with it.")
    return _settings_page(request, new_secret=endpoint.secret)


@require_POST
@dashboard_view(manage=True)
def webhook_retry(request, public_id: str):
    try:
        webhook_delivery_retry(organization=request.access.organization, public_id=public_id)
    except NotFound:
        raise Http404("No such delivery.") from None
    except ImagegateError as exc:
        messages.error(request, _error_message(exc))
    else:
        messages.success(request, f"Delivery {public_id} will be sent again now.")
    return redirect("dashboard:settings")


def staff_only(view):
    """Anonymous: the log-in page. Logged in without staff rights: 404, never a redirect to the
    log-in page, which would send an authenticated user straight back here (an endless loop)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not (request.user.is_active and request.user.is_staff):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_only
def operator(request):
    overview = selectors.platform_overview()
    chart = overview.revenue_chart
    rows = list(zip(chart["labels"], chart["revenue"], chart["upstream_cost"], strict=True))
    context = {
        "platform": overview,
        "revenue_rows": rows,
        "outbox": billing_selectors.billing_outbox_status(),
        "billing_alerts": billing_selectors.billing_alerts_open(),
        # Discovered models show up here as alerts (one query; the admin filters them by lifecycle).
        "catalog_alerts": open_alerts(),
        "service_tiers": upstream_cost_by_service_tier(since=timezone.now() - timedelta(days=30)),
    }
    return render(request, "dashboard/operator.html", context)
