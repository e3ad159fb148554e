"""The role matrix: viewers read, traders also trade, admins manage accounts and members below
owner, owners everything; read-only keys act as viewers; a member of two teams acts in one."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Role
from brokers.models import BrokerAccount
from tests.fake_broker import registered_fake_brokers

READ_ENDPOINTS = ["/api/members/", "/api/api-keys/", "/api/broker-accounts/"]
NEW_ACCOUNT = {
    "broker": "fakeoauth",
    "label": "Desk account",
    "credentials": {"api_key": "k-1", "api_secret": "s-1"},
}


@pytest.fixture(autouse=True)
def fake_brokers():
    with registered_fake_brokers():
        yield


@pytest.fixture
def account(team):
    return BrokerAccount.objects.create(
        team=team,
        broker="fakeoauth",
        label="Existing",
        credentials={"api_key": "k-0"},
        secret_credentials=json.dumps({"api_secret": "s-0"}),
    )


@pytest.fixture
def client_as(team, member, api_client_for):
    """``client_as(role)`` -> an API client of a new member of ``team`` with that role."""

    def make(role: str, *, read_only: bool = False) -> APIClient:
        membership = member(team, role)
        client = api_client_for(membership, read_only=read_only)
        client.membership = membership
        return client

    return make


def assert_denied(response):
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "permission_denied"


# Reading ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("endpoint", READ_ENDPOINTS)
def test_every_role_reads_the_teams_resources(role, endpoint, client_as, account):
    assert client_as(role).get(endpoint).status_code == 200


# Broker accounts: admins manage, traders use, viewers only look ---------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TRADER])
def test_below_admin_cannot_create_edit_or_delete_broker_accounts(role, client_as, account):
    client = client_as(role)
    assert_denied(client.post("/api/broker-accounts/", NEW_ACCOUNT, format="json"))
    assert_denied(
        client.patch(f"/api/broker-accounts/{account.pk}/", {"label": "New"}, format="json")
    )
    assert_denied(client.delete(f"/api/broker-accounts/{account.pk}/"))
    account.refresh_from_db()
    assert account.label == "Existing"
    assert BrokerAccount.objects.count() == 1


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_admin_and_owner_create_edit_and_delete_broker_accounts(role, client_as, team):
    client = client_as(role)
    created = client.post("/api/broker-accounts/", NEW_ACCOUNT, format="json")
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    edited = client.patch(f"/api/broker-accounts/{pk}/", {"label": "Renamed"}, format="json")
    assert edited.status_code == 200, edited.content
    assert BrokerAccount.objects.get(pk=pk, team=team).label == "Renamed"
    assert client.delete(f"/api/broker-accounts/{pk}/").status_code == 204
    assert not BrokerAccount.objects.filter(pk=pk).exists()


def test_viewer_cannot_start_a_broker_login(client_as, account):
    assert_denied(client_as(Role.VIEWER).get(f"/api/broker-accounts/{account.pk}/login-url/"))
    assert_denied(client_as(Role.VIEWER).post(f"/api/broker-accounts/{account.pk}/connect/"))


@pytest.mark.parametrize("role", [Role.TRADER, Role.ADMIN, Role.OWNER])
def test_trader_and_above_start_a_broker_login(role, client_as, account):
    response = client_as(role).get(f"/api/broker-accounts/{account.pk}/login-url/")
    assert response.status_code == 200, response.content
    assert "state=" in response.json()["login_url"]


# Members ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TRADER])
def test_below_admin_cannot_manage_members(role, client_as, member, team, user_factory):
    client = client_as(role)
    other = member(team, Role.VIEWER)
    newcomer = user_factory()
    assert_denied(
        client.post("/api/members/", {"email": newcomer.email, "role": "viewer"}, format="json")
    )
    assert_denied(client.patch(f"/api/members/{other.pk}/", {"role": "trader"}, format="json"))
    assert_denied(client.delete(f"/api/members/{other.pk}/"))
    other.refresh_from_db()
    assert other.role == Role.VIEWER
    assert not Membership.objects.filter(user=newcomer).exists()


@pytest.mark.parametrize("new_role", [Role.VIEWER, Role.TRADER, Role.ADMIN])
def test_admin_adds_changes_and_removes_members_below_owner(
    new_role, client_as, member, team, user_factory
):
    client = client_as(Role.ADMIN)
    newcomer = user_factory()
    added = client.post("/api/members/", {"email": newcomer.email, "role": new_role}, format="json")
    assert added.status_code == 201, added.content
    membership = Membership.objects.get(user=newcomer, team=team)
    assert membership.role == new_role

    changed = client.patch(f"/api/members/{membership.pk}/", {"role": "viewer"}, format="json")
    assert changed.status_code == 200, changed.content
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER

    assert client.delete(f"/api/members/{membership.pk}/").status_code == 204
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_admin_cannot_add_promote_demote_or_remove_owners(client_as, member, team, user_factory):
    client = client_as(Role.ADMIN)
    owner = member(team, Role.OWNER)
    trader = member(team, Role.TRADER)
    newcomer = user_factory()

    assert_denied(
        client.post("/api/members/", {"email": newcomer.email, "role": "owner"}, format="json")
    )
    assert_denied(client.patch(f"/api/members/{trader.pk}/", {"role": "owner"}, format="json"))
    assert_denied(client.patch(f"/api/members/{owner.pk}/", {"role": "viewer"}, format="json"))
    assert_denied(client.delete(f"/api/members/{owner.pk}/"))
    assert_denied(
        client.patch(f"/api/members/{client.membership.pk}/", {"role": "owner"}, format="json")
    )

    assert not Membership.objects.filter(user=newcomer).exists()
    assert Membership.objects.get(pk=trader.pk).role == Role.TRADER
    assert Membership.objects.get(pk=owner.pk).role == Role.OWNER
    assert Membership.objects.get(pk=client.membership.pk).role == Role.ADMIN


def test_owner_adds_promotes_demotes_and_removes_owners(client_as, member, team, user_factory):
    client = client_as(Role.OWNER)
    newcomer = user_factory()
    added = client.post("/api/members/", {"email": newcomer.email, "role": "owner"}, format="json")
    assert added.status_code == 201, added.content
    admin = member(team, Role.ADMIN)
    promoted = client.patch(f"/api/members/{admin.pk}/", {"role": "owner"}, format="json")
    assert promoted.status_code == 200, promoted.content

    demoted = client.patch(f"/api/members/{added.json()['id']}/", {"role": "admin"}, format="json")
    assert demoted.status_code == 200, demoted.content
    assert client.delete(f"/api/members/{admin.pk}/").status_code == 204
    assert list(team.memberships.filter(role=Role.OWNER)) == [client.membership]


def test_the_last_owner_can_be_neither_removed_nor_demoted(client_as, member, team):
    client = client_as(Role.OWNER)
    me = client.membership

    demoted = client.patch(f"/api/members/{me.pk}/", {"role": "admin"}, format="json")
    assert demoted.status_code == 400, demoted.content
    assert "owner" in demoted.json()["error"]["message"]
    removed = client.delete(f"/api/members/{me.pk}/")
    assert removed.status_code == 400, removed.content
    me.refresh_from_db()
    assert me.role == Role.OWNER

    # With a second owner, the first may step down.
    member(team, Role.OWNER)
    assert (
        client.patch(f"/api/members/{me.pk}/", {"role": "admin"}, format="json").status_code == 200
    )


# Read-only keys ---------------------------------------------------------------------------------


def test_read_only_key_of_an_owner_acts_as_a_viewer(client_as, account, member, team, user_factory):
    client = client_as(Role.OWNER, read_only=True)
    other = member(team, Role.TRADER)
    for endpoint in READ_ENDPOINTS:
        assert client.get(endpoint).status_code == 200
    assert_denied(client.post("/api/broker-accounts/", NEW_ACCOUNT, format="json"))
    assert_denied(client.delete(f"/api/broker-accounts/{account.pk}/"))
    assert_denied(client.get(f"/api/broker-accounts/{account.pk}/login-url/"))
    assert_denied(
        client.post(
            "/api/members/", {"email": user_factory().email, "role": "viewer"}, format="json"
        )
    )
    assert_denied(client.patch(f"/api/members/{other.pk}/", {"role": "admin"}, format="json"))
    assert BrokerAccount.objects.filter(pk=account.pk).exists()
    assert Membership.objects.get(pk=other.pk).role == Role.TRADER


def test_a_read_only_key_mints_only_read_only_keys(client_as):
    client = client_as(Role.OWNER, read_only=True)
    response = client.post("/api/api-keys/", {"name": "more", "read_only": False}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["read_only"] is True
    assert response.json()["role"] == Role.VIEWER


# Members of two teams ---------------------------------------------------------------------------


@pytest.fixture
def two_team_user(team, other_team, member):
    """A viewer in ``team`` and an admin in ``other_team``, signed in with a session."""
    viewer = member(team, Role.VIEWER)
    Membership.objects.create(user=viewer.user, team=other_team, role=Role.ADMIN)
    client = APIClient()
    client.force_login(viewer.user)
    return client


def test_a_member_of_two_teams_must_choose_one(two_team_user):
    response = two_team_user.get("/api/members/")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "team_required"


def test_x_team_header_picks_the_team_and_its_role(two_team_user, team, other_team):
    in_team = two_team_user.get("/api/members/", HTTP_X_TEAM=team.slug)
    assert in_team.status_code == 200
    assert {m["id"] for m in in_team.json()["results"]} == set(
        team.memberships.values_list("pk", flat=True)
    )
    # A viewer in one team, an admin in the other: the role follows the chosen team.
    denied = two_team_user.post(
        "/api/broker-accounts/", NEW_ACCOUNT, format="json", HTTP_X_TEAM=team.slug
    )
    assert_denied(denied)
    created = two_team_user.post(
        "/api/broker-accounts/", NEW_ACCOUNT, format="json", HTTP_X_TEAM=other_team.slug
    )
    assert created.status_code == 201, created.content
    assert BrokerAccount.objects.get(pk=created.json()["id"]).team == other_team


def test_x_team_header_naming_a_team_you_are_not_in_is_not_found(two_team_user, team_factory):
    stranger_team = team_factory()
    response = two_team_user.get("/api/members/", HTTP_X_TEAM=stranger_team.slug)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_team_selected_in_the_session_is_used_without_a_header(two_team_user, other_team):
    switched = two_team_user.post("/teams/switch/", {"team": other_team.slug})
    assert switched.status_code == 302
    response = two_team_user.get("/api/members/")
    assert response.status_code == 200
    assert {m["id"] for m in response.json()["results"]} == set(
        other_team.memberships.values_list("pk", flat=True)
    )


def test_the_header_wins_over_the_session_selection(two_team_user, team, other_team):
    two_team_user.post("/teams/switch/", {"team": other_team.slug})
    response = two_team_user.get("/api/members/", HTTP_X_TEAM=team.slug)
    assert {m["id"] for m in response.json()["results"]} == set(
        team.memberships.values_list("pk", flat=True)
    )


def test_an_api_key_acts_only_in_its_own_team_whatever_the_header(
    team, other_team, member, api_client_for
):
    membership = member(team, Role.OWNER)
    Membership.objects.create(user=membership.user, team=other_team, role=Role.OWNER)
    client = api_client_for(membership)
    response = client.get("/api/members/", HTTP_X_TEAM=other_team.slug)
    assert response.status_code == 200
    assert {m["id"] for m in response.json()["results"]} == set(
        team.memberships.values_list("pk", flat=True)
    )
