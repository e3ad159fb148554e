"""Broker accounts over the API: CRUD with write-only secrets, roles, and the signed OAuth state."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.core.signing import b62_encode
from django.test import Client

from accounts.models import Role
from brokers import services
from brokers.models import BrokerAccount, BrokerSession, ConnectionState
from tests.fake_broker import GOOD_REQUEST_TOKEN, registered_fake_brokers

SECRET = "canary-api-secret-9c41"
NEW_SECRET = "canary-rotated-secret-77aa"


@pytest.fixture(autouse=True)
def fake_brokers():
    with registered_fake_brokers():
        yield


@pytest.fixture
def admin_client(team, member, api_client_for):
    return api_client_for(member(team, Role.ADMIN))


@pytest.fixture
def trader_client(team, member, api_client_for):
    return api_client_for(member(team, Role.TRADER))


@pytest.fixture
def account(team):
    return services.broker_account_create(
        team=team,
        broker="fakeoauth",
        label="Kite desk",
        credentials={"api_key": "key-1", "api_secret": SECRET},
    )


def assert_no_secret(response, *secrets):
    text = response.content.decode()
    for secret in secrets or (SECRET, NEW_SECRET):
        assert secret not in text


# CRUD with write-only secrets -------------------------------------------------------------------


def test_create_stores_the_secret_and_never_returns_it(admin_client, team):
    response = admin_client.post(
        "/api/broker-accounts/",
        {
            "broker": "fakeoauth",
            "label": "Desk",
            "credentials": {"api_key": "key-1", "api_secret": SECRET},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert_no_secret(response)
    body = response.json()
    assert body["credentials"] == {"api_key": "key-1"}
    assert body["secrets_set"] == ["api_secret"]
    assert body["connection_state"] == ConnectionState.DISCONNECTED

    account = BrokerAccount.objects.get(pk=body["id"], team=team)
    assert account.secrets() == {"api_secret": SECRET}
    assert account.credentials == {"api_key": "key-1"}


def test_list_and_detail_never_return_the_secret(admin_client, account):
    for url in ("/api/broker-accounts/", f"/api/broker-accounts/{account.pk}/"):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert_no_secret(response)
    assert admin_client.get(f"/api/broker-accounts/{account.pk}/").json()["secrets_set"] == [
        "api_secret"
    ]


def test_update_keeps_secrets_not_given_and_replaces_those_given(admin_client, account):
    url = f"/api/broker-accounts/{account.pk}/"
    renamed = admin_client.patch(url, {"label": "Renamed"}, format="json")
    assert renamed.status_code == 200, renamed.content
    assert_no_secret(renamed)
    account.refresh_from_db()
    assert account.label == "Renamed"
    assert account.secrets() == {"api_secret": SECRET}

    rotated = admin_client.patch(url, {"credentials": {"api_secret": NEW_SECRET}}, format="json")
    assert rotated.status_code == 200, rotated.content
    assert_no_secret(rotated)
    account.refresh_from_db()
    assert account.secrets() == {"api_secret": NEW_SECRET}
    assert account.credentials == {"api_key": "key-1"}


def test_a_missing_required_credential_is_refused(admin_client):
    response = admin_client.post(
        "/api/broker-accounts/",
        {"broker": "fakeoauth", "label": "Desk", "credentials": {"api_key": "key-1"}},
        format="json",
    )
    assert response.status_code == 400
    assert "api_secret" in str(response.json()["error"]["fields"]["credentials"])


def test_an_unknown_credential_or_broker_is_refused(admin_client):
    unknown_field = admin_client.post(
        "/api/broker-accounts/",
        {
            "broker": "fakeoauth",
            "label": "Desk",
            "credentials": {"api_key": "k", "api_secret": SECRET, "pin": "1"},
        },
        format="json",
    )
    assert unknown_field.status_code == 400
    assert_no_secret(unknown_field)
    unknown_broker = admin_client.post(
        "/api/broker-accounts/",
        {"broker": "nope", "label": "Desk", "credentials": {}},
        format="json",
    )
    assert unknown_broker.status_code == 400
    assert "nope" in str(unknown_broker.json()["error"]["fields"]["broker"])
    assert not BrokerAccount.objects.exists()


def test_the_broker_of_an_account_cannot_change(admin_client, account):
    response = admin_client.patch(
        f"/api/broker-accounts/{account.pk}/", {"broker": "fakecreds"}, format="json"
    )
    assert response.status_code == 400
    account.refresh_from_db()
    assert account.broker == "fakeoauth"


def test_delete_removes_the_account(admin_client, account):
    assert admin_client.delete(f"/api/broker-accounts/{account.pk}/").status_code == 204
    assert not BrokerAccount.objects.filter(pk=account.pk).exists()


def test_a_trader_can_neither_create_edit_nor_delete(trader_client, account):
    body = {"broker": "fakeoauth", "label": "X", "credentials": {"api_key": "k", "api_secret": "s"}}
    assert trader_client.post("/api/broker-accounts/", body, format="json").status_code == 403
    url = f"/api/broker-accounts/{account.pk}/"
    assert trader_client.patch(url, {"label": "X"}, format="json").status_code == 403
    assert trader_client.delete(url).status_code == 403
    account.refresh_from_db()
    assert account.label == "Kite desk"
    assert BrokerAccount.objects.count() == 1


def test_another_teams_account_is_not_found(admin_client, other_team):
    foreign = services.broker_account_create(
        team=other_team,
        broker="fakeoauth",
        label="Theirs",
        credentials={"api_key": "k", "api_secret": SECRET},
    )
    for response in (
        admin_client.get(f"/api/broker-accounts/{foreign.pk}/"),
        admin_client.patch(f"/api/broker-accounts/{foreign.pk}/", {"label": "x"}, format="json"),
        admin_client.delete(f"/api/broker-accounts/{foreign.pk}/"),
        admin_client.get(f"/api/broker-accounts/{foreign.pk}/login-url/"),
    ):
        assert response.status_code == 404
        assert_no_secret(response)
    foreign.refresh_from_db()
    assert foreign.label == "Theirs"


# The OAuth state --------------------------------------------------------------------------------


def state_of(login_url: str) -> str:
    return parse_qs(urlsplit(login_url).query)["state"][0]


@pytest.fixture
def login_state(trader_client, account) -> str:
    response = trader_client.get(f"/api/broker-accounts/{account.pk}/login-url/")
    assert response.status_code == 200, response.content
    assert_no_secret(response)
    return state_of(response.json()["login_url"])


class _PastSigner(signing.TimestampSigner):
    """Signs as if it were 11 minutes ago: past the state's 10-minute life."""

    def timestamp(self):
        return b62_encode(int(time.time()) - services.OAUTH_STATE_MAX_AGE_SECONDS - 60)


