from rest_framework.response import Response

from tenants.api import OrganizationScopedAPIView
from tenants.selectors import organization_overview
from tenants.serializers import OrganizationOutputSerializer


class OrganizationDetailView(OrganizationScopedAPIView):
    """GET /v1/organization: the caller's organization, plan, effective limits and usage this month."""

    required_scope = "read"

    def get(self, request):
        overview = organization_overview(organization=self.organization)
        return Response(OrganizationOutputSerializer(overview, context={"api_key": self.api_key}).data)
