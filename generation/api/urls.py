from django.urls import path

from generation.api import batches as api_batches
from generation.api import files as api_files
from generation.api import views
from generation.api import webhooks as api_webhooks

urlpatterns = [
    path("generations", views.GenerationListCreateView.as_view(), name="generation-list"),
    path("generations/<str:public_id>", views.GenerationDetailView.as_view(), name="generation-detail"),
    path(
        "generations/<str:public_id>/cancel", views.GenerationCancelView.as_view(), name="generation-cancel"
    ),
    path("models", views.ModelListView.as_view(), name="model-list"),
    path("files", api_files.FileCreateView.as_view(), name="file-list"),
    path("files/<str:public_id>", api_files.FileDetailView.as_view(), name="file-detail"),
    path("batches", api_batches.BatchListCreateView.as_view(), name="batch-list"),
    path("batches/<str:public_id>", api_batches.BatchDetailView.as_view(), name="batch-detail"),
    path("batches/<str:public_id>/items", api_batches.BatchItemsView.as_view(), name="batch-items"),
    path("batches/<str:public_id>/cancel", api_batches.BatchCancelView.as_view(), name="batch-cancel"),
    path("batches/<str:public_id>/results", api_batches.BatchResultsView.as_view(), name="batch-results"),
    path("webhook", api_webhooks.WebhookView.as_view(), name="webhook"),
    path(
        "webhook/rotate-secret", api_webhooks.WebhookRotateSecretView.as_view(), name="webhook-rotate-secret"
    ),
    path("webhook/deliveries", api_webhooks.WebhookDeliveryListView.as_view(), name="webhook-deliveries"),
    path(
        "webhook/deliveries/<str:public_id>/retry",
        api_webhooks.WebhookDeliveryRetryView.as_view(),
        name="webhook-delivery-retry",
    ),
]