def bad_states(account, login_state) -> dict[str, str]:
    payload = {"account": account.pk, "team": account.team_id, "nonce": "00ff00ff00ff00ff"}
    value, _, signature = login_state.rpartition(":")
    altered_signature = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return {
        "forged_with_another_key": signing.dumps(
            payload, key="not-our-secret-key", salt=services.OAUTH_STATE_SALT
        ),
        "forged_with_another_salt": signing.dumps(payload, salt="some.other.salt"),
        "unsigned": signing.b64_encode(b'{"account":1,"team":1,"nonce":"x"}').decode(),
        "altered_signature": f"{value}:{altered_signature}",
        "altered_payload": "x" + login_state[1:],
        "expired": _PastSigner(salt=services.OAUTH_STATE_SALT).sign_object(payload, compress=True),
        "empty": "",
    }


def assert_nothing_attached(account):
    account.refresh_from_db()
    assert not BrokerSession.objects.filter(broker_account=account).exists()
    assert account.connection_state == ConnectionState.DISCONNECTED


def test_the_login_url_carries_a_signed_state_naming_the_account(login_state, account):
    payload = signing.loads(login_state, salt=services.OAUTH_STATE_SALT)
    assert payload["account"] == account.pk
    assert payload["team"] == account.team_id
    with pytest.raises(signing.BadSignature):
        signing.loads(login_state, salt="another-salt")


def test_a_good_state_completes_the_login_at_the_callback(login_state, account):
    response = Client().get(
        "/brokers/callback/fakeoauth/",
        {"state": login_state, "request_token": GOOD_REQUEST_TOKEN},
    )
    assert response.status_code == 200, response.content
    account.refresh_from_db()
    assert account.connection_state == ConnectionState.CONNECTED
    assert account.session.access_token == "access-for-key-1"


