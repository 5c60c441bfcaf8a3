from django.urls import path

from dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.home, name="home"),
    path("organizations/switch", views.organization_switch, name="switch"),
    path("members/", views.members, name="members"),
    path("members/<str:username>/role", views.member_role, name="member-role"),
    path("members/<str:username>/remove", views.member_remove, name="member-remove"),
    path("members/invitations/<str:public_id>/revoke", views.invitation_revoke, name="invitation-revoke"),
    path("keys/", views.keys, name="keys"),
    path("keys/verify-email", views.email_verification_resend, name="verify-email-resend"),
    path("keys/<str:public_id>/revoke", views.key_revoke, name="key-revoke"),
    path("keys/<str:public_id>/caps", views.key_caps, name="key-caps"),
    path("playground/", views.playground, name="playground"),
    path("jobs/", views.jobs, name="jobs"),
    path("gallery/", views.gallery, name="gallery"),
    path("files/<str:public_id>", views.input_file, name="input-file"),
    path("jobs/<str:public_id>/", views.job_detail, name="job-detail"),
    path("jobs/<str:public_id>/status", views.job_status, name="job-status"),
    path("usage/", views.usage, name="usage"),
    path("batches/<str:public_id>/", views.batch_detail, name="batch-detail"),
    path("settings/", views.organization_settings, name="settings"),
    path("settings/webhook", views.webhook_set, name="webhook-set"),
    path("settings/webhook/delete", views.webhook_delete, name="webhook-delete"),
    path("settings/webhook/rotate", views.webhook_rotate, name="webhook-rotate"),
    path("settings/webhook/deliveries/<str:public_id>/retry", views.webhook_retry, name="webhook-retry"),
    path("operator/", views.operator, name="operator"),
]
