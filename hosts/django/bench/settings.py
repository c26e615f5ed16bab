"""Django settings for the benchmarks (bench/run.sh): mfa-step-django and django-otp's own
EmailDevice side by side in one project, on the same database and the same mail stand-in.

SQLite (a file under $MFA_STEP_BENCH_DIR, IMMEDIATE transactions, as the package's README
recommends; the journal from MFA_STEP_BENCH_SQLITE, below) by default; Postgres when
MFA_STEP_BENCH_POSTGRES holds a postgres:// URL."""

import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse

BENCH_DIR = Path(os.environ.get("MFA_STEP_BENCH_DIR", "/tmp/mfa-step-django-bench"))
BENCH_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_otp",
    "django_otp.plugins.otp_email",
    "mfa_step_django",
]
MIDDLEWARE = []
ROOT_URLCONF = "bench.urls"

_pg = os.environ.get("MFA_STEP_BENCH_POSTGRES")
if _pg:
    _u = urlparse(_pg)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(_u.path.lstrip("/")) or "postgres",
            "USER": unquote(_u.username or ""),
            "PASSWORD": unquote(_u.password or ""),
            "HOST": _u.hostname or "127.0.0.1",
            "PORT": str(_u.port or 5432),
            "CONN_MAX_AGE": 600,
        }
    }
else:
    # MFA_STEP_BENCH_SQLITE picks the journal, the same for both sides (README, "Databases"):
    #   wal       WAL, synchronous=NORMAL (default): no fsync per commit, one per checkpoint
    #   wal-full  WAL, synchronous=FULL: an fsync of the WAL per commit
    #   rollback  SQLite's own defaults (rollback journal, synchronous=FULL): fsyncs per commit
    SQLITE_MODE = os.environ.get("MFA_STEP_BENCH_SQLITE", "wal")
    _pragmas = {
        "wal": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "wal-full": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        "rollback": "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;",
    }
    if SQLITE_MODE not in _pragmas:
        raise SystemExit(f"MFA_STEP_BENCH_SQLITE must be one of {', '.join(_pragmas)}, not {SQLITE_MODE!r}")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BENCH_DIR / "bench.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": _pragmas[SQLITE_MODE],
            },
        }
    }

# Both factors' mail goes to the same in-memory stand-in (bench/mailbox.py): the time measured is
# rendering and handing over a message, not an SMTP round trip.
EMAIL_BACKEND = "bench.mailbox.Backend"
DEFAULT_FROM_EMAIL = "mfa@clinic.example"
OTP_EMAIL_SENDER = DEFAULT_FROM_EMAIL

_key_file = BENCH_DIR / "hmac.key"
if not _key_file.exists():
    _key_file.write_text(secrets.token_hex(32))
MFA_STEP = {
    "HMAC_KEY": _key_file.read_text().strip(),
    "CACHE_DIR": str(BENCH_DIR / "cache"),
}

# django-otp's email template (otp/email/token.txt) comes from its app's templates folder.
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
