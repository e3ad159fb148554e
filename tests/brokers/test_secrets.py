"""Secrets at rest: encrypted in the database, rotatable to a new key, and never shown anywhere."""

from __future__ import annotations

import contextlib
import json
import logging
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from fernet_fields import hkdf

from accounts.models import Role
from brokers import services
from brokers.adapters import errors
from brokers.adapters.base import SessionData
from brokers.management.commands.rotate_fernet_keys import (
    clear_fernet_key_caches,
    encrypted_fields,
)
from brokers.models import BrokerAccount, BrokerSession
from tests.fake_broker import registered_fake_brokers

OLD_KEY = "old-fernet-key-for-the-rotation-test"
NEW_KEY = "new-fernet-key-for-the-rotation-test"
CANARY = "canary-secret-3b7e1f"
TOKEN_CANARY = "canary-token-a8d2c4"


@contextlib.contextmanager
def fernet_keys(*keys: str):
    """Run with ``FERNET_KEYS`` set to ``keys`` (newest first), with the fields' caches cleared."""
    with override_settings(FERNET_KEYS=list(keys)):
        clear_fernet_key_caches()
        try:
            yield
        finally:
            clear_fernet_key_caches()
    clear_fernet_key_caches()


@pytest.fixture(autouse=True)
def fake_brokers():
    with registered_fake_brokers():
        yield


def raw_column(model, field_name: str, pk) -> bytes:
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field(field_name).column)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return bytes(cursor.fetchone()[0])


def make_secret_rows(team):
    account = services.broker_account_create(
        team=team,
        broker="fakeoauth",
        label="Desk",
        credentials={"api_key": "plain-key", "api_secret": CANARY},
    )
    services.session_store(
        account=account,
        data=SessionData(
            access_token=TOKEN_CANARY,
            refresh_token=f"{TOKEN_CANARY}-refresh",
            feed_token=f"{TOKEN_CANARY}-feed",
            extra={"user_id": f"{TOKEN_CANARY}-extra"},
        ),
    )
    return account


def read_all(account) -> dict:
    fresh = BrokerAccount.objects.get(pk=account.pk)
    session = BrokerSession.objects.get(broker_account=account)
    return {
        "secrets": fresh.secrets(),
        "access": session.access_token,
        "refresh": session.refresh_token,
        "feed": session.feed_token,
        "extra": json.loads(session.extra),
    }


EXPECTED = {
    "secrets": {"api_secret": CANARY},
    "access": TOKEN_CANARY,
    "refresh": f"{TOKEN_CANARY}-refresh",
    "feed": f"{TOKEN_CANARY}-feed",
    "extra": {"user_id": f"{TOKEN_CANARY}-extra"},
}


# Rotation ---------------------------------------------------------------------------------------


def test_the_command_finds_every_encrypted_field():
    found = {
        model._meta.label: {f.name for f in fields} for model, fields in encrypted_fields().items()
    }
    assert found["brokers.BrokerAccount"] == {"secret_credentials"}
    assert found["brokers.BrokerSession"] == {
        "access_token",
        "refresh_token",
        "feed_token",
        "extra",
    }


def test_after_rotation_the_old_key_can_be_dropped(team):
    with fernet_keys(OLD_KEY):
        account = make_secret_rows(team)
        assert read_all(account) == EXPECTED

    out = StringIO()
    with fernet_keys(NEW_KEY, OLD_KEY):
        assert read_all(account) == EXPECTED  # both keys read during the change-over
        call_command("rotate_fernet_keys", stdout=out)
    assert "brokers.BrokerAccount: 1 rows re-encrypted" in out.getvalue()
    assert "brokers.BrokerSession: 1 rows re-encrypted" in out.getvalue()
    assert "Total: 2 rows" in out.getvalue()

    with fernet_keys(NEW_KEY):
        assert read_all(account) == EXPECTED
    # Written under the new key alone: the new key's Fernet opens the raw column by itself.
    new_fernet = Fernet(hkdf.derive_fernet_key(NEW_KEY))
    raw = raw_column(BrokerAccount, "secret_credentials", account.pk)
    assert json.loads(new_fernet.decrypt(raw)) == {"api_secret": CANARY}


def test_without_rotation_dropping_the_old_key_loses_the_secrets(team):
    """The control for the test above: it is the rotation that saves the rows."""
    with fernet_keys(OLD_KEY):
        account = make_secret_rows(team)
    with fernet_keys(NEW_KEY):
        with pytest.raises(InvalidToken):
            BrokerAccount.objects.get(pk=account.pk)
        with pytest.raises(InvalidToken):
            BrokerSession.objects.get(broker_account=account)


