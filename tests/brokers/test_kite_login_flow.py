"""The issue's "done" line, end to end: an account connected through the Kite login redirect (the
Kite simulator standing in for Zerodha) shows its funds and positions through the API and the
admin. Plus what the signed OAuth state must refuse, and what happens past 06:00 IST."""

from __future__ import annotations

import copy
import time
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from django.core import signing
from django.db import connection
from django.test import Client

from accounts.models import Role, User
from brokers.adapters.base import OrderRequest, OrderType, Product, Side
from brokers.adapters.zerodha import ZerodhaAdapter
from brokers.models import BrokerAccount, BrokerSession
from brokers.services import OAUTH_STATE_SALT, adapter_for_account
from brokers.simulators.base import RunningSimulator
from brokers.simulators.kite import KiteSimulator, _next_six_am
from tests.brokers.contract.harness_zerodha import _LoginForm

PUBLIC_URL = "http://testserver"
CALLBACK_PATH = "/brokers/callback/zerodha/"
APP = {
    **KiteSimulator.default_seed["apps"][0],
    # The redirect URL registered for the Kite app is the platform's callback.
    "redirect_url": PUBLIC_URL + CALLBACK_PATH,
}
USER = KiteSimulator.default_seed["users"][0]


@pytest.fixture(scope="module")
def kite():
    seed = copy.deepcopy(KiteSimulator.default_seed)
    seed["apps"] = [APP]
    running = RunningSimulator(KiteSimulator(seed))
    yield running
    running.stop()


@pytest.fixture
def sim(kite):
    kite.simulator.reset()
    yield kite.simulator
    kite.simulator.__dict__.pop("clock", None)  # back to the real clock


@pytest.fixture(autouse=True)
def public_url(settings):
    settings.PUBLIC_URL = PUBLIC_URL


@pytest.fixture
def admin_api(team, member, api_client_for):
    return api_client_for(member(team, Role.ADMIN))


