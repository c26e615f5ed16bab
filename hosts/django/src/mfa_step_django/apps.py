from django.apps import AppConfig


class MfaStepConfig(AppConfig):
    """The engine layer: the component, its imports on Django's database and email backend."""

    name = "mfa_step_django"
    label = "mfa_step_django"
    verbose_name = "mfa-step"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
