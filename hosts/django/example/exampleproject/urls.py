from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.urls import include, path, reverse
from django_otp.admin import OTPAdminSite
from django_otp.decorators import otp_required

from mfa_step_django.otp import amr

# The admin asks for the second factor too (the session must be verified first, on /mfa/).
admin.site.__class__ = OTPAdminSite


@otp_required
def home(request):
    return render(request, "example/home.html", {"amr": amr(request)})


def admin_login(request):
    """The admin's login: our password page, then the code page."""
    if request.user.is_authenticated:
        return redirect(reverse("mfa_step_otp:code") + "?next=/admin/")
    return redirect(reverse("login") + "?next=/admin/")


urlpatterns = [
    path("", home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("mfa/", include("mfa_step_django.otp.urls")),
    # The admin's own login form verifies OTP inside transaction.atomic(), which the engine refuses
    # (see README, Transactions): sign in here and pass /mfa/ first, then the admin lets you in.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
]
