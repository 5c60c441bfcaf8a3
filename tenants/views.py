from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from tenants.api import OrganizationScopedAPIView
from tenants.schema import ERRORS
from tenants.selectors import organization_overview
from tenants.serializers import OrganizationOutputSerializer


class OrganizationDetailView(OrganizationScopedAPIView):
    """GET /v1/organization: the caller's organization, plan, effective limits and usage this month."""

    required_scope = "read"

    @extend_schema(responses={200: OrganizationOutputSerializer, **ERRORS})
    def get(self, request):
        overview = organization_overview(organization=self.organization, api_key=self.api_key)
        response = Response(OrganizationOutputSerializer(overview, context={"api_key": self.api_key}).data)
        if overview.spend is not None:
            for name, value in overview.spend.headers().items():
                response[name] = value
        return response
