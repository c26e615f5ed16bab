"""Example project: password login (django.contrib.auth), then mfa-step's emailed code (django-otp).

Development settings only (DEBUG, SQLite, email printed to the console). The HMAC key is read from
the MFA_STEP_HMAC_KEY environment variable, or generated once into `.hmac.key` beside this project
(never commit it; in production keep it in your secret store: every stored hash depends on it).
"""

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _hmac_key() -> str:
    env = os.environ.get("MFA_STEP_HMAC_KEY")
    if env:
        return env
    path = BASE_DIR / ".hmac.key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "mfa_step_django",
    "mfa_step_django.otp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "mfa_step_django.otp.middleware.TrustedDeviceMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exampleproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "exampleproject.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # The component's counters must be seen by concurrent requests: IMMEDIATE write locks
        # and a busy timeout instead of "database is locked" errors.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
    }
}

USE_TZ = True
USE_I18N = True
LANGUAGE_CODE = "en"
STATIC_URL = "static/"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
OTP_LOGIN_URL = "mfa_step_otp:code"
# Error reports (DEBUG pages, admin mails) hide the trusted-device token and the session cookie.
DEFAULT_EXCEPTION_REPORTER_FILTER = "mfa_step_django.otp.reporting.SafeExceptionReporterFilter"

EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "sign-in@example.test"

MFA_STEP = {
    "HMAC_KEY": _hmac_key(),
    # Everyone in this example's one organization is asked for a code (see README: the context
    # callable). Staff get "org-admin", superusers "platform-admin" (both require MFA by default).
    "CONTEXT": "exampleproject.mfa.context",
    "ORG_ID": "example",
    # Behind a reverse proxy, list it so that X-Forwarded-For is believed from it (and only it):
    # "TRUSTED_PROXIES": ["127.0.0.1/32"],
}

# The component's cookie is `__Host-mfa-device` (Secure): browsers keep it on https:// and on
# http://localhost; on plain http to another host the browser is not remembered.
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
