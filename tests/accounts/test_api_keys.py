"""API key lifecycle: created (shown once, stored hashed), used, expired, revoked, refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.models import Role, TeamAPIKey

INVALID_BODY = {"error": {"code": "authentication_failed", "message": "Invalid API key."}}


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def key_updates(queries) -> list[str]:
    table = TeamAPIKey._meta.db_table
    return [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and table in q["sql"]]


# Created ----------------------------------------------------------------------------------------


def test_a_new_key_is_returned_once_then_only_its_prefix(owner_client):
    created = owner_client.post("/api/api-keys/", {"name": "ci"}, format="json")
    assert created.status_code == 201, created.content
    key = created.json()["key"]
    prefix = created.json()["prefix"]
    assert key.startswith(f"{prefix}.")

    listed = owner_client.get("/api/api-keys/")
    detail = owner_client.get(f"/api/api-keys/{prefix}/")
    for response in (listed, detail):
        assert response.status_code == 200
        assert key not in response.content.decode()
        assert key.partition(".")[2] not in response.content.decode()
    assert "key" not in detail.json()
    assert detail.json()["prefix"] == prefix

    # The new key works.
    assert client_with(key).get("/api/members/").status_code == 200


def test_the_database_holds_only_a_hash_of_the_key(owner_client):
    key = owner_client.post("/api/api-keys/", {"name": "ci"}, format="json").json()["key"]
    prefix, _, secret = key.partition(".")
    row = TeamAPIKey.objects.get(prefix=prefix)
    stored = " ".join(str(value) for value in model_to_dict(row).values())
    stored += row.hashed_key + row.id
    assert secret not in stored
    assert key not in stored
    assert row.hashed_key and row.hashed_key != secret


# Used -------------------------------------------------------------------------------------------


def test_last_used_is_written_once_per_minute_not_on_every_request(team, member):
    _, key = services.api_key_create(membership=member(team, Role.VIEWER), name="used")
    api_key = TeamAPIKey.objects.get(prefix=key.partition(".")[0])
    assert api_key.last_used_at is None
    client = client_with(key)

    with CaptureQueriesContext(connection) as first:
        assert client.get("/api/members/").status_code == 200
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert first_use is not None
    assert timezone.now() - first_use < timedelta(seconds=30)
    assert len(key_updates(first.captured_queries)) == 1

    with CaptureQueriesContext(connection) as second:
        assert client.get("/api/members/").status_code == 200
        assert client.get("/api/api-keys/").status_code == 200
    assert key_updates(second.captured_queries) == []
    api_key.refresh_from_db()
    assert api_key.last_used_at == first_use


def test_a_process_asks_the_shared_cache_about_a_keys_use_once_per_window(team, member):
    from django.core.cache import cache

    _, key = services.api_key_create(membership=member(team, Role.VIEWER), name="asked")
    client = client_with(key)
    assert client.get("/api/members/").status_code == 200
    marker = f"api-key-used:{key.partition('.')[0]}"
    cache.delete(marker)  # the shared window ended early, as if on another machine's clock

    with CaptureQueriesContext(connection) as later:
        assert client.get("/api/members/").status_code == 200
    # This process asked within the window already: no cache round trip, no second write.
    assert key_updates(later.captured_queries) == []
    assert cache.get(marker) is None


# Refused: every bad key gets exactly the same answer --------------------------------------------


@pytest.fixture
def refused_keys(team, member):
    """Keys that must all be refused the same way, by what is wrong with them."""
    viewer = member(team, Role.VIEWER)
    _, expired = services.api_key_create(
        membership=viewer, name="expired", expiry_date=timezone.now() - timedelta(minutes=1)
    )
    revoked_row, revoked = services.api_key_create(membership=viewer, name="revoked")
    services.api_key_revoke(acting=viewer, api_key=revoked_row)
    _, good = services.api_key_create(membership=viewer, name="good")
    prefix, _, secret = good.partition(".")
    inactive_member = member(team, Role.OWNER)
    _, inactive = services.api_key_create(membership=inactive_member, name="inactive")
    inactive_member.user.is_active = False
    inactive_member.user.save()
    return {
        "expired": expired,
        "revoked": revoked,
        "inactive_user": inactive,
        "wrong_secret": f"{prefix}.{secret[:-2]}xx",
        "unknown_prefix": f"Zz9Zz9Zz.{secret}",
        "malformed_no_dot": "not-a-key-at-all",
        "malformed_too_long": f"{prefix}.{'a' * 400}",
        "malformed_empty": "",
        "malformed_binary": "\u00e9\u00e8.\u00ff",
    }


def test_expired_revoked_malformed_and_unknown_keys_get_the_same_401(refused_keys):
    answers = {}
    for reason, key in refused_keys.items():
        response = client_with(key).get("/api/members/")
        answers[reason] = (response.status_code, response.json(), response["WWW-Authenticate"])
    assert all(answer == (401, INVALID_BODY, "Api-Key") for answer in answers.values()), answers


def test_a_refused_key_is_not_marked_used(refused_keys):
    client_with(refused_keys["expired"]).get("/api/members/")
    row = TeamAPIKey.objects.get(prefix=refused_keys["expired"].partition(".")[0])
    assert row.last_used_at is None


# Read-only --------------------------------------------------------------------------------------


def test_a_read_only_key_cannot_write(team, member, api_client_for, user_factory):
    client = api_client_for(member(team, Role.OWNER), read_only=True)
    response = client.post(
        "/api/members/", {"email": user_factory().email, "role": "viewer"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_a_read_only_admin_key_cannot_revoke_other_members_keys(team, member, api_client_for):
    victim_row, _ = services.api_key_create(membership=member(team, Role.TRADER), name="victim")
    client = api_client_for(member(team, Role.ADMIN), read_only=True)
    response = client.post(f"/api/api-keys/{victim_row.prefix}/revoke/")
    assert response.status_code == 404
    victim_row.refresh_from_db()
    assert victim_row.revoked is False


# Revoked ----------------------------------------------------------------------------------------


def test_a_member_revokes_their_own_key_and_it_stops_working(team, member, api_client_for):
    viewer = member(team, Role.VIEWER)
    client = api_client_for(viewer)
    doomed_row, doomed = services.api_key_create(membership=viewer, name="doomed")
    assert client_with(doomed).get("/api/members/").status_code == 200

    response = client.post(f"/api/api-keys/{doomed_row.prefix}/revoke/")
    assert response.status_code == 200, response.content
    assert response.json()["revoked"] is True
    refused = client_with(doomed).get("/api/members/")
    assert (refused.status_code, refused.json()) == (401, INVALID_BODY)
    assert client.get("/api/members/").status_code == 200  # the other key still works


def test_an_admin_revokes_another_members_key(team, member, api_client_for):
    trader_key_row, trader_key = services.api_key_create(
        membership=member(team, Role.TRADER), name="t"
    )
    response = api_client_for(member(team, Role.ADMIN)).post(
        f"/api/api-keys/{trader_key_row.prefix}/revoke/"
    )
    assert response.status_code == 200, response.content
    trader_key_row.refresh_from_db()
    assert trader_key_row.revoked is True
    assert client_with(trader_key).get("/api/members/").status_code == 401


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TRADER])
def test_below_admin_cannot_see_or_revoke_someone_elses_key(role, team, member, api_client_for):
    other_row, _ = services.api_key_create(membership=member(team, Role.VIEWER), name="other")
    client = api_client_for(member(team, role))
    assert other_row.prefix not in {
        k["prefix"] for k in client.get("/api/api-keys/").json()["results"]
    }
    response = client.post(f"/api/api-keys/{other_row.prefix}/revoke/")
    assert response.status_code == 404
    other_row.refresh_from_db()
    assert other_row.revoked is False


def test_an_admin_cannot_revoke_an_owners_key(team, member, api_client_for):
    owner_row, _ = services.api_key_create(membership=member(team, Role.OWNER), name="boss")
    response = api_client_for(member(team, Role.ADMIN)).post(
        f"/api/api-keys/{owner_row.prefix}/revoke/"
    )
    assert response.status_code == 403
    owner_row.refresh_from_db()
    assert owner_row.revoked is False
