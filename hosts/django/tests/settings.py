"""Settings of the test project. SQLite by default (a FILE, so that threads share it; IMMEDIATE
transactions and a busy timeout); Postgres when ``MFA_STEP_TEST_DATABASE=postgres``, at the URL in
``MFA_STEP_TEST_POSTGRES`` (under ``CI=1`` a missing URL is an error, never a quiet SQLite run)."""

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

HERE = Path(__file__).resolve().parent

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django_otp",
    "mfa_step_django",
    "mfa_step_django.otp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "mfa_step_django.otp.middleware.TrustedDeviceMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database():
    which = os.environ.get("MFA_STEP_TEST_DATABASE", "sqlite").lower()
    if which == "postgres":
        url = os.environ.get("MFA_STEP_TEST_POSTGRES")
        if not url:
            raise RuntimeError(
                "MFA_STEP_TEST_DATABASE=postgres but MFA_STEP_TEST_POSTGRES (a postgres:// URL) is not set "
                "(`. .ci/servers.sh && start_servers` exports it)"
            )
        u = urlparse(url)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(u.path.lstrip("/")) or "postgres",
            "USER": unquote(u.username or ""),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "127.0.0.1",
            "PORT": str(u.port or 5432),
            # pytest-django creates test_<NAME>, used by every thread of a transaction=True test.
            "TEST": {"NAME": os.environ.get("MFA_STEP_TEST_POSTGRES_TEST_NAME") or None},
        }
    if which != "sqlite":
        raise RuntimeError(f"MFA_STEP_TEST_DATABASE={which!r}: expected sqlite or postgres")
    db_dir = Path(os.environ.get("MFA_STEP_TEST_SQLITE_DIR") or tempfile.mkdtemp(prefix="mfa-step-django-"))
    db_dir.mkdir(parents=True, exist_ok=True)
    name = str(db_dir / "test.sqlite3")
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        # A file, not :memory:, so that the threads of a test share one database.
        "TEST": {"NAME": name},
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }


DATABASES = {"default": _database()}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A second alias to the same database, with its own connection: the engine may use it while
    # the caller holds a transaction on "default" (tests/test_engine.py shows both ways). Not on
    # SQLite, whose one writer at a time would make it wait for the caller's transaction.
    DATABASES["mfa_step"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = "MFA <mfa@clinic.example>"

MFA_STEP = {
    # Tests only: a fixed key, so an exported trail can be verified with it.
    "HMAC_KEY": "6d66612d737465702d646a616e676f2d74657374732d6f6e6c792d6b65792d3332",
    "DATABASE": "default",
    "CACHE_DIR": os.environ.get("MFA_STEP_CACHE_DIR") or str(Path.home() / ".cache" / "mfa-step-django"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"mfa_step_django": {"handlers": ["console"], "level": "ERROR"}},
}
