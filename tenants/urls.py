from django.urls import path

from tenants.views import OrganizationDetailView

urlpatterns = [
    path("organization", OrganizationDetailView.as_view(), name="organization-detail"),
]
