"""The example's context callable: who the signed-in user is, for the component's rules."""

from mfa_step_django.otp.context import default_context


def context(request):
    info = default_context(request)
    # This example asks every user for a code: give everyone a role the platform requires MFA for
    # (`provider` is in the default `required_roles`). A real project maps its own roles here.
    info["roles"] = sorted(set(info["roles"]) | {"provider"})
    return info
