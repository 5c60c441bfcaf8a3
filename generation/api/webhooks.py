"""The tenant webhook API (/v1/webhook…): the endpoint, its signing secret and the delivery log.
Thin views over generation.webhooks.services; documents from generation.documents."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from generation.api.serializers import (
    WebhookDeliveryOutputSerializer,
    WebhookEndpointOutputSerializer,
    list_of,
)
from generation.documents import webhook_delivery_document, webhook_endpoint_document
from generation.models import WebhookDelivery
from generation.pagination import page_cursor, page_limit, page_response
from generation.webhooks.services import (
    webhook_deliveries,
    webhook_delivery_retry,
    webhook_endpoint_delete,
    webhook_endpoint_get,
    webhook_endpoint_set,
    webhook_secret_rotate,
)
from tenants.api import OrganizationScopedAPIView
from tenants.errors import InvalidRequest, NotFound
from tenants.models import ApiKey
from tenants.schema import ERRORS


class WebhookInputSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    enabled = serializers.BooleanField(default=True)


WEBHOOK = WebhookEndpointOutputSerializer
DELIVERIES = list_of("WebhookDeliveryList", WebhookDeliveryOutputSerializer(many=True))


class WebhookView(OrganizationScopedAPIView):
    required_scope = {"GET": "read", "PUT": "generate", "DELETE": "generate"}

    @extend_schema(responses={200: WEBHOOK, **ERRORS}, operation_id="webhook_retrieve")
    def get(self, request):
        endpoint = webhook_endpoint_get(organization=self.organization)
        if endpoint is None:
            raise NotFound("No webhook endpoint is set.")
        show_secret = ApiKey.Scope.GENERATE in self.api_key.scopes
        return Response(webhook_endpoint_document(endpoint, show_secret=show_secret))

    @extend_schema(
        request=WebhookInputSerializer, responses={200: WEBHOOK, **ERRORS}, operation_id="webhook_set"
    )
    def put(self, request):
        serializer = WebhookInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_set(organization=self.organization, **serializer.validated_data)
        return Response(webhook_endpoint_document(endpoint, show_secret=True))

    @extend_schema(request=None, responses={204: None, **ERRORS}, operation_id="webhook_delete")
    def delete(self, request):
        webhook_endpoint_delete(organization=self.organization)
        return Response(status=204)


class WebhookRotateSecretView(OrganizationScopedAPIView):
    required_scope = "generate"

    @extend_schema(request=None, responses={200: WEBHOOK, **ERRORS}, operation_id="webhook_rotate_secret")
    def post(self, request):
        endpoint = webhook_secret_rotate(organization=self.organization)
        return Response(webhook_endpoint_document(endpoint, show_secret=True))


class WebhookDeliveryListView(OrganizationScopedAPIView):
    required_scope = "read"

    @extend_schema(
        responses={200: DELIVERIES, **ERRORS},
        parameters=[
            OpenApiParameter("status", str, enum=WebhookDelivery.Status.values),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int, description="1-100, default 20"),
        ],
        operation_id="webhook_deliveries_list",
    )
    def get(self, request):
        status = request.query_params.get("status") or None
        if status is not None and status not in WebhookDelivery.Status.values:
            raise InvalidRequest(
                f"status must be one of {', '.join(WebhookDelivery.Status.values)}.", param="status"
            )
        deliveries, has_more = webhook_deliveries(
            organization=self.organization,
            status=status,
            cursor=page_cursor(request, prefix="whdel"),
            limit=page_limit(request),
        )
        return page_response(deliveries, has_more=has_more, render=webhook_delivery_document)


class WebhookDeliveryRetryView(OrganizationScopedAPIView):
    required_scope = "generate"

    @extend_schema(
        request=None,
        responses={200: WebhookDeliveryOutputSerializer, **ERRORS},
        operation_id="webhook_delivery_retry",
    )
    def post(self, request, public_id: str):
        delivery = webhook_delivery_retry(organization=self.organization, public_id=public_id)
        return Response(webhook_delivery_document(delivery))
