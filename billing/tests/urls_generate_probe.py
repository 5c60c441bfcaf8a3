"""Test-only URLconf: a stand-in for the generation endpoint (being built elsewhere) that goes through
the real `OrganizationScopedAPIView` with the `generate` scope, plus a `read` one, plus billing's URLs."""

from django.urls import include, path
from rest_framework.response import Response

from tenants.api import OrganizationScopedAPIView


class GenerateProbeView(OrganizationScopedAPIView):
    required_scope = "generate"

    def post(self, request):
        return Response({"ok": True, "organization": self.organization.public_id})


class ReadProbeView(OrganizationScopedAPIView):
    required_scope = "read"

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("v1/probe/generate", GenerateProbeView.as_view()),
    path("v1/probe/read", ReadProbeView.as_view()),
    path("", include("billing.urls")),
]
