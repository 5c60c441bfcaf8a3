"""Meta-tests: every API view is tenant-scoped unless it is on the short public allowlist."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from tenants.api import OrganizationScopedAPIView

# Views that are public on purpose, each with the reason.
PUBLIC_ALLOWLIST: dict[str, str] = {
    "config.views.healthz": "load-balancer health check",
    "config.views.livez": "liveness probe",
    "generation.api.metrics.metrics": "Prometheus scrape; 404 unless from an allowed address",
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
