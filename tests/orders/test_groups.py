"""Order groups: one spec (or a basket) copied across many accounts, each child an Order."""

import threading
import time
from decimal import Decimal

import pytest

from accounts.models import Role
from orders import services
from orders.models import Order, OrderGroup, OrderStatus

from .conftest import paper_orders, spec


@pytest.fixture
def trader(team, member, api_client_for):
    return api_client_for(member(team, Role.TRADER))


def test_group_places_one_child_per_account_and_shows_each_result(
    trader, team, paper_account_factory, django_capture_on_commit_callbacks
):
    accounts = [paper_account_factory(f"Acc {i}") for i in range(3)]
    services.trading_halt_set(team=team, account=accounts[2], halted=True)
    body = {
        "accounts": [a.pk for a in accounts],
        "order": {
            "symbol": "INFY",
            "exchange": "NSE",
            "side": "BUY",
            "quantity": "2",
            "order_type": "MARKET",
        },
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = trader.post("/api/order-groups/", body, format="json", HTTP_IDEMPOTENCY_KEY="g1")
    assert response.status_code == 202, response.data
    results = {row["account"]: row["orders"] for row in response.data["results"]}
    assert set(results) == {a.pk for a in accounts}
    assert results[accounts[2].pk][0]["status"] == "rejected"
    assert "halted" in results[accounts[2].pk][0]["rejection_reason"]

    group = OrderGroup.objects.get(pk=response.data["id"])
    detail = trader.get(f"/api/order-groups/{group.pk}/").data
    assert detail["summary"] == {"filled": 2, "rejected": 1}
    for account in accounts[:2]:
        [at_broker] = paper_orders(account)
        assert at_broker.quantity == Decimal(2)
    assert paper_orders(accounts[2]) == []

    replay = trader.post("/api/order-groups/", body, format="json", HTTP_IDEMPOTENCY_KEY="g1")
    assert replay.data["id"] == group.pk
    assert Order.objects.count() == 3


def test_basket_keeps_each_accounts_orders_in_sequence(team, paper_account_factory):
    accounts = [paper_account_factory(f"Acc {i}") for i in range(2)]
    basket = [spec(quantity=Decimal(q)) for q in (1, 2, 3)]
    group = services.order_group_place(team=team, accounts=accounts, specs=basket, enqueue=False)
    services.order_group_submit(group_id=group.pk, account_ids=[a.pk for a in accounts])
    for account in accounts:
        sent = paper_orders(account)
        assert [o.quantity for o in sent] == [Decimal(1), Decimal(2), Decimal(3)]
        children = Order.objects.filter(group=group, broker_account=account).order_by("sequence")
        assert [c.client_order_id for c in children] == [o.client_order_id for o in sent]


def test_an_account_stops_at_its_first_child_that_must_wait(team, dxtrade_account, dxtrade):
    basket = [dxtrade.spec(quantity=Decimal(q)) for q in (1, 2)]
    group = services.order_group_place(
        team=team, accounts=[dxtrade_account], specs=basket, enqueue=False
    )
    dxtrade.faults(error_rate=1.0, error_status=503)
    resume = services.order_group_submit(group_id=group.pk, account_ids=[dxtrade_account.pk])
    assert dxtrade_account.pk in resume
    statuses = list(
        Order.objects.filter(group=group).order_by("sequence").values_list("status", flat=True)
    )
    assert statuses == ["pending", "pending"]
    assert Order.objects.get(group=group, sequence=1).submit_attempts == 0  # never tried early
    dxtrade.faults(error_rate=0.0)
    assert services.order_group_submit(group_id=group.pk, account_ids=[dxtrade_account.pk]) == {}
    assert [row["quantity"] for row in dxtrade.ledger()] == ["1", "2"]


def test_group_spec_errors_are_400_per_account(trader, paper_account):
    body = {
        "accounts": [paper_account.pk],
        "orders": [
            {
                "symbol": "INFY",
                "exchange": "NSE",
                "side": "BUY",
                "quantity": "1",
                "order_type": "MARKET",
                "client_order_id": "x" * 30,
            }
        ],
    }
    response = trader.post("/api/order-groups/", body, format="json")
    assert response.status_code == 400
    assert "client_order_id" in response.data["error"]["fields"]
    both = {"accounts": [paper_account.pk], "order": body["orders"][0], "orders": body["orders"]}
    assert trader.post("/api/order-groups/", both, format="json").status_code == 400
    assert Order.objects.count() == 0


def test_fan_out_runs_accounts_concurrently_not_one_after_another():
    """The thread pool: 20 accounts whose broker takes 0.2s each finish in far less than 4s."""
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow_broker_call(account_id):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.2)
        with lock:
            in_flight[0] -= 1
        return None

    started = time.monotonic()
    services.run_concurrently(list(range(20)), slow_broker_call, threads=10)
    assert time.monotonic() - started < 1.5
    assert peak[0] > 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_fan_out_over_many_accounts_on_postgres_sends_each_once(
    team, paper_account_factory, settings
):
    settings.ORDERS_FANOUT_THREADS = 8
    accounts = [paper_account_factory(f"Acc {i}") for i in range(24)]
    group = services.order_group_place(
        team=team, accounts=accounts, specs=[spec(quantity=Decimal(1))], enqueue=False
    )
    resume = services.order_group_submit(group_id=group.pk, account_ids=[a.pk for a in accounts])
    assert resume == {}
    assert Order.objects.filter(group=group, status=OrderStatus.FILLED).count() == 24
    for account in accounts:
        assert len(paper_orders(account)) == 1


