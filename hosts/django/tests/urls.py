"""URLs of the test project: a password login, a page behind ``otp_required``, and the step."""

from django.contrib.auth import login as auth_login
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import include, path
from django_otp.decorators import otp_required

from mfa_step_django.otp import amr


def password_login(request):
    """The first factor: username + password (Django's own form and ``login``)."""
    if request.method == "POST":
        form = AuthenticationForm(request, data=request.POST)
        if form.is_valid():
            auth_login(request, form.get_user())
            return HttpResponseRedirect(request.POST.get("next") or "/protected/")
        return HttpResponse("bad password", status=400)
    return HttpResponse("login page")


def upstream_down(request):
    """A project view answering 5xx on its own (an upstream timeout, a maintenance 503)."""
    return HttpResponse("upstream down", status=502)


def broken(request):
    """A project view with a bug (Django answers 500)."""
    raise RuntimeError("a bug in the project's view")


def change_password(request):
    """The user changes their own password the Django way (form, save, keep this session)."""
    from django.contrib.auth import update_session_auth_hash
    from django.contrib.auth.forms import PasswordChangeForm

    form = PasswordChangeForm(request.user, request.POST)
    if not form.is_valid():
        return HttpResponse("bad password", status=400)
    form.save()
    update_session_auth_hash(request, form.user)
    return HttpResponse("password changed")


@otp_required(login_url="/mfa/")
def protected(request):
    return HttpResponse("protected page amr=" + ",".join(amr(request)))


def device_op(request, op):
    """Calls the django-otp ``Device`` API of the signed-in user's device, as a plugin would."""
    import json

    from mfa_step_django.engine import MfaError
    from mfa_step_django.otp.models import MfaStepEmailDevice

    owner = request.user
    if request.GET.get("of"):
        from django.contrib.auth import get_user_model

        owner = get_user_model().objects.get(username=request.GET["of"])
    device = MfaStepEmailDevice.for_user(owner)
    try:
        out = _device_call(request, device, op)
    except MfaError as err:
        if err.kind != "forbidden":
            raise
        return HttpResponse(json.dumps({"error": err.kind}), status=403, content_type="application/json")
    return HttpResponse(json.dumps(out), content_type="application/json")


def _device_call(request, device, op):
    import django_otp

    out = {}
    if op == "generate_is_allowed":
        ok, extra = device.generate_is_allowed()
        out = {"ok": ok, "reason": getattr((extra or {}).get("reason"), "value", None),
               "next_generation_at": str((extra or {}).get("next_generation_at") or "")}
    elif op == "generate_challenge":
        out = {"message": device.generate_challenge()}
    elif op == "verify_is_allowed":
        ok, extra = device.verify_is_allowed()
        out = {"ok": ok, "reason": getattr((extra or {}).get("reason"), "value", None),
               "failure_count": (extra or {}).get("failure_count"), "error_message": (extra or {}).get("error_message")}
    elif op == "verify_token":
        ok = device.verify_token(request.POST.get("token", ""))
        out = {"ok": ok, "last_error": getattr(device.last_error, "kind", None),
               "is_verified": request.user.is_verified()}
    elif op == "otp_token_form":
        from django_otp.forms import OTPTokenForm

        form = OTPTokenForm(request.user, request, data={"otp_device": device.persistent_id,
                                                          "otp_token": request.POST.get("token", "")})
        out = {"ok": form.is_valid(), "is_verified": request.user.is_verified()}
    elif op == "django_otp_verify_token":
        found = django_otp.verify_token(request.user, device.persistent_id, request.POST.get("token", ""))
        out = {"ok": found is not None}
    return out


urlpatterns = [
    path("device/<str:op>", device_op),
    path("accounts/login/", password_login, name="login"),
    path("protected/", protected, name="protected"),
    path("upstream-down/", upstream_down),
    path("broken/", broken),
    path("accounts/password/", change_password),
    path("mfa/", include("mfa_step_django.otp.urls")),
]
