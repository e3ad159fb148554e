"""Sessions kept alive without a person, over real HTTP against the broker simulators.

The clock is controlled by passing ``now=`` to the keepalive services (and by the sessions'
``expires_at``); the simulators count every request they receive, so "exactly one login" is
read at the broker's side.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from brokers import services, sessions, tasks
from brokers.adapters.base import SessionData
from brokers.models import BrokerAccount, BrokerSession, ConnectionState
from brokers.simulators import simulator_class
from brokers.simulators.base import RunningSimulator
from tests.celery_helpers import celery_eager

from .contract import (
    harness_angel,
    harness_dxtrade,
    harness_fyers,
    harness_matchtrade,
    harness_zerodha,
)

LOGIN_PATHS = {
    "matchtrade": ("/manager/co-login", "/manager/mtr-login"),
    "dxtrade": ("/dxsca-web/login",),
    "angel": ("/rest/auth/angelbroking/user/v1/loginByPassword",),
}
REFRESH_PATHS = {
    "matchtrade": "/manager/refresh-token",
    "dxtrade": "/dxsca-web/ping",
    "angel": "/rest/auth/angelbroking/jwt/v1/generateTokens",
    "fyers": "/api/v3/validate-refresh-token",
}
HARNESSES = {
    "matchtrade": harness_matchtrade.Harness,
    "dxtrade": harness_dxtrade.Harness,
    "angel": harness_angel.Harness,
    "fyers": harness_fyers.Harness,
    "zerodha": harness_zerodha.Harness,
}
SIMULATOR_NAMES = {"zerodha": "kite"}
#: A credential change that the broker refuses as a wrong password.
WRONG_PASSWORD = {
    "matchtrade": {"password": "wrong-password"},
    "dxtrade": {"password": "wrong-password"},
    "angel": {"mpin": "0000"},
}


# Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulators():
    """One running simulator per broker for the module; each test starts from the seed."""
    running = {
        code: RunningSimulator(simulator_class(SIMULATOR_NAMES.get(code, code))())
        for code in HARNESSES
    }
    yield running
    for sim in running.values():
        sim.stop()


@pytest.fixture
def sim(simulators):
    for running in simulators.values():
        running.simulator.reset()
    return simulators


@pytest.fixture
def harness(sim):
    def make(code: str):
        harness = HARNESSES[code]()
        harness.running = sim[code]
        return harness

    return make


@pytest.fixture
def make_account(team, harness):
    """``make_account(code, connect=True)``: an account on the broker's simulator, signed in."""
    created = []

    def make(code: str, *, connect: bool = True, base_url: str | None = None, label=None):
        h = harness(code)
        account = services.broker_account_create(
            team=team,
            broker=code,
            label=label or f"{code} {len(created)}",
            credentials=h.credentials(),
            base_url=base_url if base_url is not None else h.url,
        )
        created.append(account)
        cache.delete(sessions._claim_key(account.pk))
        if connect:
            if code == "fyers":
                adapter = h.adapter()
                params = h.authorize_in_browser(adapter)
                data = adapter.complete_login(
                    params, redirect_url=harness_fyers.APP["redirect_uri"]
                )
                services.session_store(account=account, data=data)
            elif code == "zerodha":
                adapter = h.adapter()
                data = adapter.complete_login(h.redirect_params(adapter))
                services.session_store(account=account, data=data)
            else:
                services.broker_account_connect(account=account)
        return fresh(account)

    yield make
    cache.delete_many([sessions._claim_key(account.pk) for account in created])


