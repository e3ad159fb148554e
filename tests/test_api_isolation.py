"""Cross-team isolation, written once and run over every registered API route.

Every view deriving from ``TeamScopedViewSet`` is covered automatically: its list never shows
another team's rows, and every detail route (retrieve, update, delete, detail actions) answers 404
for another team's row and leaves it unchanged. Any other ``/api/`` route must be listed in
``NON_TEAM_ROUTES`` with the reason it holds no team data, so a new endpoint has to declare itself.
A team-scoped route whose model has no entry in ``ROW_FACTORIES`` fails, naming the model.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.forms.models import model_to_dict
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

from accounts import services as account_services
from accounts.models import Membership, Role, TeamAPIKey, User
from algoways.api.views import TeamScopedViewSet
from brokers.models import BrokerAccount
from tests.fake_broker import registered_fake_brokers

#: /api/ routes that hold no team data, by URL name, with the reason.
NON_TEAM_ROUTES = {
    "me": "the caller's own user and their memberships",
    "broker-list": "the adapter registry: the same for every team",
    "broker-detail": "the adapter registry: the same for every team",
    "instrument-list": "the instrument master: shared reference data",
    "schema": "the OpenAPI document",
    "docs": "the Swagger UI page",
}

_serial = itertools.count(1)


def _user() -> User:
    n = next(_serial)
    return User.objects.create_user(username=f"iso{n}", email=f"iso{n}@example.com")


def _membership(team) -> Membership:
    return Membership.objects.create(user=_user(), team=team, role=Role.TRADER)


def _api_key(team) -> TeamAPIKey:
    api_key, _ = account_services.api_key_create(membership=_membership(team), name="isolation")
    return api_key


def _broker_account(team) -> BrokerAccount:
    return BrokerAccount.objects.create(
        team=team,
        broker="fakeoauth",
        label=f"Account {next(_serial)}",
        credentials={"api_key": "plain-key"},
        secret_credentials=json.dumps({"api_secret": "isolation-secret"}),
    )


def _order(team):
    from orders.models import Order

    return Order.objects.create(
        team=team,
        broker_account=_broker_account(team),
        client_order_id=f"iso{next(_serial)}",
        symbol="INFY",
        exchange="NSE",
        side="BUY",
        quantity=1,
        order_type="LIMIT",
        price=100,
    )


def _order_group(team):
    from orders.models import OrderGroup

    return OrderGroup.objects.create(team=team, specs=[])


def _risk_limits(team):
    from orders.models import RiskLimits

    return RiskLimits.objects.create(
        team=team, broker_account=_broker_account(team), max_quantity=5
    )


def _schedule(team):
    from orders.models import ScheduledOrder

    schedule = ScheduledOrder.objects.create(
        team=team,
        name=f"Schedule {next(_serial)}",
        cron="15 9 * * 1-5",
        specs=[{"symbol": "INFY", "exchange": "NSE", "side": "BUY", "quantity": "1"}],
    )
    schedule.accounts.add(_broker_account(team))
    return schedule


def _trading_state(team):
    from orders.models import TeamTradingState

    account = _broker_account(team)
    BrokerAccount.objects.filter(pk=account.pk).update(trading_halted=True)
    state = TeamTradingState.objects.create(
        team=team, trading_halted=True, halt_reason=f"halt {next(_serial)}"
    )
    state.halted_account_id = account.pk
    return state


def _trading_state_identities(state) -> set[str]:
    return {f"reason:{state.halt_reason}", f"account:{state.halted_account_id}"}


def _trading_state_listed(body) -> set[str]:
    return {f"reason:{body['team_halt_reason']}"} | {
        f"account:{pk}" for pk in body["halted_accounts"]
    }


@dataclass(frozen=True)
class RowFactory:
    """How to make a row of a model for a team, and a request body that would change it.

    ``identities``/``listed`` override how a row is recognised in a list response, for routes
    whose list is not a page of serialized rows.
    """

    create: Callable
    change: dict = field(default_factory=dict)
    rows_per_team: int = 2
    identities: Callable | None = None
    listed: Callable | None = None


#: One entry per model a team-scoped route serves, keyed by the view's queryset model label.
ROW_FACTORIES: dict[str, RowFactory] = {
    "accounts.Membership": RowFactory(_membership, change={"role": Role.OWNER}),
    "accounts.TeamAPIKey": RowFactory(_api_key, change={"name": "taken over"}),
    "brokers.BrokerAccount": RowFactory(
        _broker_account,
        change={
            "label": "taken over",
            "credentials": {"api_key": "x"},
            # shaped like a real oauth-complete body, so only the lookup can refuse it
            "state": "x",
            "params": {"request_token": "x"},
        },
    ),
    "orders.Order": RowFactory(_order, change={"quantity": "2", "price": "101"}),
    "orders.OrderGroup": RowFactory(_order_group, change={"specs": []}),
    "orders.RiskLimits": RowFactory(_risk_limits, change={"max_quantity": "500"}),
    "orders.ScheduledOrder": RowFactory(_schedule, change={"name": "taken over", "enabled": False}),
    "orders.TeamTradingState": RowFactory(
        _trading_state,
        rows_per_team=1,
        identities=_trading_state_identities,
        listed=_trading_state_listed,
    ),
}


# Route discovery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    regex: str
    view_class: type
    actions: dict

    @property
    def team_scoped(self) -> bool:
        return isinstance(self.view_class, type) and issubclass(self.view_class, TeamScopedViewSet)

    @property
    def lookup_kwarg(self) -> str:
        return self.view_class.lookup_url_kwarg or self.view_class.lookup_field

    @property
    def is_detail(self) -> bool:
        return f"(?P<{self.lookup_kwarg}>" in self.regex

    def __str__(self) -> str:
        return self.name


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern


def api_routes() -> list[Route]:
    routes = []
    for regex, pattern in _walk(get_resolver().url_patterns):
        if not regex.startswith("api/"):
            continue
        callback = pattern.callback
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", callback)
        routes.append(
            Route(pattern.name or regex, regex, view_class, dict(getattr(callback, "actions", {})))
        )
    return routes


ROUTES = api_routes()
TEAM_LIST_ROUTES = [r for r in ROUTES if r.team_scoped and "list" in r.actions.values()]
TEAM_DETAIL_ROUTES = [r for r in ROUTES if r.team_scoped and r.is_detail]
DETAIL_CASES = [
    (route, method)
    for route in TEAM_DETAIL_ROUTES
    for method in sorted({*route.actions, "get", "put", "patch", "delete"})
]


def model_of(route: Route) -> type:
    queryset = getattr(route.view_class, "queryset", None)
    assert queryset is not None, (
        f"{route.view_class.__name__} ({route.name}) has no class-level queryset: "
        "the isolation tests read the model from it"
    )
    return queryset.model


def factory_for(route: Route) -> RowFactory:
    label = model_of(route)._meta.label
    assert label in ROW_FACTORIES, (
        f"No isolation factory for {label} (served by {route.name}): add a "
        f"RowFactory for it to ROW_FACTORIES in {__name__}"
    )
    return ROW_FACTORIES[label]


def url_for(route: Route, row=None) -> str:
    """The route's URL, built from its own pattern (URL names are not unique across the site)."""
    path = "/" + route.regex.replace("^", "").replace("$", "")
    if route.is_detail:
        lookup = route.view_class.lookup_field
        value = str(getattr(row, "pk" if lookup == "pk" else lookup))
        path = re.sub(rf"\(\?P<{route.lookup_kwarg}>[^)]*\)", value, path)
    match = resolve(path)
    assert getattr(match.func, "cls", None) is route.view_class, (route.name, path)
    return path


