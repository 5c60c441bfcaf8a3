"""Meta-tests: every API view is tenant-scoped unless it is on the short public allowlist."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from tenants.api import OrganizationScopedAPIView

# Views that are public on purpose, each with the reason.
PUBLIC_ALLOWLIST: dict[str, str] = {
    "config.views.healthz": "load-balancer health check",
    "billing.webhooks.StripeWebhookView": "authenticated by Stripe's signature, not an API key",
    "generation.api.views.ImageFileView": "authenticated by the signed, expiring URL",
    "generation.api.views.OpenApiSchemaView": "public API description",
    "generation.api.views.ApiDocsView": "public API docs",
}


def _walk(patterns, prefix=""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry.callback


def _name(callback) -> str:
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    target = view_class or callback
    return f"{target.__module__}.{target.__qualname__}"


def _is_api_route(route: str) -> bool:
    return (
        route.startswith(("v1", "^v1", "^(?P<version>v1", "(?P<version>v1")) or "publishers/google" in route
    )


def test_every_api_view_is_scoped_or_allowlisted():
    offenders = []
    seen_api = 0
    for route, callback in _walk(get_resolver().url_patterns):
        view_class = getattr(callback, "cls", None)
        is_drf = isinstance(view_class, type) and issubclass(view_class, APIView)
        if not (is_drf or _is_api_route(route)):
            continue
        seen_api += 1
        if _name(callback) in PUBLIC_ALLOWLIST:
            continue
        if not (is_drf and issubclass(view_class, OrganizationScopedAPIView)):
            offenders.append(f"{route} -> {_name(callback)}")
    assert seen_api > 0
    assert offenders == [], "API views must subclass OrganizationScopedAPIView:\n" + "\n".join(offenders)


def test_overriding_a_scoping_hook_fails_at_import():
    with pytest.raises(TypeError, match="initial"):

        class Sneaky(OrganizationScopedAPIView):
            required_scope = "read"

            def initial(self, request, *args, **kwargs):  # pragma: no cover - never created
                pass


def test_a_scope_is_mandatory():
    with pytest.raises(TypeError, match="required_scope"):

        class Unscoped(OrganizationScopedAPIView):
            pass


@pytest.mark.parametrize(
    "path", ["/v1/files", "/v1/files/file_x", "/v1/images/edits", "/v1/models/m:generateContent"]
)
def test_the_input_image_endpoints_are_scoped(path):
    """The input-file and edit endpoints go through the scoped base view (so the walk above
    covers them) and answer 401 without a key."""
    from django.urls import resolve
    from rest_framework.test import APIClient

    view_class = getattr(resolve(path).func, "cls")  # noqa: B009 - DRF sets it at as_view()
    assert issubclass(view_class, OrganizationScopedAPIView)
    assert APIClient().post(path, {}, format="multipart").status_code == 401


# HTML pages anyone may open, each with the reason; every other page sends an anonymous visitor to
# log in. Walked from the URL resolver, so a new page is covered the day it is added.
PUBLIC_PAGES: dict[str, str] = {
    "django.contrib.auth.views.LoginView": "the log-in page itself",
    "django.contrib.auth.views.LogoutView": "logging out",
    "dashboard.views.signup": "sign-up",
    "dashboard.views.signup_sent": "sign-up's 'check your inbox' page",
    "dashboard.views.email_verify": "authenticated by the signed verification link",
    "dashboard.views.invitation_accept": "authenticated by the invitation token (then asks to log in)",
    "django.contrib.auth.views.PasswordResetView": "password reset",
    "django.contrib.auth.views.PasswordResetDoneView": "password reset",
    "django.contrib.auth.views.PasswordResetConfirmView": "authenticated by the reset token",
    "django.contrib.auth.views.PasswordResetCompleteView": "password reset",
}


def _sample_url(route: str) -> str:
    """A concrete URL for a route pattern: every converter gets a value that names nothing."""
    import re

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: "none_0", route)


@pytest.mark.django_db
def test_every_html_page_requires_log_in_or_is_allowlisted(client):
    offenders = []
    seen = 0
    for route, callback in _walk(get_resolver().url_patterns):
        name = _name(callback)
        if _is_api_route(route) or route.startswith("admin/") or name in PUBLIC_ALLOWLIST:
            continue
        view_class = getattr(callback, "cls", None)
        if isinstance(view_class, type) and issubclass(view_class, APIView):
            continue  # API views: the test above
        if name in PUBLIC_PAGES:
            continue
        seen += 1
        url = _sample_url(route)
        response = client.get(url)
        if response.status_code == 405:  # a POST-only action: log-in is checked for that method
            response = client.post(url)
        if response.status_code not in (302, 303) or not response["Location"].startswith("/login/"):
            offenders.append(f"{url} -> {name}: {response.status_code}")
    assert seen >= 20  # the dashboard and billing pages were found
    assert offenders == [], "Pages must require log-in (or be listed in PUBLIC_PAGES):\n" + "\n".join(
        offenders
    )