def test_a_good_state_completes_the_login_through_the_api(trader_client, login_state, account):
    response = trader_client.post(
        f"/api/broker-accounts/{account.pk}/oauth-complete/",
        {"state": login_state, "params": {"request_token": GOOD_REQUEST_TOKEN}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["connection_state"] == ConnectionState.CONNECTED
    assert_no_secret(response, "access-for-key-1")


@pytest.mark.parametrize(
    "kind",
    [
        "forged_with_another_key",
        "forged_with_another_salt",
        "unsigned",
        "altered_signature",
        "altered_payload",
        "expired",
        "empty",
    ],
)
def test_a_bad_state_is_refused_everywhere_and_attaches_nothing(
    kind, trader_client, login_state, account
):
    state = bad_states(account, login_state)[kind]
    callback = Client().get(
        "/brokers/callback/fakeoauth/", {"state": state, "request_token": GOOD_REQUEST_TOKEN}
    )
    assert callback.status_code == 400
    assert "Connected" not in callback.content.decode()
    api = trader_client.post(
        f"/api/broker-accounts/{account.pk}/oauth-complete/",
        {"state": state, "params": {"request_token": GOOD_REQUEST_TOKEN}},
        format="json",
    )
    assert api.status_code == 400, api.content
    assert "state" in api.json()["error"]["fields"]
    assert_nothing_attached(account)


def test_a_replayed_state_is_refused_at_the_callback(trader_client, login_state, account):
    params = {"state": login_state, "request_token": GOOD_REQUEST_TOKEN}
    assert Client().get("/brokers/callback/fakeoauth/", params).status_code == 200
    BrokerSession.objects.filter(broker_account=account).delete()
    BrokerAccount.objects.filter(pk=account.pk).update(
        connection_state=ConnectionState.DISCONNECTED
    )

    replay = Client().get("/brokers/callback/fakeoauth/", params)
    assert replay.status_code == 400
    api_replay = trader_client.post(
        f"/api/broker-accounts/{account.pk}/oauth-complete/",
        {"state": login_state, "params": {"request_token": GOOD_REQUEST_TOKEN}},
        format="json",
    )
    assert api_replay.status_code == 400
    assert_nothing_attached(account)


def test_a_replayed_state_is_refused_through_the_api(trader_client, login_state, account):
    body = {"state": login_state, "params": {"request_token": GOOD_REQUEST_TOKEN}}
    url = f"/api/broker-accounts/{account.pk}/oauth-complete/"
    assert trader_client.post(url, body, format="json").status_code == 200
    BrokerSession.objects.filter(broker_account=account).delete()
    BrokerAccount.objects.filter(pk=account.pk).update(
        connection_state=ConnectionState.DISCONNECTED
    )
    assert trader_client.post(url, body, format="json").status_code == 400
    assert (
        Client()
        .get("/brokers/callback/fakeoauth/", {**body["params"], "state": body["state"]})
        .status_code
        == 400
    )
    assert_nothing_attached(account)


def test_a_state_for_another_account_is_refused_at_oauth_complete(
    trader_client, login_state, account, team
):
    sibling = services.broker_account_create(
        team=team,
        broker="fakeoauth",
        label="Sibling",
        credentials={"api_key": "key-2", "api_secret": SECRET},
    )
    response = trader_client.post(
        f"/api/broker-accounts/{sibling.pk}/oauth-complete/",
        {"state": login_state, "params": {"request_token": GOOD_REQUEST_TOKEN}},
        format="json",
    )
    assert response.status_code == 400
    assert_nothing_attached(sibling)
    assert_nothing_attached(account)


def test_another_teams_state_is_refused_by_this_teams_api(
    trader_client, other_team, member, api_client_for, account
):
    foreign = services.broker_account_create(
        team=other_team,
        broker="fakeoauth",
        label="Theirs",
        credentials={"api_key": "key-3", "api_secret": SECRET},
    )
    foreign_client = api_client_for(member(other_team, Role.TRADER))
    foreign_state = state_of(
        foreign_client.get(f"/api/broker-accounts/{foreign.pk}/login-url/").json()["login_url"]
    )
    response = trader_client.post(
        f"/api/broker-accounts/{account.pk}/oauth-complete/",
        {"state": foreign_state, "params": {"request_token": GOOD_REQUEST_TOKEN}},
        format="json",
    )
    assert response.status_code == 400
    assert_nothing_attached(foreign)
    assert_nothing_attached(account)


def test_a_login_refused_by_the_broker_attaches_nothing(login_state, account):
    response = Client().get(
        "/brokers/callback/fakeoauth/", {"state": login_state, "request_token": "wrong"}
    )
    assert response.status_code == 400
    assert not BrokerSession.objects.filter(broker_account=account).exists()
