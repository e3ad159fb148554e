"""The admin console is scoped to the staff user's teams, and never shows a secret."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.admin.utils import quote
from django.test import Client

from accounts import services
from accounts.models import Membership, Role, Team, TeamAPIKey
from brokers.models import BrokerAccount
from tests.fake_broker import registered_fake_brokers

PLANTED_SECRET = "canary-admin-secret-5f1d"


@pytest.fixture(autouse=True)
def fake_brokers():
    with registered_fake_brokers():
        yield


def make_account(team, label="Desk"):
    return BrokerAccount.objects.create(
        team=team,
        broker="fakeoauth",
        label=label,
        credentials={"api_key": "plain"},
        secret_credentials=json.dumps({"api_secret": PLANTED_SECRET}),
    )


@pytest.fixture
def staff_admin(team, member):
    """A staff user who is an admin of ``team`` (and of no other team)."""
    membership = member(team, Role.ADMIN)
    membership.user.is_staff = True
    membership.user.save()
    return membership


@pytest.fixture
def admin_client(staff_admin):
    client = Client()
    client.force_login(staff_admin.user)
    return client


@pytest.fixture
def rows(team, other_team, member):
    """One of each scoped row in both teams."""
    made = {}
    for name, t in (("own", team), ("foreign", other_team)):
        membership = member(t, Role.TRADER)
        api_key, _ = services.api_key_create(membership=membership, name=f"{name} key")
        made[name] = {
            "team": t,
            "membership": membership,
            "apikey": api_key,
            "account": make_account(t),
        }
    return made


CHANGELISTS = {
    "team": "/admin/accounts/team/",
    "membership": "/admin/accounts/membership/",
    "apikey": "/admin/accounts/teamapikey/",
    "account": "/admin/brokers/brokeraccount/",
}


@pytest.mark.parametrize("kind", CHANGELISTS)
def test_change_lists_show_only_the_admins_team_rows(kind, admin_client, rows):
    response = admin_client.get(CHANGELISTS[kind])
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert rows["own"][kind].pk in shown
    assert rows["foreign"][kind].pk not in shown


@pytest.mark.parametrize("kind", CHANGELISTS)
def test_another_teams_change_page_is_not_reachable(kind, admin_client, rows):
    foreign = rows["foreign"][kind]
    response = admin_client.get(f"{CHANGELISTS[kind]}{quote(foreign.pk)}/change/")
    assert response.status_code in (302, 404)
    assert str(foreign) not in response.content.decode()


@pytest.mark.parametrize(
    ("add_url", "field_name", "model"),
    [
        ("/admin/accounts/membership/add/", "team", Team),
        ("/admin/brokers/brokeraccount/add/", "team", Team),
        ("/admin/accounts/teamapikey/add/", "membership", Membership),
    ],
)
def test_foreign_key_choices_list_only_the_admins_team(
    add_url, field_name, model, admin_client, rows, team
):
    response = admin_client.get(add_url)
    assert response.status_code == 200
    choices = set(response.context["adminform"].form.fields[field_name].queryset)
    assert choices
    team_of = (lambda obj: obj) if model is Team else (lambda obj: obj.team)
    assert {team_of(choice) for choice in choices} == {team}


def test_a_team_admin_cannot_mint_a_key_for_another_member(admin_client, rows, staff_admin):
    choices = admin_client.get("/admin/accounts/teamapikey/add/").context["adminform"].form
    assert set(choices.fields["membership"].queryset) == {staff_admin}
    response = admin_client.post(
        "/admin/accounts/teamapikey/add/",
        {"name": "sneaky", "membership": rows["own"]["membership"].pk},
    )
    assert response.status_code == 200  # the form again, with an error
    assert response.context["adminform"].form.errors["membership"]
    assert not TeamAPIKey.objects.filter(name="sneaky").exists()


def test_adding_a_row_to_another_team_is_refused(admin_client, other_team, user_factory):
    newcomer = user_factory()
    response = admin_client.post(
        "/admin/accounts/membership/add/",
        {"user": newcomer.pk, "team": other_team.pk, "role": Role.VIEWER},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["team"]
    assert not Membership.objects.filter(user=newcomer).exists()

    response = admin_client.post(
        "/admin/brokers/brokeraccount/add/",
        {"team": other_team.pk, "broker": "fakeoauth", "label": "Smuggled", "credentials": "{}"},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["team"]
    assert not BrokerAccount.objects.filter(label="Smuggled").exists()


def test_moving_a_row_to_another_team_is_refused(admin_client, rows, other_team):
    membership = rows["own"]["membership"]
    admin_client.post(
        f"/admin/accounts/membership/{membership.pk}/change/",
        {"user": membership.user_id, "team": other_team.pk, "role": Role.TRADER},
    )
    membership.refresh_from_db()
    assert membership.team == rows["own"]["team"]

    account = rows["own"]["account"]
    admin_client.post(
        f"/admin/brokers/brokeraccount/{account.pk}/change/",
        {
            "team": other_team.pk,
            "broker": "fakeoauth",
            "label": "Moved",
            "credentials": '{"api_key": "plain"}',
        },
    )
    account.refresh_from_db()
    assert account.team == rows["own"]["team"]

    api_key = rows["own"]["apikey"]
    admin_client.post(
        f"/admin/accounts/teamapikey/{quote(api_key.pk)}/change/",
        {"name": "moved", "membership": rows["foreign"]["membership"].pk},
    )
    api_key.refresh_from_db()
    assert api_key.membership == rows["own"]["membership"]


def test_a_team_admin_cannot_make_an_owner_in_the_admin(admin_client, rows, team, member):
    trader = rows["own"]["membership"]
    response = admin_client.post(
        f"/admin/accounts/membership/{trader.pk}/change/",
        {"user": trader.user_id, "team": team.pk, "role": Role.OWNER},
    )
    assert response.status_code == 403
    trader.refresh_from_db()
    assert trader.role == Role.TRADER

    owner = member(team, Role.OWNER)
    response = admin_client.post(f"/admin/accounts/membership/{owner.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_a_team_admin_changes_roles_below_owner_in_the_admin(admin_client, rows, team):
    trader = rows["own"]["membership"]
    response = admin_client.post(
        f"/admin/accounts/membership/{trader.pk}/change/",
        {"user": trader.user_id, "team": team.pk, "role": Role.VIEWER},
    )
    assert response.status_code == 302, response.content
    trader.refresh_from_db()
    assert trader.role == Role.VIEWER


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TRADER])
def test_a_staff_user_below_admin_cannot_use_the_admin(role, team, member, rows):
    membership = member(team, role)
    membership.user.is_staff = True
    membership.user.save()
    client = Client()
    client.force_login(membership.user)
    for url in CHANGELISTS.values():
        assert client.get(url).status_code == 403
    assert client.get(
        f"/admin/accounts/membership/{rows['own']['membership'].pk}/change/"
    ).status_code in (
        302,
        403,
    )


def test_a_team_owner_without_staff_status_is_sent_to_the_login(team, member):
    owner = member(team, Role.OWNER)
    client = Client()
    client.force_login(owner.user)
    response = client.get(CHANGELISTS["membership"])
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_broker_account_pages_never_show_the_secret(admin_client, rows):
    account = rows["own"]["account"]
    for url in (
        CHANGELISTS["account"],
        f"{CHANGELISTS['account']}{account.pk}/change/",
        f"{CHANGELISTS['account']}{account.pk}/history/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert PLANTED_SECRET not in response.content.decode()
    change = admin_client.get(f"{CHANGELISTS['account']}{account.pk}/change/").content.decode()
    assert "api_secret" in change  # the secret's name is shown, never its value


def test_api_key_pages_never_show_the_hashed_key(admin_client, rows):
    """No field or column displays the hash.

    The library's primary key is ``<prefix>.<hash>``, so the hash does appear inside admin URLs
    and checkbox values (attributes); the visible text and the form never show it.
    """
    api_key = rows["own"]["apikey"]
    digest = api_key.hashed_key.split("$")[-1]
    for url in (CHANGELISTS["apikey"], f"{CHANGELISTS['apikey']}{quote(api_key.pk)}/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200
        visible_text = re.sub(r"<[^>]*>", " ", response.content.decode())
        assert digest not in visible_text
    form = admin_client.get(f"{CHANGELISTS['apikey']}{quote(api_key.pk)}/change/").context[
        "adminform"
    ]
    assert "hashed_key" not in form.form.fields
    assert "hashed_key" not in form.readonly_fields
