"""mfa-step for Django: the unchanged mfa-step component (``mfa_step_plugin.wasm``) in-process,
its store and audit trail on Django's database, its mail through Django's email backend.

Map of the package:

- :mod:`mfa_step_django.engine`      the component loaded once, a fresh instance per call, the
                                      Python API (``get_engine()``, ``MfaError``, ``MfaUnavailable``)
- :mod:`mfa_step_django.backends`    what the component's imports reach (database, mail, faults)
- :mod:`mfa_step_django.models`      the tables (values, counters, audit trail) and migrations
- :mod:`mfa_step_django.conformance` the host conformance kit run over these same imports
- :mod:`mfa_step_django.checks`      system checks (``MFA_STEP["HMAC_KEY"]``)
- management commands                ``mfa_step_sweep``, ``mfa_step_audit_export``, ``mfa_step_conformance``
- :mod:`mfa_step_django.otp`         the django-otp face (device, middleware, views)
"""

__version__ = "0.2.0"