@pytest.fixture
def create_account(admin_api, kite, sim):
    """``create_account(label)`` -> the id of a new zerodha account on the simulator (API)."""

    def create(label: str = "Kite desk", client=None) -> int:
        response = (client or admin_api).post(
            "/api/broker-accounts/",
            {
                "broker": "zerodha",
                "label": label,
                "base_url": kite.url,
                "credentials": {"api_key": APP["api_key"], "api_secret": APP["api_secret"]},
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        return response.json()["id"]

    return create


def login_url(api, account_id: int) -> str:
    response = api.get(f"/api/broker-accounts/{account_id}/login-url/")
    assert response.status_code == 200, response.content
    return response.json()["login_url"]


def kite_sign_in(url: str, user: dict = USER) -> str:
    """Do what the user's browser does on Kite's login page; return the redirect, not followed."""
    page = requests.get(url, timeout=5)
    assert page.status_code == 200, page.text[:300]
    form = _LoginForm.parse(page.text)
    fields = {**form.fields, "user_id": user["user_id"], "password": user["password"]}
    response = requests.post(
        urljoin(page.url, form.action), data=fields, allow_redirects=False, timeout=5
    )
    assert response.status_code == 302, response.text[:300]
    return response.headers["Location"]


def callback(location: str):
    """The browser arriving back at the platform's callback page (Django's test client)."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == PUBLIC_URL + CALLBACK_PATH
    return Client().get(f"{parts.path}?{parts.query}")


def connect(api, account_id: int):
    response = callback(kite_sign_in(login_url(api, account_id)))
    assert response.status_code == 200, response.content.decode()[:500]
    return response


def with_state(location: str, state: str) -> str:
    parts = urlsplit(location)
    query = {**dict(parse_qsl(parts.query)), "state": state}
    return urlunsplit(parts._replace(query=urlencode(query)))


def account_json(api, account_id: int) -> dict:
    response = api.get(f"/api/broker-accounts/{account_id}/")
    assert response.status_code == 200
    return response.json()


def admin_page(user, account_id: int):
    client = Client()
    client.force_login(user)
    return client.get(f"/admin/brokers/brokeraccount/{account_id}/change/")


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser(username="root", email="root@example.com", password="x")


@pytest.fixture
def team_admin_user(team, member):
    membership = member(team, Role.ADMIN)
    membership.user.is_staff = True
    membership.user.save()
    return membership.user


# The done criterion -----------------------------------------------------------------------------


def test_account_connected_through_kite_login_shows_funds_and_positions_in_api_and_admin(
    admin_api, create_account, kite, sim, superuser, team_admin_user
):
    account_id = create_account()
    assert account_json(admin_api, account_id)["connection_state"] == "disconnected"

    url = login_url(admin_api, account_id)
    assert url.startswith(f"{kite.url}/connect/login?")
    location = kite_sign_in(url)
    page = callback(location)

    assert page.status_code == 200
    assert "Kite desk (zerodha) is connected." in page.content.decode()
    account = account_json(admin_api, account_id)
    assert account["connection_state"] == "connected"
    assert account["last_error"] == ""

    # The session is the simulator's live token, stored encrypted, never shown by the API.
    session = BrokerSession.objects.get(broker_account_id=account_id)
    access_token = session.access_token
    assert sim.access_tokens[access_token]["user_id"] == USER["user_id"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token FROM brokers_brokersession WHERE broker_account_id = %s",
            [account_id],
        )
        (raw,) = cursor.fetchone()
    raw = raw.encode() if isinstance(raw, str) else bytes(raw)  # bytea comes back as bytes
    assert access_token.encode() not in raw
    assert access_token not in admin_api.get(f"/api/broker-accounts/{account_id}/").content.decode()
    expires_at = sim.access_tokens[access_token]["expires_at"]
    assert session.expires_at == expires_at  # 06:00 IST the next morning

    # Funds through the API equal the broker's.
    funds = admin_api.get(f"/api/broker-accounts/{account_id}/funds/")
    assert funds.status_code == 200, funds.content
    with sim.lock:
        margins = sim._equity_margins(USER["user_id"])
    assert Decimal(funds.json()["available"]) == margins["available"]["live_balance"]
    assert Decimal(funds.json()["available"]) == Decimal(USER["funds"])
    assert funds.json()["currency"] == "INR"

    # A market order through the platform's adapter for this account becomes a position.
    adapter = adapter_for_account(BrokerAccount.objects.get(pk=account_id))
    try:
        ack = adapter.place_order(
            OrderRequest(
                symbol="INFY",
                exchange="NSE",
                side=Side.BUY,
                quantity=Decimal(3),
                order_type=OrderType.MARKET,
                product=Product.INTRADAY,
                client_order_id=ZerodhaAdapter.new_client_order_id(),
            )
        )
    finally:
        adapter.close()
    assert ack.broker_order_id
    positions = admin_api.get(f"/api/broker-accounts/{account_id}/positions/")
    assert positions.status_code == 200, positions.content
    [position] = positions.json()
    assert (position["exchange"], position["symbol"], position["product"]) == ("NSE", "INFY", "MIS")
    assert Decimal(position["quantity"]) == 3
    assert Decimal(position["average_price"]) == Decimal("1500")

    after = admin_api.get(f"/api/broker-accounts/{account_id}/funds/").json()
    with sim.lock:
        margins = sim._equity_margins(USER["user_id"])
    assert Decimal(after["available"]) == margins["available"]["live_balance"]
    assert Decimal(after["used_margin"]) == margins["utilised"]["debits"] > 0

    # The admin change page shows the same live funds and the position, for the superuser and
    # for a staff admin of the team.
    for user in (superuser, team_admin_user):
        page = admin_page(user, account_id)
        assert page.status_code == 200
        html = page.content.decode()
        assert f"Available {after['available']} INR" in html
        assert f"Used margin {after['used_margin']} INR" in html
        assert f"Total {after['total']} INR" in html
        assert "NSE:INFY MIS qty 3" in html
        assert access_token not in html


# What the signed state refuses -----------------------------------------------------------------


def test_a_state_issued_for_one_account_never_connects_another(
    admin_api, create_account, team, other_team, member, api_client_for, sim
):
    account_a = create_account("Desk A")
    account_b = create_account("Desk B")
    location = kite_sign_in(login_url(admin_api, account_a))
    params = dict(parse_qsl(urlsplit(location).query))

    # A's state presented for B through the API.
    response = admin_api.post(
        f"/api/broker-accounts/{account_b}/oauth-complete/",
        {"state": params["state"], "params": params},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["state"] == [
        "The login state does not match this account."
    ]

    # A's state presented by another team for one of its own accounts.
    other_api = api_client_for(member(other_team, Role.ADMIN))
    other_account = create_account("Other desk", client=other_api)
    response = other_api.post(
        f"/api/broker-accounts/{other_account}/oauth-complete/",
        {"state": params["state"], "params": params},
        format="json",
    )
    assert response.status_code == 400

    # A state naming B, made without the platform's signing key, at the callback page.
    forged = signing.dumps(
        {"account": account_b, "team": team.pk, "nonce": "0" * 16},
        salt=OAUTH_STATE_SALT,
        key="an-attacker-guess",
        compress=True,
    )
    forged_location = with_state(location, forged)
    response = callback(forged_location)
    assert response.status_code == 400
    assert "The login state is invalid or has expired." in response.content.decode()

    for account_id in (account_b, other_account):
        assert account_json(admin_api if account_id == account_b else other_api, account_id)[
            "connection_state"
        ] == ("disconnected")
        assert not BrokerSession.objects.filter(broker_account_id=account_id).exists()

    # The refused attempts did not use up A's login: it completes, for A only.
    assert callback(location).status_code == 200
    assert account_json(admin_api, account_a)["connection_state"] == "connected"
    assert account_json(admin_api, account_b)["connection_state"] == "disconnected"


def test_a_replayed_callback_is_refused_and_keeps_the_first_session(admin_api, create_account, sim):
    account_id = create_account()
    location = kite_sign_in(login_url(admin_api, account_id))
    assert callback(location).status_code == 200
    token = BrokerSession.objects.get(broker_account_id=account_id).access_token

    replay = callback(location)

    assert replay.status_code == 400
    assert "This login was already completed; start a new one." in replay.content.decode()
    assert BrokerSession.objects.get(broker_account_id=account_id).access_token == token
    assert account_json(admin_api, account_id)["connection_state"] == "connected"


@pytest.mark.parametrize("minutes_ago, accepted", [(9, True), (11, False)])
def test_a_login_state_is_valid_for_ten_minutes(
    admin_api, create_account, sim, monkeypatch, minutes_ago, accepted
):
    account_id = create_account()
    issued = int(time.time()) - minutes_ago * 60
    with monkeypatch.context() as patched:
        patched.setattr(
            signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(issued)
        )
        url = login_url(admin_api, account_id)
    location = kite_sign_in(url)

    response = callback(location)

    if accepted:
        assert response.status_code == 200
        assert account_json(admin_api, account_id)["connection_state"] == "connected"
    else:
        assert response.status_code == 400
        assert "The login state is invalid or has expired." in response.content.decode()
        assert account_json(admin_api, account_id)["connection_state"] == "disconnected"
        assert sim.access_tokens == {}  # the request token was never exchanged


def test_a_failed_kite_login_shows_the_reason_and_leaves_the_account_disconnected(
    admin_api, create_account, sim
):
    account_id = create_account()
    location = kite_sign_in(login_url(admin_api, account_id))
    # The request token dies before the platform exchanges it (Kite: "a few minutes").
    sim.expire_sessions()

    response = callback(location)

    assert response.status_code == 400
    assert "The broker refused the login: Token is invalid or has expired." in (
        response.content.decode()
    )
    assert account_json(admin_api, account_id)["connection_state"] == "error"


# Past 06:00 IST ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["clock-past-six", "expire-sessions"])
def test_a_kite_session_past_six_am_answers_401_and_needs_login(
    admin_api, create_account, kite, sim, superuser, how
):
    account_id = create_account()
    connect(admin_api, account_id)
    assert admin_api.get(f"/api/broker-accounts/{account_id}/funds/").status_code == 200

    if how == "clock-past-six":
        six_am = _next_six_am(sim.clock())
        sim.clock = lambda: six_am + timedelta(minutes=1)
    else:
        requests.post(f"{kite.url}/__sim__/expire-sessions", timeout=5).raise_for_status()

    response = admin_api.get(f"/api/broker-accounts/{account_id}/funds/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "broker_session_expired"
    assert response.json()["error"]["message"] == "Token is invalid or has expired."
    account = account_json(admin_api, account_id)
    assert account["connection_state"] == "needs_login"
    assert "Token is invalid or has expired." in account["last_error"]
    # The admin says so instead of asking the broker again.
    page = admin_page(superuser, account_id)
    assert page.status_code == 200
    assert "Not connected (Needs login)" in page.content.decode()


# The admin's live fields never break the page ----------------------------------------------------


def test_admin_page_shows_a_broker_error_as_text(admin_api, create_account, kite, sim, superuser):
    account_id = create_account()
    connect(admin_api, account_id)
    sim.faults.error_rate = 1.0

    page = admin_page(superuser, account_id)

    assert page.status_code == 200
    html = page.content.decode()
    assert "The broker did not answer: Internal server error" in html
    assert account_json(admin_api, account_id)["connection_state"] == "connected"


def test_admin_page_of_an_unreachable_broker_shows_the_error_as_text(
    admin_api, create_account, superuser, sim
):
    account_id = create_account()
    connect(admin_api, account_id)
    BrokerAccount.objects.filter(pk=account_id).update(base_url="http://127.0.0.1:9")

    page = admin_page(superuser, account_id)

    assert page.status_code == 200
    assert "The broker did not answer: Could not reach the broker." in page.content.decode()


def test_admin_page_of_a_disconnected_account_does_not_call_the_broker(
    create_account, superuser, sim
):
    account_id = create_account()
    sim.faults.error_rate = 1.0  # any call would fail loudly

    page = admin_page(superuser, account_id)

    assert page.status_code == 200
    assert "Not connected (Disconnected)" in page.content.decode()
