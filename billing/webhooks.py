"""`POST /webhooks/stripe`: Stripe's webhook endpoint. Public on purpose (allowlisted in
tests/test_api_meta.py): it is authenticated by the `Stripe-Signature` header, verified on the raw
body with stripe-python's verifier; each event id is applied once (`billing.services`)."""

import logging

from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from billing import errors, services, stripe_client

logger = logging.getLogger(__name__)


@method_decorator(csrf_exempt, name="dispatch")
class StripeWebhookView(View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            event = stripe_client.webhook_event_construct(
                payload=request.body, signature=request.headers.get("Stripe-Signature")
            )
        except errors.InvalidWebhookSignature as exc:
            logger.warning("stripe webhook refused: %s", exc.message)
            return JsonResponse({"error": exc.as_dict()}, status=exc.status_code)
        processed = services.stripe_event_process(event=event)
        return JsonResponse({"received": True, "duplicate": not processed})
