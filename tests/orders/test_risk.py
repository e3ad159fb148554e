"""Pre-trade risk limits and the kill switch: refused before any broker call, with the reason."""

from decimal import Decimal

import pytest

from accounts.models import Role
from orders import services
from orders.models import Order, OrderStatus, RiskLimits

from .conftest import order_body, paper_orders, spec


def place(team, account, **overrides):
    order, _ = services.order_place(team=team, account=account, spec=spec(**overrides))
    return order


def assert_rejected_unsent(order, account, words):
    order.refresh_from_db()
    assert order.status == OrderStatus.REJECTED
    assert words in order.rejection_reason
    assert services.order_submit(order_id=order.pk).status == OrderStatus.REJECTED
    assert paper_orders(account) == []


@pytest.mark.parametrize(
    ("limits", "overrides", "words"),
    [
        ({"max_quantity": Decimal(5)}, {}, "Quantity 10 is above"),
        (
            {"max_notional": Decimal(10000)},
            {"order_type": "LIMIT", "price": Decimal(1500)},
            "Notional",
        ),
        ({"max_notional": Decimal(10000)}, {"reference_price": Decimal(1500)}, "Notional"),
        ({"max_notional": Decimal(10000)}, {}, "reference_price"),  # MARKET, nothing to price
        ({"allowed_exchanges": ["BSE"]}, {}, "may not trade on NSE"),
        ({"allowed_symbols": ["TCS"]}, {}, "may not trade INFY"),
    ],
)
@pytest.mark.parametrize("scope", ["account", "team"])
def test_limit_breaches_are_rejected_before_the_broker(
    team, paper_account, limits, overrides, words, scope
):
    RiskLimits.objects.create(
        team=team, broker_account=paper_account if scope == "account" else None, **limits
    )
    order = place(team, paper_account, **overrides)
    assert_rejected_unsent(order, paper_account, words)
    assert scope in order.rejection_reason


def test_within_limits_passes(team, paper_account):
    RiskLimits.objects.create(
        team=team,
        max_quantity=Decimal(10),
        max_notional=Decimal(15000),
        allowed_exchanges=["NSE"],
        allowed_symbols=["INFY"],
        max_orders_per_minute=5,
    )
    order = place(team, paper_account, order_type="LIMIT", price=Decimal(1500))
    assert order.status == OrderStatus.PENDING


def test_orders_per_minute_counts_the_account_and_ignores_refused_orders(
    team, paper_account_factory
):
    one, two = paper_account_factory("A"), paper_account_factory("B")
    RiskLimits.objects.create(team=team, broker_account=one, max_orders_per_minute=2)
    assert place(team, one).status == OrderStatus.PENDING
    assert place(team, one).status == OrderStatus.PENDING
    third = place(team, one)
    assert_rejected_unsent(third, one, "at most 2 orders a minute")
    assert place(team, one).status == OrderStatus.REJECTED  # refused ones do not free a slot
    assert place(team, two).status == OrderStatus.PENDING  # another account is not limited


def test_team_orders_per_minute_spans_accounts(team, paper_account_factory):
    one, two = paper_account_factory("A"), paper_account_factory("B")
    RiskLimits.objects.create(team=team, max_orders_per_minute=1)
    assert place(team, one).status == OrderStatus.PENDING
    assert place(team, two).status == OrderStatus.REJECTED


def test_account_halt_rejects_with_reason(team, paper_account):
    services.trading_halt_set(team=team, account=paper_account, halted=True)
    assert_rejected_unsent(place(team, paper_account), paper_account, "halted on the account")


def test_team_halt_stops_every_account_then_resume_allows_again(team, paper_account_factory):
    one, two = paper_account_factory("A"), paper_account_factory("B")
    services.trading_halt_set(team=team, halted=True, reason="fat finger")
    for account in (one, two):
        assert_rejected_unsent(place(team, account), account, "whole team: fat finger")
    services.trading_halt_set(team=team, halted=False)
    assert place(team, one).status == OrderStatus.PENDING


def test_halt_switched_on_after_queueing_stops_the_queued_order(team, paper_account):
    order = place(team, paper_account)
    assert order.status == OrderStatus.PENDING
    services.trading_halt_set(team=team, halted=True)
    assert services.order_submit(order_id=order.pk).status == OrderStatus.REJECTED
    assert paper_orders(paper_account) == []


def test_other_teams_limits_do_not_apply(team, other_team, paper_account):
    RiskLimits.objects.create(team=other_team, max_quantity=Decimal(1))
    services.trading_halt_set(team=other_team, halted=True)
    assert place(team, paper_account).status == OrderStatus.PENDING


# The API -----------------------------------------------------------------------------------


def test_admin_sets_limits_over_the_api_and_traders_cannot(
    team, member, api_client_for, paper_account
):
    admin = api_client_for(member(team, Role.ADMIN))
    trader = api_client_for(member(team, Role.TRADER))
    body = {"account": paper_account.pk, "max_quantity": "5", "allowed_exchanges": ["nse"]}
    assert trader.post("/api/risk-limits/", body, format="json").status_code == 403
    response = admin.post("/api/risk-limits/", body, format="json")
    assert response.status_code == 201, response.data
    assert response.data["allowed_exchanges"] == ["NSE"]
    assert (
        admin.post("/api/risk-limits/", body, format="json").status_code == 400
    )  # one per account
    team_wide = admin.post("/api/risk-limits/", {"max_notional": "1000"}, format="json")
    assert team_wide.status_code == 201 and team_wide.data["account"] is None
    rejected = trader.post("/api/orders/", order_body(paper_account), format="json")
    assert rejected.status_code == 422
    assert "maximum of 5" in rejected.data["error"]["message"]
    assert trader.get("/api/risk-limits/").data["count"] == 2
    assert (
        admin.patch(
            f"/api/risk-limits/{response.data['id']}/", {"max_quantity": "50"}, format="json"
        ).data["max_quantity"]
        == "50.00000000"
    )


def test_team_admin_halts_and_resumes_over_the_api(team, member, api_client_for, paper_account):
    admin = api_client_for(member(team, Role.ADMIN))
    trader = api_client_for(member(team, Role.TRADER))
    assert trader.post("/api/trading-halt/halt/", {}, format="json").status_code == 403
    state = admin.post("/api/trading-halt/halt/", {"reason": "stop"}, format="json").data
    assert state == {"team_halted": True, "team_halt_reason": "stop", "halted_accounts": []}
    assert trader.post("/api/orders/", order_body(paper_account), format="json").status_code == 422
    admin.post("/api/trading-halt/resume/", {}, format="json")
    admin.post("/api/trading-halt/halt/", {"account": paper_account.pk}, format="json")
    state = trader.get("/api/trading-halt/").data
    assert state["team_halted"] is False and state["halted_accounts"] == [paper_account.pk]
    assert trader.post("/api/orders/", order_body(paper_account), format="json").status_code == 422
    admin.post("/api/trading-halt/resume/", {"account": paper_account.pk}, format="json")
    assert trader.post("/api/orders/", order_body(paper_account), format="json").status_code == 202
    assert Order.objects.filter(status=OrderStatus.PENDING).count() == 1


def test_halting_another_teams_account_is_refused(
    team, other_team, member, api_client_for, paper_account_factory
):
    foreign = paper_account_factory("Theirs", for_team=other_team)
    admin = api_client_for(member(team, Role.ADMIN))
    response = admin.post("/api/trading-halt/halt/", {"account": foreign.pk}, format="json")
    assert response.status_code == 400
    foreign.refresh_from_db()
    assert foreign.trading_halted is False
