"""The two logins as views, for the benchmark through gunicorn (bench/run.sh drives them with wrk):
`POST /mfa-step/<user>` and `POST /django-otp/<user>`, each one whole second-factor login."""

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .flows import django_otp_login, mfa_step_login


@csrf_exempt
@require_POST
def mfa_step(request, user):
    mfa_step_login(user)
    return HttpResponse("ok\n", content_type="text/plain")


@csrf_exempt
@require_POST
def django_otp(request, user):
    django_otp_login(user)
    return HttpResponse("ok\n", content_type="text/plain")


urlpatterns = [
    path("mfa-step/<str:user>", mfa_step),
    path("django-otp/<str:user>", django_otp),
]
