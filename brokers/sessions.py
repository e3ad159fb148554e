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
import math
import time
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from limits import parse_many

from . import rate_limits, services
from .adapters import errors
from .models import BrokerAccount, BrokerSession, ConnectionState
from .notifications import team_notify

logger = logging.getLogger(__name__)

MAX_AUTOMATIC_LOGIN_FAILURES = 3
LOGIN_BACKOFF_SECONDS = 120  # 2 min, then 8, then stop
MIN_REFRESH_LEAD = timedelta(minutes=1)
MAX_REFRESH_LEAD = timedelta(minutes=30)
EXPIRED_SESSION_RETENTION = timedelta(days=1)
#: Limits over windows longer than this are per-account budgets (Angel's 1000 refreshes an hour
#: per API key) that one renewal a day never nears; only shorter ones pace a sweep.
PACING_WINDOW_SECONDS = 60
#: Renewals are spaced this much wider than the login rate: a worker's request reaches the
#: broker up to a few hundred ms after its slot starts (thread scheduling, the network), and
#: that jitter must not put one request too many into any second the broker counts.
SCHEDULE_HEADROOM = 1.25


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
        elif session.expires_at <= now:
            due.append(account)
        elif _renews_ahead(account) and session.expires_at - refresh_lead(session) <= now:
            due.append(account)
    return due


def _renews_ahead(account: BrokerAccount) -> bool:
    """True when something can be done before expiry: a refresh, or a fresh stored-credential
    login. Kite (a person signs in each morning) is only due once its session has expired."""
    adapter_class = account.adapter_class
    if account.adapter_class.renew_after_expiry:
        return False
    return adapter_class.supports("refresh_session") or adapter_class.supports("credentials_login")


def session_keepalive(*, account: BrokerAccount, now: datetime | None = None) -> str:
    """Renew, re-login or flag one account. Returns what was done."""
    now = now or timezone.now()
    adapter_class = account.adapter_class
    notify = account.connection_state != ConnectionState.NEEDS_LOGIN
    session = BrokerSession.objects.filter(broker_account=account).first()
    if session is not None:
        account.session = session  # the adapter must use the session judged here, not a stale one
    expired = session is None or (session.expires_at is not None and session.expires_at <= now)
    can_relogin = adapter_class.supports("credentials_login")
    # An expired access token can still be renewed while its refresh token lives (Fyers' 15
    # days, Match-Trader's day-long cookie); without one, only a new login helps.
    can_refresh = adapter_class.supports("refresh_session") and (
        session is not None
        and (not expired or bool(session.refresh_token))
        and (expired or not account.adapter_class.renew_after_expiry)
    )
    try:
        if can_refresh:
            try:
                _keepalive_slot(account)
                services.session_refresh(account=account)
                return _succeeded(account, "refreshed")
            except errors.SessionExpired:
                if not can_relogin:
                    raise
            except errors.NotSupported:
                # Fyers without a stored PIN cannot renew by itself: a person signs in.
                if not (can_relogin or expired):
                    return "waiting"
        if can_relogin:
            _keepalive_slot(account)
            services.broker_account_connect(account=account)
            return _succeeded(account, "logged_in")
        if expired:
            _needs_login(account, notify=notify)
            return "needs_login"
        return "waiting"
    except KeepaliveDeferred:
        # Our own pacing found no slot: nothing reached the broker, so no failure is counted;
        # the next sweep schedules the account again.
        cache.delete(_claim_key(account.pk))
        return "deferred"
    except errors.SessionExpired:
        _needs_login(account, notify=notify)
        return "needs_login"
    except (errors.InvalidCredentials, errors.AccountLocked) as exc:
        return _failed(account, exc, now, permanent=True)
    except errors.BrokerError as exc:
        return _failed(account, exc, now, permanent=False)


class KeepaliveDeferred(Exception):
    """No slot in the broker's login budget within the wait limit; try again next sweep."""