def test_sending_a_group_claims_every_accounts_first_child_with_one_update(
    team, paper_account_factory
):
    """PENDING -> SUBMITTING for the first child of all accounts at once, not one per child."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    accounts = [paper_account_factory(f"Acc {i}") for i in range(6)]
    group = services.order_group_place(team=team, accounts=accounts, specs=[spec()], enqueue=False)
    with CaptureQueriesContext(connection) as queries:
        resume = services.order_group_submit(
            group_id=group.pk, account_ids=[a.pk for a in accounts]
        )
    assert resume == {}
    claims = [  # only a claim sets submitted_at
        q["sql"]
        for q in queries
        if 'UPDATE "orders_order" SET' in q["sql"] and "submitted_at" in q["sql"]
    ]
    assert len(claims) == 1
    for order in group.orders.all():
        assert order.status == OrderStatus.FILLED
        assert order.submit_attempts == 1
        assert list(order.events.values_list("to_status", flat=True).order_by("pk")) == [
            "pending",
            "submitting",
            "filled",
        ]
    for account in accounts:
        assert len(paper_orders(account)) == 1


def test_a_halt_switched_on_after_placing_stops_that_accounts_children_only(
    team, paper_account_factory
):
    accounts = [paper_account_factory(f"Acc {i}") for i in range(3)]
    group = services.order_group_place(
        team=team, accounts=accounts, specs=[spec(), spec(side="SELL")], enqueue=False
    )
    services.trading_halt_set(team=team, account=accounts[1], halted=True)
    services.order_group_submit(group_id=group.pk, account_ids=[a.pk for a in accounts])
    halted = group.orders.filter(broker_account=accounts[1])
    assert set(halted.values_list("status", flat=True)) == {OrderStatus.REJECTED}
    assert all("halted" in order.rejection_reason for order in halted)
    assert paper_orders(accounts[1]) == []
    for account in (accounts[0], accounts[2]):
        assert [o.side for o in paper_orders(account)] == ["BUY", "SELL"]


def test_a_redelivered_group_task_reconciles_a_child_left_submitting_and_never_resends(
    team, paper_account_factory
):
    """The worker died after claiming: the child is SUBMITTING and reached the broker or not."""
    accounts = [paper_account_factory(f"Acc {i}") for i in range(2)]
    group = services.order_group_place(team=team, accounts=accounts, specs=[spec()], enqueue=False)
    services.order_group_submit(group_id=group.pk, account_ids=[a.pk for a in accounts])
    sent = group.orders.get(broker_account=accounts[0])
    Order.objects.filter(pk=sent.pk).update(status=OrderStatus.SUBMITTING)  # as left by a crash
    resume = services.order_group_submit(group_id=group.pk, account_ids=[a.pk for a in accounts])
    assert resume == {}
    sent.refresh_from_db()
    assert sent.status == OrderStatus.FILLED  # found in the broker's book by its client id
    assert len(paper_orders(accounts[0])) == 1
    assert len(paper_orders(accounts[1])) == 1


def test_accepting_a_group_takes_the_same_queries_for_4_accounts_as_for_12(
    team, paper_account_factory
):
    """Children of accounts without risk limits are checked in memory and stored in bulk."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    few = [paper_account_factory(f"Few {i}") for i in range(4)]
    many = [paper_account_factory(f"Many {i}") for i in range(12)]
    services.order_group_place(team=team, accounts=few, specs=[spec()], enqueue=False)  # warm

    counts = []
    for accounts in (few, many):
        with CaptureQueriesContext(connection) as queries:
            group = services.order_group_place(
                team=team, accounts=accounts, specs=[spec(), spec(side="SELL")], enqueue=False
            )
        counts.append(len(queries))
        assert group.orders.filter(status=OrderStatus.PENDING).count() == 2 * len(accounts)
        assert all(order.events.count() == 1 for order in group.orders.all())

    assert counts[0] == counts[1]


def test_a_group_on_an_account_with_risk_limits_checks_each_child_against_the_earlier_ones(
    team, paper_account_factory
):
    """The per-minute limit counts the group's own earlier children on that account."""
    from orders.models import RiskLimits

    limited, free = paper_account_factory("Limited"), paper_account_factory("Free")
    RiskLimits.objects.create(team=team, broker_account=limited, max_orders_per_minute=2)

    group = services.order_group_place(
        team=team, accounts=[limited, free], specs=[spec(), spec(), spec()], enqueue=False
    )

    statuses = {
        account.pk: list(
            group.orders.filter(broker_account=account)
            .order_by("sequence")
            .values_list("status", flat=True)
        )
        for account in (limited, free)
    }
    assert statuses[limited.pk] == [OrderStatus.PENDING, OrderStatus.PENDING, OrderStatus.REJECTED]
    assert statuses[free.pk] == [OrderStatus.PENDING] * 3
