from django.apps import AppConfig


class MfaStepOtpConfig(AppConfig):
    name = "mfa_step_django.otp"
    label = "mfa_step_otp"
    verbose_name = "mfa-step (django-otp)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_save

        from . import checks  # noqa: F401  (registers the system checks)
        from .credentials import on_user_saved
        from .flow import on_user_logged_in

        user_logged_in.connect(on_user_logged_in, dispatch_uid="mfa_step_otp_logged_in")
        # A password change revokes the user's trusted browsers (credentials.py).
        post_save.connect(on_user_saved, sender=get_user_model(), dispatch_uid="mfa_step_otp_password_changed")
