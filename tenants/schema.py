"""OpenAPI descriptions shared by every API view (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (ig_live_… or ig_test_…) as 'Authorization: Bearer <key>'.",
        }


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)


class ErrorResponseSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# 402: live generation for an organization whose payment failed; 413: a body over REQUEST_BODY_MAX_BYTES.
ERRORS = {status: ErrorResponseSerializer for status in (400, 401, 402, 403, 404, 409, 413, 429, 503)}
