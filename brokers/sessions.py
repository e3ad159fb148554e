"""Broker sessions that stay alive without a human, wherever the broker allows it.

- Brokers with a refresh mechanism (Angel, Fyers, Match-Trader; DXtrade's ping) are renewed ahead
  of expiry.
- Brokers with stored credentials (Angel with TOTP, DXtrade, Match-Trader) sign in again once a
  session has expired or cannot be renewed.
- Brokers that need a person (Kite, each morning) move to needs_login at expiry, and the team is
  told (console, API, and a notification).

Automatic logins back off per account and stop after a few failures: brokers lock accounts after
repeated bad logins.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from . import services
from .adapters import errors
from .models import BrokerAccount, BrokerSession, ConnectionState
from .notifications import team_notify

logger = logging.getLogger(__name__)

MAX_AUTOMATIC_LOGIN_FAILURES = 3
LOGIN_BACKOFF_SECONDS = 120  # 2 min, then 8, then stop
MIN_REFRESH_LEAD = timedelta(minutes=1)
MAX_REFRESH_LEAD = timedelta(minutes=30)
#: Spread one sweep's renewals over this window, within each broker's login rate.
SPREAD_WINDOW_SECONDS = 600
EXPIRED_SESSION_RETENTION = timedelta(days=1)


def refresh_lead(session: BrokerSession) -> timedelta:
    """How long before expiry we renew: a quarter of the session's life, within bounds."""
    if session.issued_at and session.expires_at:
        lifetime = session.expires_at - session.issued_at
        return max(MIN_REFRESH_LEAD, min(MAX_REFRESH_LEAD, lifetime / 4))
    return MAX_REFRESH_LEAD


def accounts_due(now: datetime | None = None) -> list[BrokerAccount]:
    """Accounts whose session is about to expire or has expired and that we may act on."""
    now = now or timezone.now()
    candidates = (
        BrokerAccount.objects.select_related("session", "team")
        .filter(login_failures__lt=MAX_AUTOMATIC_LOGIN_FAILURES)
        .filter(Q(login_retry_at__isnull=True) | Q(login_retry_at__lte=now))
        .filter(
            Q(
                connection_state=ConnectionState.CONNECTED,
                session__expires_at__lte=now + MAX_REFRESH_LEAD,
            )
            # a transient failure scheduled a retry of a stored-credential login
            | Q(login_retry_at__isnull=False)
        )
    )
    due = []
    for account in candidates:
        session = getattr(account, "session", None)
        if account.login_retry_at is not None or session is None or session.expires_at is None:
            due.append(account)
        elif session.expires_at - refresh_lead(session) <= now:
            due.append(account)
    return due


def session_keepalive(*, account: BrokerAccount, now: datetime | None = None) -> str:
    """Renew, re-login or flag one account. Returns what was done."""
    now = now or timezone.now()
    adapter_class = account.adapter_class
    notify = account.connection_state != ConnectionState.NEEDS_LOGIN
    session = BrokerSession.objects.filter(broker_account=account).first()
    expired = session is None or (session.expires_at is not None and session.expires_at <= now)
    can_relogin = adapter_class.supports("credentials_login")
    try:
        if not expired and adapter_class.supports("refresh_session"):
            try:
                services.session_refresh(account=account)
                return _succeeded(account, "refreshed")
            except errors.SessionExpired:
                if not can_relogin:
                    raise
        if can_relogin:
            services.broker_account_connect(account=account)
            return _succeeded(account, "logged_in")
        if expired:
            _needs_login(account, notify=notify)
            return "needs_login"
        return "waiting"
    except errors.SessionExpired:
        _needs_login(account, notify=notify)
        return "needs_login"
    except (errors.InvalidCredentials, errors.AccountLocked) as exc:
        return _failed(account, exc, now, permanent=True)
    except errors.BrokerError as exc:
        return _failed(account, exc, now, permanent=False)


def _succeeded(account: BrokerAccount, result: str) -> str:
    BrokerAccount.objects.filter(pk=account.pk).update(login_failures=0, login_retry_at=None)
    return result


def _needs_login(account: BrokerAccount, *, notify: bool) -> None:
    services.account_mark(
        account=account,
        state=ConnectionState.NEEDS_LOGIN,
        error="The broker session has expired; sign in to the broker again.",
    )
    BrokerAccount.objects.filter(pk=account.pk).update(login_retry_at=None)
    if notify:
        team_notify(
            team=account.team,
            subject=f"{account.label}: sign in to {account.adapter_class.name} again",
            message=f"The session of broker account {account.label} has expired. Open the "
            "console and reconnect it to keep trading.",
        )


def _failed(account: BrokerAccount, exc: errors.BrokerError, now: datetime, *, permanent: bool):
    failures = account.login_failures + 1
    stop = permanent or failures >= MAX_AUTOMATIC_LOGIN_FAILURES
    retry_at = (
        None if stop else now + timedelta(seconds=LOGIN_BACKOFF_SECONDS * 4 ** (failures - 1))
    )
    BrokerAccount.objects.filter(pk=account.pk).update(
        login_failures=MAX_AUTOMATIC_LOGIN_FAILURES if stop else failures, login_retry_at=retry_at
    )
    reason = f"Automatic sign-in failed: {exc.message}"
    if stop:
        reason += " Automatic sign-in has stopped; reconnect the account."
    services.account_mark(account=account, state=ConnectionState.ERROR, error=reason)
    if stop:
        team_notify(
            team=account.team, subject=f"{account.label}: automatic sign-in stopped", message=reason
        )
    logger.warning("Keepalive of broker account %s failed (%s)", account.pk, exc.code)
    return "failed"


def keepalive_schedule(accounts: list[BrokerAccount]) -> list[tuple[int, float]]:
    """(account id, delay in seconds) for each account: spread within each broker's login rate.

    Without this, thousands of sessions issued at the same morning login would all renew in the
    same second and trip the broker's login limit.
    """
    by_broker: dict[str, list[BrokerAccount]] = {}
    for account in accounts:
        by_broker.setdefault(account.broker, []).append(account)
    plan = []
    for broker_accounts in by_broker.values():
        per_second = login_rate_per_second(broker_accounts[0].adapter_class)
        for index, account in enumerate(broker_accounts):
            delay = index / per_second
            plan.append((account.pk, min(delay, SPREAD_WINDOW_SECONDS) + random.uniform(0, 0.2)))
    return plan


def login_rate_per_second(adapter_class) -> float:
    """The tightest per-second rate among the broker's login and refresh limits (default 1/s)."""
    from limits import parse_many

    rates = []
    for category in ("login", "refresh"):
        for text in adapter_class.rate_limits.get(category, ()):
            for item in parse_many(text):
                rates.append(item.amount / item.get_expiry())
    return min(rates) if rates else 1.0


def claim_keepalive(account_id: int, delay: float) -> bool:
    """True once per account per sweep window: two sweeps never schedule the same account twice."""
    return cache.add(f"keepalive-scheduled:{account_id}", 1, int(delay) + 120)


def expired_sessions_cleanup(now: datetime | None = None) -> int:
    """Delete sessions that expired more than a day ago (their tokens are useless)."""
    cutoff = (now or timezone.now()) - EXPIRED_SESSION_RETENTION
    deleted, _ = BrokerSession.objects.filter(expires_at__lt=cutoff).delete()
    return deleted
