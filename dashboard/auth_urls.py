"""Account pages outside the dashboard namespace: Django's password-reset views look their URLs up
by these plain names, and the invitation link is public (the token is the credential)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import views
from dashboard.forms import ThrottledPasswordResetForm

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("signup/sent/", views.signup_sent, name="signup-sent"),
    path("verify-email/", views.email_verify, name="email-verify"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path(
        "password-reset/",
        auth_views.PasswordResetView.as_view(form_class=ThrottledPasswordResetForm),
        name="password_reset",
    ),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"
    ),
]