def test_rotation_does_not_touch_updated_at(team):
    with fernet_keys(OLD_KEY):
        account = make_secret_rows(team)
        before = BrokerAccount.objects.get(pk=account.pk).updated_at
    with fernet_keys(NEW_KEY, OLD_KEY):
        call_command("rotate_fernet_keys", stdout=StringIO())
        assert BrokerAccount.objects.get(pk=account.pk).updated_at == before


def test_a_row_no_key_opens_is_reported_and_the_rest_rotated(team, other_team):
    from django.core.management.base import CommandError

    with fernet_keys("a-key-that-will-be-lost"):
        lost = make_secret_rows(other_team)
    with fernet_keys(OLD_KEY):
        kept = make_secret_rows(team)
    with fernet_keys(NEW_KEY, OLD_KEY):
        with pytest.raises(CommandError) as raised:
            call_command("rotate_fernet_keys", stdout=StringIO())
    assert f"brokers.BrokerAccount pk={lost.pk}" in str(raised.value)
    assert CANARY not in str(raised.value)
    with fernet_keys(NEW_KEY):
        assert read_all(kept) == EXPECTED


# At rest ----------------------------------------------------------------------------------------


def test_the_database_columns_never_hold_the_plain_secret(team):
    account = make_secret_rows(team)
    session = BrokerSession.objects.get(broker_account=account)
    columns = [raw_column(BrokerAccount, "secret_credentials", account.pk)] + [
        raw_column(BrokerSession, name, session.pk)
        for name in ("access_token", "refresh_token", "feed_token", "extra")
    ]
    for raw in columns:
        assert CANARY.encode() not in raw
        assert TOKEN_CANARY.encode() not in raw
    # The plain (non-secret) credentials stay readable, as designed.
    assert BrokerAccount.objects.get(pk=account.pk).credentials == {"api_key": "plain-key"}


# Never shown ------------------------------------------------------------------------------------


def assert_no_canary(text: str):
    assert CANARY not in text
    assert TOKEN_CANARY not in text


def exception_chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_the_canary_never_appears_in_api_responses(team, member, api_client_for):
    client = api_client_for(member(team, Role.OWNER))
    created = client.post(
        "/api/broker-accounts/",
        {
            "broker": "fakeoauth",
            "label": "Desk",
            "credentials": {"api_key": "plain-key", "api_secret": CANARY},
        },
        format="json",
    )
    assert created.status_code == 201
    account = BrokerAccount.objects.get(pk=created.json()["id"])
    services.session_store(account=account, data=SessionData(access_token=TOKEN_CANARY))
    responses = [
        created,
        client.get("/api/broker-accounts/"),
        client.get(f"/api/broker-accounts/{account.pk}/"),
        client.get(f"/api/broker-accounts/{account.pk}/login-url/"),
        client.get(f"/api/broker-accounts/{account.pk}/funds/"),
        client.patch(f"/api/broker-accounts/{account.pk}/", {"label": "New"}, format="json"),
    ]
    for response in responses:
        assert response.status_code < 500
        assert_no_canary(response.content.decode())


def test_the_canary_never_appears_in_admin_or_console_pages(team, member, django_user_model):
    account = make_secret_rows(team)
    session = BrokerSession.objects.get(broker_account=account)
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(superuser)
    pages = [
        "/admin/brokers/brokeraccount/",
        f"/admin/brokers/brokeraccount/{account.pk}/change/",
        "/admin/brokers/brokersession/",
        f"/admin/brokers/brokersession/{quote(session.pk)}/change/",
    ]
    for url in pages:
        response = admin.get(url)
        assert response.status_code == 200, url
        assert_no_canary(response.content.decode())

    owner = member(team, Role.OWNER)
    console = Client()
    console.force_login(owner.user)
    for url in ("/", f"/accounts/{account.pk}/"):
        response = console.get(url)
        assert response.status_code == 200, url
        assert_no_canary(response.content.decode())


def test_a_failed_connect_leaks_the_password_nowhere(team, member, api_client_for, caplog):
    caplog.set_level(logging.DEBUG)
    account = services.broker_account_create(
        team=team,
        broker="fakecreds",
        label="Unreachable",
        credentials={"username": "trader-1", "password": CANARY},
    )

    with pytest.raises(errors.BrokerError) as raised:
        services.broker_account_connect(account=account)
    for exc in exception_chain(raised.value):
        assert_no_canary(str(exc))
        assert_no_canary(repr(exc))
        assert_no_canary(repr(exc.args))

    client = api_client_for(member(team, Role.TRADER))
    response = client.post(f"/api/broker-accounts/{account.pk}/connect/")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "broker_unavailable"
    assert_no_canary(response.content.decode())

    account.refresh_from_db()
    assert_no_canary(account.last_error)
    assert caplog.records  # the failure was logged somewhere (Django logs the 502)
    assert_no_canary(caplog.text)
    for record in caplog.records:
        assert_no_canary(repr(record.args))