def _keepalive_slot(account: BrokerAccount) -> float | None:
    """Wait for the next free slot in the broker host's shared renewal pace (all workers, all
    teams): one login or refresh per ``SCHEDULE_HEADROOM / keepalive_rate`` seconds. Returns the
    slot's start (epoch seconds), or None for a broker with no login limit.

    The per-account throttle inside the adapter keeps each account within its own limits; this
    keeps the sum of every account's renewals within the broker's login rate whatever the
    schedule's timing jitter or overlapping sweeps do. Slots are claimed with ``cache.add``
    (atomic in Redis), so two workers never get the same one.
    """
    rate = keepalive_rate(account.adapter_class)
    if math.isinf(rate):
        return None
    width = SCHEDULE_HEADROOM / rate
    host = account.base_url or account.adapter_class.production_base_url
    key = f"keepalive-slot:{account.broker}:{host}"
    now = time.time()
    deadline = now + rate_limits.MAX_WAIT_SECONDS
    slot = math.ceil(now / width)
    while slot * width <= deadline:
        start = slot * width
        # The key must outlive the slot's start: later callers only try slots still to come.
        if cache.add(f"{key}:{slot}", 1, math.ceil(start - now + width) + 1):
            time.sleep(max(0.0, start - time.time()))
            return start
        slot += 1
    raise KeepaliveDeferred()


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
    """(account id, delay in seconds) for each account: spaced at each broker's login rate.

    Without this, thousands of sessions issued at the same morning login would all renew in the
    same second and trip the broker's login limit. One budget per broker host: white-label
    platforms (DXtrade, Match-Trader) count logins per client IP at each firm's own host.
    Delays keep growing past any window rather than bunching at its end.
    """
    by_host: dict[tuple[str, str], list[BrokerAccount]] = {}
    for account in accounts:
        by_host.setdefault((account.broker, account.base_url), []).append(account)
    plan = []
    for host_accounts in by_host.values():
        spacing = SCHEDULE_HEADROOM / keepalive_rate(host_accounts[0].adapter_class)
        plan.extend((account.pk, index * spacing) for index, account in enumerate(host_accounts))
    return plan


def keepalive_rate(adapter_class) -> float:
    """Renewals per second one broker host gets: the login rate rounded down to a whole number
    per second (or one per whole number of seconds), so the schedule and the shared budget that
    enforces it agree exactly (500/minute is paced at 8 a second)."""
    rate = login_rate_per_second(adapter_class)
    if math.isinf(rate):
        return rate
    return float(math.floor(rate)) if rate >= 1 else 1 / math.ceil(1 / rate)


def login_rate_per_second(adapter_class) -> float:
    """The tightest rate among the limits a login or refresh is throttled by.

    Adapters throttle a login under "login" and a refresh under "refresh", or under "default"
    when the broker has one budget for everything (Match-Trader, Fyers), as the throttle does.
    A broker without limits (paper trading, in process) is not paced: infinity.
    """
    if not adapter_class.rate_limits:
        return math.inf
    rates = []
    for category in ("login", "refresh"):
        texts = adapter_class.rate_limits.get(category) or adapter_class.rate_limits.get(
            "default", ()
        )
        for text in texts:
            for item in parse_many(text):
                if item.get_expiry() <= PACING_WINDOW_SECONDS:
                    rates.append(item.amount / item.get_expiry())
    return min(rates) if rates else 1.0


def claim_keepalive(account_id: int, delay: float) -> bool:
    """True once per account per sweep window: two sweeps never schedule the same account twice."""
    return cache.add(_claim_key(account_id), 1, int(delay) + 120)


def _claim_key(account_id: int) -> str:
    return f"keepalive-scheduled:{account_id}"


def expired_sessions_cleanup(now: datetime | None = None) -> int:
    """Delete sessions that expired more than a day ago (their tokens are useless)."""
    cutoff = (now or timezone.now()) - EXPIRED_SESSION_RETENTION
    deleted, _ = BrokerSession.objects.filter(expires_at__lt=cutoff).delete()
    return deleted
