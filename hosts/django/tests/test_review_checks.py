"""System checks added after the review (findings 11 and 12): a package without its component, a
project without CsrfViewMiddleware, a DEVICE_COOKIE setting that is not read."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from django.core import checks
from django.test import override_settings

from mfa_step_django.checks import check_component
from mfa_step_django.otp.checks import check_settings


def _ids(errors, level=checks.DEBUG):
    return {e.id for e in errors if e.level >= level}


def test_the_shipped_component_passes(settings):
    assert check_component() == []


def test_a_package_built_without_its_component_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "__init__.py").write_text("")
    monkeypatch.setattr(importlib.resources, "files", lambda package: Path(tmp_path))
    errors = check_component()
    assert _ids(errors, checks.ERROR) == {"mfa_step.E006"}
    assert "build_wasm.sh" in errors[0].hint


def test_a_configured_component_that_is_missing_unreadable_or_not_wasm_is_an_error(settings, tmp_path):
    settings.MFA_STEP = {**settings.MFA_STEP, "WASM": str(tmp_path / "nope.wasm")}
    assert _ids(check_component(), checks.ERROR) == {"mfa_step.E006"}
    settings.MFA_STEP = {**settings.MFA_STEP, "WASM": str(tmp_path)}  # a directory: unreadable as a file
    assert _ids(check_component(), checks.ERROR) == {"mfa_step.E006"}
    text = tmp_path / "component.wasm"
    text.write_text("<html>404</html>")
    settings.MFA_STEP = {**settings.MFA_STEP, "WASM": str(text)}
    assert _ids(check_component(), checks.ERROR) == {"mfa_step.E007"}
    good = tmp_path / "good.wasm"
    good.write_bytes(b"\0asm\x0d\0\x01\0")
    settings.MFA_STEP = {**settings.MFA_STEP, "WASM": str(good)}
    assert check_component() == []


def test_a_project_without_csrf_middleware_is_warned(settings):
    assert "mfa_step_otp.W007" not in _ids(check_settings())
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if "Csrf" not in m]):
        assert "mfa_step_otp.W007" in _ids(check_settings(), checks.WARNING)


def test_device_cookie_is_no_setting(settings):
    assert "mfa_step_otp.W004" not in _ids(check_settings())
    with override_settings(MFA_STEP={**settings.MFA_STEP, "DEVICE_COOKIE": "mfa"}):
        assert "mfa_step_otp.W004" in _ids(check_settings(), checks.WARNING)
        from mfa_step_django.otp.context import device_cookie_value
        from django.test import RequestFactory

        request = RequestFactory().get("/", HTTP_COOKIE="mfa=x; __Host-mfa-device=y")
        assert device_cookie_value(request) == "y"  # the component's cookie, whatever the setting