def snapshot(row) -> dict | None:
    fresh = type(row).objects.filter(pk=row.pk).first()
    return None if fresh is None else model_to_dict(fresh)


def listed_identities(route: Route, factory: RowFactory, response) -> set[str]:
    body = response.json()
    if factory.listed is not None:
        return factory.listed(body)
    results = body["results"] if isinstance(body, dict) else body
    lookup = route.view_class.lookup_field
    key = "id" if lookup == "pk" else lookup
    return {str(item[key]) for item in results}


def identities(route: Route, factory: RowFactory, rows) -> set[str]:
    if factory.identities is not None:
        return {identity for row in rows for identity in factory.identities(row)}
    lookup = route.view_class.lookup_field
    return {str(getattr(row, "pk" if lookup == "pk" else lookup)) for row in rows}


@pytest.fixture(autouse=True)
def fake_brokers():
    with registered_fake_brokers():
        yield


@pytest.fixture
def client(team, member, api_client_for):
    """An owner of ``team``: the most a caller can be, so only the team boundary refuses."""
    return api_client_for(member(team, Role.OWNER))


# Tests ------------------------------------------------------------------------------------------


def test_every_api_route_is_team_scoped_or_declared_global():
    undeclared = [
        f"{r.name} ({r.regex}, {getattr(r.view_class, '__name__', r.view_class)})"
        for r in ROUTES
        if not r.team_scoped and r.name not in NON_TEAM_ROUTES
    ]
    assert not undeclared, (
        "These /api/ routes neither derive from TeamScopedViewSet nor are declared in "
        f"NON_TEAM_ROUTES: {undeclared}"
    )


