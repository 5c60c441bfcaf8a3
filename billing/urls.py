from django.urls import path

from billing import views
from billing.webhooks import StripeWebhookView

app_name = "billing"
urlpatterns = [
    path("billing/", views.billing_overview, name="overview"),
    path("billing/checkout", views.billing_checkout, name="checkout"),
    path("billing/portal", views.billing_portal, name="portal"),
    path("billing/spend-controls", views.billing_spend_controls, name="spend-controls"),
    path("billing/success", views.billing_success, name="success"),
    path("billing/cancel", views.billing_cancel, name="cancel"),
    path("webhooks/stripe", StripeWebhookView.as_view(), name="stripe-webhook"),
]
