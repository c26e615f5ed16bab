"""URLs of the step: ``path("mfa/", include("mfa_step_django.otp.urls"))``.

Pages: ``""`` (the code page; point ``OTP_LOGIN_URL`` at it), ``verify``, ``resend``.
JSON API under ``api/`` (see :mod:`mfa_step_django.otp.views`).
"""

from django.urls import path

from . import pages, views

app_name = "mfa_step_otp"

urlpatterns = [
    path("", pages.code_page, name="code"),
    path("verify", pages.verify_submit, name="verify"),
    path("resend", pages.resend, name="resend"),
    path("api/begin", views.begin, name="api_begin"),
    path("api/send", views.send, name="api_send"),
    path("api/verify", views.verify, name="api_verify"),
    path("api/status", views.status, name="api_status"),
    path("api/enroll", views.enroll, name="api_enroll"),
    path("api/change-email", views.change_email, name="api_change_email"),
    path("api/devices", views.devices, name="api_devices"),
    path("api/devices/revoke-all", views.revoke_all, name="api_revoke_all"),
    path("api/devices/<str:device_id>/revoke", views.revoke, name="api_revoke"),
    path("api/admin/orgs/<str:org_id>/policy", views.policy, name="api_policy"),
    path("api/admin/orgs/<str:org_id>/branding", views.branding, name="api_branding"),
    path("api/admin/orgs/<str:org_id>/email-preview", views.email_preview, name="api_email_preview"),
    path("api/admin/orgs/<str:org_id>/users/<str:user_id>/reset", views.reset_user, name="api_reset_user"),
    path("api/admin/orgs/<str:org_id>/users/<str:user_id>/status", views.user_status, name="api_user_status"),
]