def test_declared_global_routes_exist_and_hold_no_team_views():
    names = {r.name: r for r in ROUTES}
    assert set(NON_TEAM_ROUTES) <= set(names), set(NON_TEAM_ROUTES) - set(names)
    assert not [name for name in NON_TEAM_ROUTES if names[name].team_scoped]


def test_route_discovery_finds_the_team_scoped_endpoints():
    names = {r.name for r in TEAM_LIST_ROUTES}
    assert {"membership-list", "api-key-list", "broker-account-list"} <= names
    assert "broker-account-oauth-complete" in {r.name for r in TEAM_DETAIL_ROUTES}


@pytest.mark.parametrize("route", TEAM_LIST_ROUTES, ids=str)
def test_list_never_shows_another_teams_rows(route, client, team, other_team):
    factory = factory_for(route)
    own = [factory.create(team) for _ in range(factory.rows_per_team)]
    foreign = [factory.create(other_team) for _ in range(factory.rows_per_team)]

    response = client.get(url_for(route), {"page_size": 500})

    assert response.status_code == 200, response.content
    listed = listed_identities(route, factory, response)
    assert identities(route, factory, own) <= listed  # the list really lists rows
    assert not listed & identities(route, factory, foreign)


@pytest.mark.parametrize(
    ("route", "method"), DETAIL_CASES, ids=[f"{r}-{m}" for r, m in DETAIL_CASES]
)
def test_another_teams_row_is_not_found_and_unchanged(route, method, client, team, other_team):
    factory = factory_for(route)
    foreign = factory.create(other_team)
    before = snapshot(foreign)

    url = url_for(route, foreign)
    if method == "get":
        response = client.get(url, {"symbols": "NSE:INFY"})
    else:
        response = getattr(client, method)(url, factory.change, format="json")

    if method in route.actions and method in route.view_class.http_method_names:
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
    else:
        assert response.status_code in (404, 405), response.content
    assert snapshot(foreign) == before


@pytest.mark.parametrize("route", [r for r in TEAM_DETAIL_ROUTES if "get" in r.actions], ids=str)
def test_own_teams_row_is_found_by_the_same_lookup(route, client, team):
    """The 404s above come from the team boundary, not from a wrong URL."""
    own = factory_for(route).create(team)
    response = client.get(url_for(route, own), {"symbols": "NSE:INFY"})
    assert response.status_code != 404, response.content


# References to another team's rows inside request bodies ---------------------------------------

ORDER_SPEC = {
    "symbol": "INFY",
    "exchange": "NSE",
    "side": "BUY",
    "quantity": "1",
    "order_type": "LIMIT",
    "price": "100",
}
#: (name, method, url, body naming the foreign account, the field that must be refused)
BODY_REFERENCES = [
    ("order", "post", "/api/orders/", lambda pk: {**ORDER_SPEC, "account": pk}, "account"),
    (
        "order-group",
        "post",
        "/api/order-groups/",
        lambda pk: {"accounts": [pk], "order": ORDER_SPEC},
        "accounts",
    ),
    ("risk-limits", "post", "/api/risk-limits/", lambda pk: {"account": pk}, "account"),
    (
        "schedule",
        "post",
        "/api/schedules/",
        lambda pk: {"name": "x", "cron": "15 9 * * 1-5", "specs": [ORDER_SPEC], "accounts": [pk]},
        "accounts",
    ),
    ("halt", "post", "/api/trading-halt/halt/", lambda pk: {"account": pk}, "account"),
    ("resume", "post", "/api/trading-halt/resume/", lambda pk: {"account": pk}, "account"),
]


@pytest.mark.parametrize(
    ("name", "method", "url", "body", "field_name"),
    BODY_REFERENCES,
    ids=[case[0] for case in BODY_REFERENCES],
)
def test_a_body_naming_another_teams_account_is_refused(
    name, method, url, body, field_name, client, other_team
):
    try:
        resolve(url)
    except Resolver404:
        pytest.skip(f"{url} is not registered")
    foreign = _broker_account(other_team)
    if name == "resume":
        BrokerAccount.objects.filter(pk=foreign.pk).update(trading_halted=True)
    before = snapshot(foreign)
    tables = {m._meta.label: m.objects.count() for m in apps.get_models()}

    response = getattr(client, method)(url, body(foreign.pk), format="json")

    assert response.status_code == 400, response.content
    assert field_name in response.json()["error"]["fields"]
    assert snapshot(foreign) == before
    assert {m._meta.label: m.objects.count() for m in apps.get_models()} == tables
