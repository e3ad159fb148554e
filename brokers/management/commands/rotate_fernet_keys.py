"""Re-encrypt every encrypted field under the newest key of ``settings.FERNET_KEYS``.

Rotation: put the new key first (``FERNET_KEYS=new,old``), deploy, run this command, then drop the
old key. Every model with a ``fernet_fields`` field is found through the app registry, so a new
encrypted field is rotated without touching this command. Rows are rewritten one at a time, each in
its own transaction under a row lock, with ``update()`` so no ``save()`` logic or ``auto_now``
timestamp runs.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from fernet_fields import EncryptedField

#: What fernet_fields caches on each field instance (``cached_property``) from the settings.
_CACHED_KEY_ATTRIBUTES = ("keys", "fernet_keys", "fernet")


def encrypted_fields() -> dict[type, list[EncryptedField]]:
    """Every installed model with encrypted fields, and those fields."""
    found = {}
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedField)]
        if fields:
            found[model] = fields
    return found


def clear_fernet_key_caches() -> None:
    """Forget the keys each encrypted field cached, so the next use reads settings.FERNET_KEYS.

    fernet_fields reads the keys once per field and process; call this whenever the setting
    changes within a process (this command, tests with ``override_settings``).
    """
    for fields in encrypted_fields().values():
        for field in fields:
            for name in _CACHED_KEY_ATTRIBUTES:
                field.__dict__.pop(name, None)


def reencrypt_row(model, fields: list[EncryptedField], pk) -> bool:
    """Decrypt one row with any known key and write it back under the newest. False if gone."""
    with transaction.atomic():
        row = model._base_manager.select_for_update().filter(pk=pk).first()
        if row is None:
            return False
        values = {field.name: getattr(row, field.attname) for field in fields}
        model._base_manager.filter(pk=pk).update(**values)
    return True


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field under the first (newest) key of FERNET_KEYS."

    def handle(self, *args, **options):
        clear_fernet_key_caches()
        total = 0
        failed: list[str] = []
        for model, fields in encrypted_fields().items():
            label = model._meta.label
            count = 0
            pks = model._base_manager.order_by("pk").values_list("pk", flat=True)
            for pk in pks.iterator():
                try:
                    count += reencrypt_row(model, fields, pk)
                except InvalidToken:  # no key opens it: report the row, go on with the rest
                    failed.append(f"{label} pk={pk}")
            names = ", ".join(field.name for field in fields)
            self.stdout.write(f"{label}: {count} rows re-encrypted ({names})")
            total += count
        self.stdout.write(f"Total: {total} rows re-encrypted under the newest key.")
        if failed:
            raise CommandError(
                f"{len(failed)} rows could not be decrypted with any key in FERNET_KEYS: "
                + "; ".join(failed)
            )
