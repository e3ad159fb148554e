"""Bad input gets 400 in the one error shape, with field messages where a field is at fault.

Malformed JSON, JSON that is not an object, unknown fields, wrong types, missing fields and bodies
over ``DATA_UPLOAD_MAX_MEMORY_SIZE``: never a 500, on every endpoint that takes a body. Every
operation with a request body in the OpenAPI schema must have an entry in ``BODY_ENDPOINTS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator

from accounts.models import Role
from brokers.models import BrokerAccount
from tests.fake_broker import registered_fake_brokers


@dataclass(frozen=True)
class BodyEndpoint:
    method: str
    #: the path as the OpenAPI schema writes it
    path: str
    valid: dict
    #: a body where each named field has the wrong type
    wrong_types: dict
    #: fields a body must have (empty for partial updates)
    required: tuple[str, ...] = ()
    #: path parameters from the fixture rows
    path_params: Callable = field(default=lambda rows: {})

    def url(self, rows) -> str:
        return self.path.format(**self.path_params(rows))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


BODY_ENDPOINTS = [
    BodyEndpoint(
        "post",
        "/api/members/",
        valid={"email": "newcomer@example.com", "role": "viewer"},
        wrong_types={"email": ["a", "b"], "role": 7},
        required=("email", "role"),
    ),
    BodyEndpoint(
        "patch",
        "/api/members/{id}/",
        valid={"role": "viewer"},
        wrong_types={"role": {"is": "owner"}},
        required=("role",),
        path_params=lambda rows: {"id": rows["membership"].pk},
    ),
    BodyEndpoint(
        "post",
        "/api/api-keys/",
        valid={"name": "ci"},
        wrong_types={"name": {"a": 1}, "read_only": "perhaps", "expiry_date": "next week"},
        required=("name",),
    ),
    BodyEndpoint(
        "post",
        "/api/broker-accounts/",
        valid={
            "broker": "fakeoauth",
            "label": "New",
            "credentials": {"api_key": "k", "api_secret": "s"},
        },
        wrong_types={"broker": 5, "label": ["x"], "credentials": "api_key=k", "base_url": 3},
        required=("broker", "label", "credentials"),
    ),
    BodyEndpoint(
        "patch",
        "/api/broker-accounts/{id}/",
        valid={"label": "Renamed"},
        wrong_types={"label": {"x": 1}, "credentials": ["api_key"], "base_url": "not a url"},
        path_params=lambda rows: {"id": rows["account"].pk},
    ),
    BodyEndpoint(
        "post",
        "/api/broker-accounts/{id}/oauth-complete/",
        valid={"state": "s", "params": {"request_token": "t"}},
        wrong_types={"state": ["s"], "params": "request_token=t"},
        required=("state", "params"),
        path_params=lambda rows: {"id": rows["account"].pk},
    ),
]


ORDER_SPEC = {
    "symbol": "INFY",
    "exchange": "NSE",
    "side": "BUY",
    "quantity": "1",
    "order_type": "LIMIT",
    "price": "100",
}
BODY_ENDPOINTS += [
    BodyEndpoint(
        "post",
        "/api/orders/",
        valid=ORDER_SPEC,  # plus the account, added by the rows fixture
        wrong_types={"quantity": "lots", "side": 5, "price": {"a": 1}, "symbol": ["INFY"]},
        required=("symbol", "exchange", "side", "quantity", "order_type", "account"),
    ),
    BodyEndpoint(
        "patch",
        "/api/orders/{id}/",
        valid={"price": "101"},
        wrong_types={"quantity": "many", "price": [1], "order_type": 3},
        path_params=lambda rows: {"id": rows["order"].pk},
    ),
    BodyEndpoint(
        "post",
        "/api/order-groups/",
        valid={"order": ORDER_SPEC},  # plus the accounts, added by the rows fixture
        wrong_types={"accounts": "all", "order": 5, "orders": {"a": 1}},
        required=("accounts",),
    ),
    BodyEndpoint(
        "post",
        "/api/risk-limits/",
        valid={"max_quantity": "10"},
        wrong_types={"max_quantity": "lots", "allowed_exchanges": "NSE", "account": "x"},
    ),
    BodyEndpoint(
        "patch",
        "/api/risk-limits/{id}/",
        valid={"max_quantity": "20"},
        wrong_types={"max_notional": "rich", "allowed_symbols": {"a": 1}},
        path_params=lambda rows: {"id": rows["risk_limits"].pk},
    ),
    BodyEndpoint(
        "post",
        "/api/trading-halt/halt/",
        valid={"reason": "maintenance"},
        wrong_types={"account": "x", "reason": ["a"]},
    ),
    BodyEndpoint(
        "post",
        "/api/trading-halt/resume/",
        valid={"reason": "done"},
        wrong_types={"account": {"id": 1}, "reason": {"a": 1}},
    ),
    BodyEndpoint(
        "post",
        "/api/schedules/",
        valid={"name": "Daily", "cron": "15 9 * * 1-5", "specs": [ORDER_SPEC]},
        wrong_types={"name": ["x"], "grace_seconds": "soon", "enabled": "maybe", "specs": "all"},
        required=("name",),
    ),
    BodyEndpoint(
        "patch",
        "/api/schedules/{id}/",
        valid={"name": "Renamed"},
        wrong_types={"grace_seconds": "x", "run_at": "tomorrow-ish", "accounts": "all"},
        path_params=lambda rows: {"id": rows["schedule"].pk},
    ),
]


@pytest.fixture(autouse=True)
def fake_brokers():
    with registered_fake_brokers():
        yield


@pytest.fixture
def rows(team, member):
    from orders.models import Order, RiskLimits, ScheduledOrder

    account = BrokerAccount.objects.create(
        team=team, broker="fakeoauth", label="Existing", credentials={"api_key": "k"}
    )
    schedule = ScheduledOrder.objects.create(
        team=team, name="Existing", cron="15 9 * * 1-5", specs=[ORDER_SPEC]
    )
    schedule.accounts.add(account)
    return {
        "membership": member(team, Role.TRADER),
        "account": account,
        "order": Order.objects.create(
            team=team, broker_account=account, client_order_id="bad-input-1", **ORDER_SPEC
        ),
        "risk_limits": RiskLimits.objects.create(team=team, broker_account=account),
        "schedule": schedule,
    }


#: Body fields that name the fixture's rows, by path.
ROW_REFERENCES = {
    "/api/orders/": lambda rows: {"account": rows["account"].pk},
    "/api/order-groups/": lambda rows: {"accounts": [rows["account"].pk]},
    "/api/schedules/": lambda rows: {"accounts": [rows["account"].pk]},
}


def with_rows(endpoint: BodyEndpoint, rows, body: dict) -> dict:
    references = ROW_REFERENCES.get(endpoint.path)
    return {**references(rows), **body} if references else body


def with_nul_characters(value):
    """Every string inside ``value`` with a NUL character in it."""
    if isinstance(value, str):
        return f"bad\x00{value}"
    if isinstance(value, dict):
        return {name: with_nul_characters(item) for name, item in value.items()}
    if isinstance(value, list):
        return [with_nul_characters(item) for item in value]
    return value


def send(client, endpoint: BodyEndpoint, rows, raw: str | bytes):
    return getattr(client, endpoint.method)(
        endpoint.url(rows), raw, content_type="application/json"
    )


def assert_error(response, code: str, fields: set[str] | None = None):
    assert response.status_code == 400, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "fields"}
    if fields is not None:
        assert fields <= set(error["fields"]), error
        for messages in error["fields"].values():
            assert messages, error


def test_every_operation_with_a_body_is_covered():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    with_body = {
        f"{method} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }
    missing = with_body - {str(endpoint) for endpoint in BODY_ENDPOINTS}
    assert not missing, f"Add these operations to BODY_ENDPOINTS in {__name__}: {sorted(missing)}"


ids = [str(endpoint) for endpoint in BODY_ENDPOINTS]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=ids)
def test_malformed_json_is_a_parse_error(endpoint, owner_client, rows):
    for raw in ('{"name": ', "{'single': 'quotes'}", "\x00\xff", "[1,", "NaN"):
        assert_error(send(owner_client, endpoint, rows, raw), "parse_error")


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=ids)
def test_json_that_is_not_an_object_is_invalid(endpoint, owner_client, rows):
    for raw in ("[]", "[1, 2]", '"text"', "42", "null"):
        assert_error(send(owner_client, endpoint, rows, raw), "invalid")


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=ids)
def test_unknown_fields_are_named(endpoint, owner_client, rows):
    body = {**with_rows(endpoint, rows, endpoint.valid), "is_superuser": True, "team": 999}
    assert_error(
        send(owner_client, endpoint, rows, json.dumps(body)), "invalid", {"is_superuser", "team"}
    )


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=ids)
def test_wrong_types_are_named(endpoint, owner_client, rows):
    for name, value in endpoint.wrong_types.items():
        body = {**with_rows(endpoint, rows, endpoint.valid), name: value}
        assert_error(send(owner_client, endpoint, rows, json.dumps(body)), "invalid", {name})


@pytest.mark.parametrize("endpoint", [e for e in BODY_ENDPOINTS if e.required], ids=str)
def test_missing_fields_are_named(endpoint, owner_client, rows):
    assert_error(send(owner_client, endpoint, rows, "{}"), "invalid", set(endpoint.required))


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=ids)
def test_a_body_over_the_size_limit_is_refused_with_400(endpoint, owner_client, rows):
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    body = json.dumps({**endpoint.valid, "padding": padding})
    response = send(owner_client, endpoint, rows, body)
    assert_error(response, "request_too_large")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in response.json()["error"]["message"]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=ids)
def test_strings_with_nul_characters_are_invalid_not_a_database_error(endpoint, owner_client, rows):
    body = with_rows(endpoint, rows, with_nul_characters(endpoint.valid))
    response = send(owner_client, endpoint, rows, json.dumps(body))
    assert response.status_code == 400, response.content


def test_the_valid_bodies_are_accepted(owner_client, rows, user_factory):
    """The cases above are refused for what they break, not because the base body is wrong."""
    user_factory(email="newcomer@example.com")
    for endpoint in BODY_ENDPOINTS:
        body = with_rows(endpoint, rows, endpoint.valid)
        response = send(owner_client, endpoint, rows, json.dumps(body))
        if "oauth-complete" in endpoint.path:  # a made-up state: refused, but for the state
            assert_error(response, "invalid", {"state"})
        else:
            assert response.status_code in (200, 201, 202), (str(endpoint), response.content)
