"""The adapter registry: built once from settings.BROKER_ADAPTERS, refusing bad configuration."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework.test import APIClient

from accounts.models import Role
from brokers.adapters import registry
from brokers.adapters.base import BrokerAdapter
from tests.fake_broker import (
    FAKE_CREDENTIALS,
    FAKE_OAUTH,
    FakeOAuthAdapter,
    registered_fake_brokers,
)


class SecondOAuthAdapter(FakeOAuthAdapter):
    """Claims the same code as FakeOAuthAdapter."""


class NoCodeAdapter(BrokerAdapter):
    name = "Nameless"


class NotAnAdapter:
    code = "imposter"


HERE = __name__


@pytest.fixture
def restore_registry():
    saved = registry._registry
    yield
    registry._registry = saved


def test_the_registry_holds_exactly_the_configured_adapters():
    configured = sorted(import_string(path).code for path in settings.BROKER_ADAPTERS)
    assert registry.codes() == configured
    for path in settings.BROKER_ADAPTERS:
        adapter_class = import_string(path)
        assert registry.get(adapter_class.code) is adapter_class


def test_the_registry_is_loaded_in_ready_and_not_per_request(
    monkeypatch, restore_registry, team, member, api_client_for
):
    calls = []
    real_load = registry.load
    monkeypatch.setattr(
        registry, "load", lambda paths: calls.append(list(paths)) or real_load(paths)
    )

    apps.get_app_config("brokers").ready()
    assert calls == [list(settings.BROKER_ADAPTERS)]

    client = api_client_for(member(team, Role.VIEWER))
    for _ in range(2):
        assert client.get("/api/brokers/").status_code == 200
    assert len(calls) == 1


def test_the_registry_cannot_be_changed_after_loading(restore_registry):
    registry.load([FAKE_OAUTH])
    with pytest.raises(TypeError):
        registry._registry["other"] = SecondOAuthAdapter
    registry.all_adapters().append(SecondOAuthAdapter)
    assert registry.all_adapters() == [FakeOAuthAdapter]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("brokers.adapters.no_such_module.Adapter", "cannot import 'brokers.adapters.no_such_"),
        (f"{HERE}.MissingClass", f"cannot import '{HERE}.MissingClass'"),
        ("not a dotted path", "cannot import 'not a dotted path'"),
        (f"{HERE}.NotAnAdapter", f"'{HERE}.NotAnAdapter' is not a BrokerAdapter"),
        (f"{HERE}.NoCodeAdapter", f"'{HERE}.NoCodeAdapter' has no broker code"),
    ],
)
def test_a_wrong_adapter_path_stops_start_up_naming_it(path, expected, restore_registry):
    before = registry._registry
    with pytest.raises(ImproperlyConfigured) as raised:
        registry.load([FAKE_CREDENTIALS, path])
    assert "BROKER_ADAPTERS" in str(raised.value)
    assert expected in str(raised.value)
    assert registry._registry is before  # nothing half-loaded


def test_a_duplicate_broker_code_stops_start_up_naming_both(restore_registry):
    with pytest.raises(ImproperlyConfigured) as raised:
        registry.load([FAKE_OAUTH, f"{HERE}.SecondOAuthAdapter"])
    message = str(raised.value)
    assert "'fakeoauth'" in message
    assert "tests.fake_broker.FakeOAuthAdapter" in message
    assert f"{HERE}.SecondOAuthAdapter" in message


def test_an_unknown_code_raises_a_clear_error_listing_the_known_ones():
    with registered_fake_brokers():
        with pytest.raises(registry.UnknownBroker) as raised:
            registry.get("nope")
    assert str(raised.value) == "Unknown broker 'nope'; registered brokers: fakecreds, fakeoauth"


# GET /api/brokers/ ------------------------------------------------------------------------------


@pytest.fixture
def viewer_client(team, member, api_client_for):
    return api_client_for(member(team, Role.VIEWER))


def test_brokers_endpoint_describes_every_registered_broker(viewer_client):
    with registered_fake_brokers():
        response = viewer_client.get("/api/brokers/")
    assert response.status_code == 200
    by_code = {item["code"]: item for item in response.json()}
    assert set(by_code) == {"fakeoauth", "fakecreds"}
    oauth = by_code["fakeoauth"]
    assert oauth["name"] == "Fake OAuth Broker"
    assert oauth["auth_flow"] == "oauth_redirect"
    assert by_code["fakecreds"]["auth_flow"] == "credentials"
    fields = {f["name"]: f for f in oauth["credential_fields"]}
    assert fields["api_key"]["secret"] is False
    assert fields["api_secret"]["secret"] is True
    assert {"label", "required", "help_text"} <= set(fields["api_secret"])
    assert oauth["capabilities"] == {"oauth_login": True, "funds": True, "place_order": False}


def test_one_broker_is_described_by_its_code_and_an_unknown_one_is_404(viewer_client):
    with registered_fake_brokers():
        found = viewer_client.get("/api/brokers/fakecreds/")
        missing = viewer_client.get("/api/brokers/nope/")
    assert found.status_code == 200
    assert found.json()["code"] == "fakecreds"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_brokers_endpoint_needs_a_signed_in_caller():
    response = APIClient().get("/api/brokers/")
    assert response.status_code in (401, 403)
    assert "error" in response.json()
