from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from billing.views import UsageView
from config import views
from dashboard.forms import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm
from generation.api import views as generation_views

# The admin log-in is throttled like the dashboard's (tenants.login_throttle).
admin.site.login_form = ThrottledAdminAuthenticationForm

handler404 = "config.views.not_found"
handler500 = "config.views.error"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path(
        "login/",
        auth_views.LoginView.as_view(
            redirect_authenticated_user=True, authentication_form=ThrottledAuthenticationForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("v1/openapi.json", generation_views.OpenApiSchemaView.as_view(), name="openapi-schema"),
    path("docs/api", generation_views.ApiDocsView.as_view(url_name="openapi-schema"), name="api-docs"),
    path("", include("generation.api.compat.urls")),
    path("v1/", include("tenants.urls")),
    path("v1/", include("generation.api.urls")),
    path("files/<str:public_id>.<str:ext>", generation_views.ImageFileView.as_view(), name="image-file"),
    path("v1/usage", UsageView.as_view(), name="usage"),
    path("", include("billing.urls")),
    path("", include("dashboard.auth_urls")),
    path("", include("dashboard.urls")),
]
