from django.urls import path

from generation import views

urlpatterns = [
    path("generations", views.GenerationListCreateView.as_view(), name="generation-list"),
    path("generations/<str:public_id>", views.GenerationDetailView.as_view(), name="generation-detail"),
    path(
        "generations/<str:public_id>/cancel", views.GenerationCancelView.as_view(), name="generation-cancel"
    ),
    path("models", views.ModelListView.as_view(), name="model-list"),
]
