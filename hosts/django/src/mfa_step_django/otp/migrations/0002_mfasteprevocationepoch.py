from django.db import migrations, models


def confirm_devices(apps, schema_editor):
    # Rows left unconfirmed through the admin would refuse every verification (the device is
    # always confirmed now).
    device = apps.get_model("mfa_step_otp", "MfaStepEmailDevice")
    device.objects.using(schema_editor.connection.alias).filter(confirmed=False).update(confirmed=True)


class Migration(migrations.Migration):

    dependencies = [
        ("mfa_step_otp", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="MfaStepRevocationEpoch",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("org_id", models.CharField(max_length=128)),
                ("user_id", models.CharField(max_length=128)),
                ("device_id", models.CharField(blank=True, default="", max_length=128)),
                ("epoch", models.BigIntegerField(default=0)),
            ],
            options={
                "verbose_name": "mfa-step revocation epoch",
                "constraints": [
                    models.UniqueConstraint(fields=("org_id", "user_id", "device_id"), name="mfa_step_otp_one_epoch_per_device")
                ],
            },
        ),
        migrations.RunPython(confirm_devices, migrations.RunPython.noop),
    ]
