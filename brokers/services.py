"""Every write to broker accounts and sessions, and the one way to get an account's adapter."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import TypeVar

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .adapters import errors
from .adapters.base import BrokerAdapter, SessionData
from .models import BrokerAccount, BrokerSession, ConnectionState
from .rate_limits import throttle_for_account

logger = logging.getLogger(__name__)
T = TypeVar("T")

OAUTH_STATE_SALT = "algoways.brokers.oauth-state"
OAUTH_STATE_MAX_AGE_SECONDS = 600


# Accounts --------------------------------------------------------------------------------------


def broker_account_create(
    *, team, broker: str, label: str, credentials: Mapping[str, str], base_url: str = ""
) -> BrokerAccount:
    """Create an account; credentials are split into plain and encrypted fields by the adapter."""
    account = BrokerAccount(team=team, broker=broker, label=label, base_url=base_url)
    _assign_credentials(account, credentials, replace=True)
    account.full_clean(exclude=["team"])
    account.save()
    return account


def broker_account_update(
    *, account: BrokerAccount, credentials: Mapping[str, str] | None = None, **fields
) -> BrokerAccount:
    """Change label/base URL and any credential field; secrets not given are kept as they were."""
    for name, value in fields.items():
        setattr(account, name, value)
    if credentials:
        _assign_credentials(account, credentials, replace=False)
    account.full_clean(exclude=["team"])
    account.save()
    return account


def _assign_credentials(account: BrokerAccount, values: Mapping[str, str], *, replace: bool):
    adapter_class = account.adapter_class
    known = {f.name: f for f in adapter_class.credential_fields}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValidationError({"credentials": [f"Unknown credential fields: {unknown}"]})
    plain = {} if replace else dict(account.credentials)
    secret = {} if replace else account.secrets()
    for name, value in values.items():
        (secret if known[name].secret else plain)[name] = str(value)
    if replace:
        missing = [f.name for f in known.values() if f.required and not values.get(f.name)]
        if missing:
            raise ValidationError({"credentials": [f"Missing credential fields: {missing}"]})
    account.credentials = plain
    account.set_secrets(secret)


# Adapters ----------------------------------------------------------------------------------------


def adapter_for_account(account: BrokerAccount) -> BrokerAdapter:
    """A ready adapter for ``account``: its credentials, session, base URL and shared rate limits.

    When the adapter renews its session on its own (DXtrade's re-login), the new session is saved.
    """
    adapter_class = account.adapter_class
    session = getattr(account, "session", None) if account.pk else None
    adapter = adapter_class(
        credentials=account.all_credentials(),
        session=session.to_session_data() if session else None,
        base_url=account.base_url,
        throttle=throttle_for_account(account),
        on_session_renewed=lambda data: session_store(account=account, data=data),
        account_id=account.pk,
    )
    adapter.connect_timeout = settings.BROKER_CONNECT_TIMEOUT
    adapter.read_timeout = settings.BROKER_READ_TIMEOUT
    return adapter


def broker_call(account: BrokerAccount, operation: Callable[[BrokerAdapter], T]) -> T:
    """Run one adapter operation for ``account`` and record what it says about the session."""
    adapter = adapter_for_account(account)
    try:
        return operation(adapter)
    except NotImplementedError as exc:
        # An operation the adapter does not offer is the caller's 400, never a 500.
        raise errors.NotSupported(
            f"{adapter.name or account.broker} does not support this operation."
        ) from exc
    except errors.SessionExpired as exc:
        account_mark(account=account, state=ConnectionState.NEEDS_LOGIN, error=str(exc))
        raise
    except (errors.InvalidCredentials, errors.AccountLocked) as exc:
        account_mark(account=account, state=ConnectionState.ERROR, error=str(exc))
        raise
    finally:
        adapter.close()


# Sessions --------------------------------------------------------------------------------------


def session_store(*, account: BrokerAccount, data: SessionData) -> BrokerSession:
    """Save a new or renewed session and mark the account connected."""
    with transaction.atomic():
        session, _ = BrokerSession.objects.update_or_create(
            broker_account=account,
            defaults={
                "access_token": data.access_token,
                "refresh_token": data.refresh_token or "",
                "feed_token": data.feed_token or "",
                "extra": json.dumps(data.extra, default=str),
                "issued_at": data.issued_at or timezone.now(),
                "expires_at": data.expires_at,
            },
        )
        account_mark(account=account, state=ConnectionState.CONNECTED)
        # A working session (a person's reconnect included) re-enables automatic sign-in.
        BrokerAccount.objects.filter(pk=account.pk).update(login_failures=0, login_retry_at=None)
        account.login_failures, account.login_retry_at = 0, None
    account.session = session
    return session


def account_mark(*, account: BrokerAccount, state: str, error: str = "") -> None:
    """Move an account to a connection state; an error or needs_login keeps the reason and time."""
    now = timezone.now()
    fields = {"connection_state": state, "updated_at": now}
    if error:
        fields.update(last_error=error[:2000], last_error_at=now)
    BrokerAccount.objects.filter(pk=account.pk).update(**fields)
    for name, value in fields.items():
        setattr(account, name, value)
    if state != ConnectionState.CONNECTED:
        logger.info("Broker account %s is now %s", account.pk, state)


def broker_account_connect(*, account: BrokerAccount) -> BrokerSession:
    """Log in with the stored credentials (credential and TOTP flows). Never retried in a loop:
    brokers lock accounts after repeated failed logins."""
    data = broker_call(account, lambda adapter: adapter.login())
    return session_store(account=account, data=data)


def broker_account_disconnect(*, account: BrokerAccount) -> None:
    """Log out at the broker (best effort) and forget the session."""
    session = BrokerSession.objects.filter(broker_account=account).first()
    if session is not None:
        try:
            broker_call(account, lambda adapter: adapter.logout())
        except (errors.BrokerError, NotImplementedError):
            logger.info(
                "Logout at the broker failed for account %s; dropping the session", account.pk
            )
        session.delete()
    account_mark(account=account, state=ConnectionState.DISCONNECTED)


def session_refresh(*, account: BrokerAccount) -> BrokerSession:
    """Renew the session with the broker's refresh mechanism."""
    data = broker_call(account, lambda adapter: adapter.refresh())
    return session_store(account=account, data=data)


# OAuth-style logins ----------------------------------------------------------------------------


def oauth_redirect_url(account: BrokerAccount) -> str:
    return f"{settings.PUBLIC_URL}/brokers/callback/{account.broker}/"


def oauth_login_url(*, account: BrokerAccount) -> str:
    """The broker login page, with a signed, expiring state tying the callback to this account."""
    payload = {"account": account.pk, "team": account.team_id, "nonce": secrets.token_hex(8)}
    state = signing.dumps(payload, salt=OAUTH_STATE_SALT, compress=True)
    adapter = adapter_for_account(account)
    try:
        return adapter.login_url(state=state, redirect_url=oauth_redirect_url(account))
    finally:
        adapter.close()


def oauth_account_from_state(*, state: str, team=None, expected_account=None) -> BrokerAccount:
    """The account a callback belongs to; a forged, altered, expired or reused state is refused."""
    try:
        payload = signing.loads(state, salt=OAUTH_STATE_SALT, max_age=OAUTH_STATE_MAX_AGE_SECONDS)
    except signing.BadSignature as exc:
        raise ValidationError({"state": ["The login state is invalid or has expired."]}) from exc
    accounts = BrokerAccount.objects.filter(pk=payload["account"], team_id=payload["team"])
    if team is not None:
        accounts = accounts.for_team(team)
    account = accounts.first()
    if account is None or (expected_account is not None and account.pk != expected_account.pk):
        raise ValidationError({"state": ["The login state does not match this account."]})
    # One use per state, remembered in the shared cache for as long as the state is valid.
    if not cache.add(f"oauth-state-used:{payload['nonce']}", 1, OAUTH_STATE_MAX_AGE_SECONDS):
        raise ValidationError({"state": ["This login was already completed; start a new one."]})
    return account


def oauth_login_complete(
    *, state: str, params: Mapping[str, str], team=None, expected_account=None
) -> BrokerSession:
    """Finish an OAuth login from the broker's redirect for the account named by ``state``."""
    account = oauth_account_from_state(state=state, team=team, expected_account=expected_account)
    data = broker_call(
        account,
        lambda adapter: adapter.complete_login(params, redirect_url=oauth_redirect_url(account)),
    )
    return session_store(account=account, data=data)
