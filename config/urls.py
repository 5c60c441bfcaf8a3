from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from billing.views import UsageView
from config import views

handler404 = "config.views.not_found"
handler500 = "config.views.error"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("v1/usage", UsageView.as_view(), name="usage"),
    path("v1/", include("tenants.urls")),
    path("", include("billing.urls")),
    path("", include("dashboard.urls")),
]
