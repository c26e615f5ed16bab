"""System checks: the component cannot decide anything without a usable ``MFA_STEP["HMAC_KEY"]``
(every stored hash and code derives from it), so a missing or short key is an error at
``manage.py check``/``migrate``/``runserver``, not a ``misconfigured`` at the first login. Nor
without the component itself: a missing or unreadable ``mfa_step_plugin.wasm`` (a wheel built from
a checkout where ``scripts/build_wasm.sh`` was not run) or ``MFA_STEP["WASM"]`` is an error too."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

MIN_KEY_BYTES = 32


@register(Tags.security)
def check_hmac_key(app_configs=None, **kwargs):  # noqa: ANN001, ANN003, ANN201, ARG001
    conf = getattr(settings, "MFA_STEP", None)
    if conf is not None and not isinstance(conf, dict):
        return [Error("MFA_STEP must be a dict.", id="mfa_step.E001")]
    conf = conf or {}
    key = conf.get("HMAC_KEY") or (conf.get("CONFIG") or {}).get("hmac_key")
    hint = 'Generate one with: python -c "import secrets; print(secrets.token_hex(32))" and keep it secret (e.g. an environment variable).'
    if not key:
        return [Error('MFA_STEP["HMAC_KEY"] is not set: mfa-step needs it to key every stored hash.', hint=hint, id="mfa_step.E002")]
    try:
        raw = bytes.fromhex(str(key).strip())
    except ValueError:
        return [Error('MFA_STEP["HMAC_KEY"] is not hex.', hint=hint, id="mfa_step.E003")]
    if len(raw) < MIN_KEY_BYTES:
        return [Error(f'MFA_STEP["HMAC_KEY"] is {len(raw)} bytes; it must be at least {MIN_KEY_BYTES}.', hint=hint, id="mfa_step.E004")]
    return []


@register(Tags.database)
def check_database_alias(app_configs=None, **kwargs):  # noqa: ANN001, ANN003, ANN201, ARG001
    conf = getattr(settings, "MFA_STEP", None) or {}
    if not isinstance(conf, dict):
        return []
    alias = conf.get("DATABASE", "default")
    databases = getattr(settings, "DATABASES", {})
    if alias not in databases:
        return [Error(f'MFA_STEP["DATABASE"] names {alias!r}, which is not in DATABASES.', id="mfa_step.E005")]
    if databases[alias].get("ATOMIC_REQUESTS"):
        return [
            Warning(
                f"DATABASES[{alias!r}] has ATOMIC_REQUESTS: mfa-step refuses to run inside a request's transaction "
                "(its counters must apply at once and never roll back).",
                hint='Point MFA_STEP["DATABASE"] at a second alias of the same database with ATOMIC_REQUESTS off.',
                id="mfa_step.W001",
            )
        ]
    return []


WASM_MAGIC = b"\0asm"


@register()
def check_component(app_configs=None, **kwargs):  # noqa: ANN001, ANN003, ANN201, ARG001
    """The component file exists, is readable and is WebAssembly (not compiled here: that is the
    engine's first use; this only catches a package shipped without its component)."""
    from importlib import resources

    conf = getattr(settings, "MFA_STEP", None) or {}
    if not isinstance(conf, dict):
        return []
    configured = conf.get("WASM")
    hint = ("From a checkout: cargo build --release --locked -p host-harness --bin mfa-step, then "
            "bash hosts/django/scripts/build_wasm.sh, then build or install the package; or set "
            'MFA_STEP["WASM"] to a component file.')
    if configured:
        where = f'MFA_STEP["WASM"] ({configured})'
        try:
            with open(configured, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            return [Error(f"{where} cannot be read: {exc.strerror or exc}.", hint=hint, id="mfa_step.E006")]
    else:
        where = "mfa_step_plugin.wasm in the mfa_step_django package"
        try:
            with resources.files("mfa_step_django").joinpath("mfa_step_plugin.wasm").open("rb") as f:
                head = f.read(8)
        except (FileNotFoundError, OSError) as exc:
            return [Error(f"{where} is missing or unreadable ({type(exc).__name__}): the package was built "
                          "without its component.", hint=hint, id="mfa_step.E006")]
    if not head.startswith(WASM_MAGIC):
        return [Error(f"{where} is not a WebAssembly file.", hint=hint, id="mfa_step.E007")]
    return []