@pytest.fixture
def webhook():
    """A tiny webhook receiver on loopback; ``webhook.received`` lists the JSON bodies."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.received = received
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/algoways"
    yield server
    server.shutdown()
    server.server_close()


def fresh(account: BrokerAccount) -> BrokerAccount:
    return BrokerAccount.objects.select_related("team", "session").get(pk=account.pk)


def hits(running: RunningSimulator, *paths: str) -> int:
    return sum(1 for _, _, path in list(running.simulator.requests_seen) if path in paths)


def set_expiry(account: BrokerAccount, expires_at) -> BrokerAccount:
    BrokerSession.objects.filter(broker_account=account).update(expires_at=expires_at)
    return fresh(account)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Refresh ahead of expiry ---------------------------------------------------------------------


@pytest.mark.parametrize("code", ["matchtrade", "dxtrade", "angel"])
def test_session_is_refreshed_ahead_of_expiry_and_stored_encrypted(code, make_account, sim):
    account = make_account(code)
    BrokerAccount.objects.filter(pk=account.pk).update(login_failures=2)
    old = account.session
    now = old.expires_at - sessions.refresh_lead(old) + timedelta(seconds=30)
    account = fresh(account)

    assert account in sessions.accounts_due(now=now)
    assert sessions.session_keepalive(account=account, now=now) == "refreshed"

    account = fresh(account)
    new = account.session
    assert new.access_token and new.access_token != old.access_token
    assert account.connection_state == ConnectionState.CONNECTED
    assert (account.login_failures, account.login_retry_at) == (0, None)
    assert hits(sim[code], REFRESH_PATHS[code]) == 1
    assert hits(sim[code], *LOGIN_PATHS[code]) == 1  # only the first sign-in
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT access_token FROM {BrokerSession._meta.db_table} WHERE id = %s", [new.pk]
        )
        (stored,) = cursor.fetchone()
    stored = bytes(stored)
    assert stored and new.access_token.encode() not in stored  # encrypted at rest
    # The renewed token works at the broker.
    services.broker_call(account, lambda adapter: adapter.funds())


@pytest.mark.parametrize("code", ["matchtrade", "dxtrade", "angel"])
def test_accounts_not_yet_due_are_left_alone(code, make_account, sim):
    account = make_account(code)
    session = account.session
    early = session.expires_at - sessions.refresh_lead(session) - timedelta(seconds=30)
    due = session.expires_at - sessions.refresh_lead(session) + timedelta(seconds=30)

    assert account not in sessions.accounts_due(now=early)
    assert account in sessions.accounts_due(now=due)


def test_fyers_renews_with_its_refresh_token_just_after_midnight_not_before(make_account, sim):
    account = make_account("fyers")
    session = account.session
    # Ahead of expiry a Fyers refresh would end at the same midnight: not due.
    assert account not in sessions.accounts_due(now=session.expires_at - timedelta(minutes=5))

    sim["fyers"].simulator.expire_sessions()  # midnight: the access token lapses
    now = session.expires_at + timedelta(minutes=1)
    account = set_expiry(account, timezone.now() - timedelta(minutes=1))
    assert account in sessions.accounts_due(now=now)
    assert sessions.session_keepalive(account=account, now=now) == "refreshed"

    account = fresh(account)
    assert account.connection_state == ConnectionState.CONNECTED
    assert account.session.access_token != session.access_token
    assert hits(sim["fyers"], REFRESH_PATHS["fyers"]) == 1
    services.broker_call(account, lambda adapter: adapter.funds())


# Re-login after expiry -----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["matchtrade", "dxtrade", "angel"])
def test_expired_session_signs_in_again_with_stored_credentials(code, make_account, sim):
    account = make_account(code)
    old = account.session
    sim[code].simulator.expire_sessions()
    now = old.expires_at + timedelta(minutes=5)

    assert account in sessions.accounts_due(now=now)
    assert sessions.session_keepalive(account=account, now=now) == "logged_in"

    account = fresh(account)
    assert account.connection_state == ConnectionState.CONNECTED
    assert account.session.access_token != old.access_token
    assert hits(sim[code], *LOGIN_PATHS[code]) == 2
    services.broker_call(account, lambda adapter: adapter.funds())


# Failures: lockout protection and backoff ----------------------------------------------------


@pytest.mark.parametrize("code", ["matchtrade", "dxtrade", "angel"])
def test_wrong_password_stops_automatic_sign_in_after_one_attempt(
    code, make_account, sim, team, django_capture_on_commit_callbacks
):
    team.notification_email = "desk@example.com"
    team.save()
    account = make_account(code)
    services.broker_account_update(account=account, credentials=WRONG_PASSWORD[code])
    sim[code].simulator.expire_sessions()
    now = account.session.expires_at + timedelta(minutes=5)
    logins_before = hits(sim[code], *LOGIN_PATHS[code])

    with (
        celery_eager(),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert sessions.session_keepalive(account=fresh(account), now=now) == "failed"

    account = fresh(account)
    assert account.connection_state == ConnectionState.ERROR
    assert account.login_failures == sessions.MAX_AUTOMATIC_LOGIN_FAILURES
    assert account.login_retry_at is None
    assert "stopped" in account.last_error
    for later in (now + timedelta(minutes=10), now + timedelta(days=1)):
        assert account not in sessions.accounts_due(now=later)
    assert hits(sim[code], *LOGIN_PATHS[code]) == logins_before + 1
    assert len(mail.outbox) == 1
    assert "automatic sign-in stopped" in mail.outbox[0].subject


def test_reconnecting_by_hand_re_enables_automatic_sign_in(make_account, sim):
    account = make_account("dxtrade")
    services.broker_account_update(account=account, credentials={"password": "wrong-password"})
    sim["dxtrade"].simulator.expire_sessions()
    now = account.session.expires_at + timedelta(minutes=5)
    assert sessions.session_keepalive(account=fresh(account), now=now) == "failed"

    account = fresh(account)
    services.broker_account_update(
        account=account, credentials=harness_dxtrade.Harness().credentials()
    )
    services.broker_account_connect(account=account)

    account = fresh(account)
    assert (account.login_failures, account.login_retry_at) == (0, None)
    later = account.session.expires_at + timedelta(minutes=1)
    assert account in sessions.accounts_due(now=later)


@pytest.mark.parametrize("fault", ["http_503", "connection_refused"])
def test_transient_failures_back_off_2_then_8_minutes_then_stop(fault, make_account, sim):
    running = sim["dxtrade"]
    if fault == "http_503":
        account = make_account("dxtrade")
        running.simulator.expire_sessions()
        running.simulator.faults.error_rate = 1.0
        running.simulator.faults.error_status = 503
    else:
        account = make_account(
            "dxtrade", connect=False, base_url=f"http://127.0.0.1:{closed_port()}"
        )
        services.session_store(
            account=account,
            data=SessionData(
                access_token="dead-token",
                issued_at=timezone.now() - timedelta(minutes=40),
                expires_at=timezone.now() - timedelta(minutes=10),
            ),
        )
    account = set_expiry(account, timezone.now() - timedelta(minutes=1))
    logins_before = hits(running, *LOGIN_PATHS["dxtrade"])
    now = timezone.now()

    assert sessions.session_keepalive(account=account, now=now) == "failed"
    account = fresh(account)
    assert account.login_failures == 1
    assert account.login_retry_at == now + timedelta(minutes=2)
    assert account.connection_state == ConnectionState.ERROR
    assert account not in sessions.accounts_due(now=now + timedelta(minutes=1))

    second = now + timedelta(minutes=2)
    assert account in sessions.accounts_due(now=second)
    assert sessions.session_keepalive(account=account, now=second) == "failed"
    account = fresh(account)
    assert account.login_failures == 2
    assert account.login_retry_at == second + timedelta(minutes=8)
    assert account not in sessions.accounts_due(now=second + timedelta(minutes=7))

    third = second + timedelta(minutes=8)
    assert account in sessions.accounts_due(now=third)
    assert sessions.session_keepalive(account=account, now=third) == "failed"
    account = fresh(account)
    assert account.login_failures == sessions.MAX_AUTOMATIC_LOGIN_FAILURES
    assert account.login_retry_at is None
    assert "stopped" in account.last_error
    assert account not in sessions.accounts_due(now=third + timedelta(days=1))
    if fault == "http_503":
        assert hits(running, *LOGIN_PATHS["dxtrade"]) == logins_before + 3


# Brokers that need a person ------------------------------------------------------------------


def test_kite_at_expiry_needs_login_with_exactly_one_notification(
    make_account, sim, team, webhook, owner_client, django_capture_on_commit_callbacks
):
    team.notification_email = "desk@example.com"
    team.notification_webhook_url = webhook.url
    team.save()
    account = make_account("zerodha")
    kite_requests = len(sim["zerodha"].simulator.requests_seen)
    # Before expiry nothing can be done for Kite: not even due.
    assert account not in sessions.accounts_due(
        now=account.session.expires_at - timedelta(minutes=5)
    )
    set_expiry(account, timezone.now() - timedelta(minutes=1))

    with celery_eager():
        for _ in range(2):  # a second sweep must not notify again
            with django_capture_on_commit_callbacks(execute=True):
                tasks.session_keepalive_sweep_task.delay()
            cache.delete(sessions._claim_key(account.pk))

    account = fresh(account)
    assert account.connection_state == ConnectionState.NEEDS_LOGIN
    assert len(webhook.received) == 1
    assert webhook.received[0]["team"] == team.slug
    assert "sign in" in webhook.received[0]["subject"]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["desk@example.com"]
    assert len(sim["zerodha"].simulator.requests_seen) == kite_requests  # no login attempted

    response = owner_client.get(f"/api/broker-accounts/{account.pk}/")
    assert response.status_code == 200
    assert response.json()["connection_state"] == "needs_login"
    assert "expired" in response.json()["last_error"]


# Spreading and scheduling --------------------------------------------------------------------


def test_schedule_spaces_each_brokers_accounts_at_its_login_rate(team):
    def create(code, n, base_url):
        return [
            BrokerAccount.objects.create(
                team=team, broker=code, label=f"{code}-{base_url}-{i}", base_url=base_url
            )
            for i in range(n)
        ]

    groups = {
        "dxtrade": create("dxtrade", 6, "http://dx-one.example.com"),
        "matchtrade": create("matchtrade", 12, "http://mt-one.example.com"),
        "angel": create("angel", 4, ""),
        "other dxtrade host": create("dxtrade", 3, "http://dx-two.example.com"),
    }
    plan = dict(sessions.keepalive_schedule([a for group in groups.values() for a in group]))

    assert len(plan) == sum(len(group) for group in groups.values())
    for accounts in groups.values():
        rate = sessions.login_rate_per_second(accounts[0].adapter_class)
        delays = [plan[account.pk] for account in accounts]
        assert delays[0] == 0  # each broker host has its own budget
        gaps = [later - earlier for earlier, later in zip(delays, delays[1:], strict=False)]
        assert all(gap >= 1 / rate - 1e-9 for gap in gaps), (accounts[0].broker, gaps)
    # The rates come from the categories the adapters throttle logins and refreshes under.
    assert sessions.login_rate_per_second(groups["angel"][0].adapter_class) == 1
    assert sessions.login_rate_per_second(groups["dxtrade"][0].adapter_class) == 1
    assert sessions.login_rate_per_second(groups["matchtrade"][0].adapter_class) == 500 / 60


def test_schedule_never_bunches_accounts_at_the_end_of_a_window(team):
    accounts = [
        BrokerAccount.objects.create(team=team, broker="dxtrade", label=f"dx {i}", base_url="")
        for i in range(700)
    ]
    delays = sorted(delay for _, delay in sessions.keepalive_schedule(accounts))
    assert len(set(delays)) == len(delays)
    assert delays[-1] >= 699  # 1 login a second: the 700th waits 699 s, not a capped 600


def test_claimed_accounts_are_not_scheduled_twice(make_account, sim):
    account = make_account("matchtrade")
    account = set_expiry(account, timezone.now() + timedelta(seconds=30))

    assert sessions.claim_keepalive(account.pk, 0)
    assert not sessions.claim_keepalive(account.pk, 0)
    with celery_eager():
        assert tasks.session_keepalive_sweep_task.delay().get() == 0
        assert hits(sim["matchtrade"], REFRESH_PATHS["matchtrade"]) == 0

        cache.delete(sessions._claim_key(account.pk))
        assert tasks.session_keepalive_sweep_task.delay().get() == 1
    assert hits(sim["matchtrade"], REFRESH_PATHS["matchtrade"]) == 1
    assert fresh(account).session.expires_at > timezone.now() + timedelta(minutes=10)


# Cleanup -------------------------------------------------------------------------------------


def test_cleanup_deletes_only_sessions_expired_more_than_a_day_ago(team):
    now = timezone.now()
    expiries = {
        "long gone": now - timedelta(days=1, minutes=1),
        "just expired": now - timedelta(hours=23),
        "live": now + timedelta(hours=1),
        "no expiry": None,
    }
    for label, expires_at in expiries.items():
        account = BrokerAccount.objects.create(team=team, broker="dxtrade", label=label)
        BrokerSession.objects.create(
            broker_account=account, access_token="t", expires_at=expires_at
        )

    assert sessions.expired_sessions_cleanup(now=now) == 1
    left = set(BrokerSession.objects.values_list("broker_account__label", flat=True))
    assert left == {"just expired", "live", "no expiry"}


def test_renewals_at_one_broker_host_take_turns_whatever_the_schedule(team):
    """Overlapping sweeps or late workers must not exceed the host's login rate together."""
    host = f"http://mt-{timezone.now().timestamp()}.example.com"
    account = BrokerAccount(team=team, broker="matchtrade", label="pace", base_url=host)
    started: list[float] = []
    early: list[float] = []

    def renew():
        slot = sessions._keepalive_slot(account)
        returned = time.time()
        started.append(slot)
        if returned < slot:
            early.append(slot - returned)

    threads = [threading.Thread(target=renew) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The slots each caller was given (not when its thread got to run again, which a loaded
    # machine delays) are spaced by the host's login rate, and nobody went before their slot.
    assert early == []
    started.sort()
    gaps = [later - earlier for earlier, later in zip(started, started[1:], strict=False)]
    assert min(gaps) >= 1 / sessions.login_rate_per_second(account.adapter_class) - 1e-6, gaps
