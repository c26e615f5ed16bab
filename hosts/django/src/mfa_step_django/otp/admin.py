"""django-otp's admin for ``MfaStepEmailDevice``: see and delete users' devices (no secrets here)."""

from django.contrib import admin
from django.contrib.admin.sites import AlreadyRegistered

from .models import MfaStepEmailDevice


class MfaStepEmailDeviceAdmin(admin.ModelAdmin):
    # No "confirmed": the device is always confirmed (an unconfirmed row would make django-otp drop
    # every verification the component grants; see MfaStepEmailDevice).
    list_display = ["user", "name", "created_at"]
    list_filter = ["created_at"]
    exclude = ["confirmed"]
    raw_id_fields = ["user"]
    readonly_fields = ["created_at"]
    search_fields = ["user__username", "user__email"]


try:
    admin.site.register(MfaStepEmailDevice, MfaStepEmailDeviceAdmin)
except AlreadyRegistered:
    pass
