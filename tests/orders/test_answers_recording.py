"""Brokers' answers to orders sent together (a fan-out) are recorded together: one UPDATE and one
insert of events for the acknowledgements, failures one by one, and never over an outcome that
a reconciliation recorded first."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from decimal import Decimal

import pytest
from celery.signals import task_prerun
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from brokers.adapters import errors
from brokers.adapters.base import OrderAck
from brokers.adapters.base import OrderStatus as BrokerStatus
from orders import services
from orders.models import Order, OrderEvent, OrderStatus
from orders.tasks import account_fill_prices_read_task, fill_price_read_task

from .conftest import spec

S = OrderStatus


def claimed_orders(team, accounts) -> list[Order]:
    """One order per account, claimed for sending (SUBMITTING), as a fan-out leaves them."""
    ids = [
        services.order_place(team=team, account=account, spec=spec(), enqueue=False)[0].pk
        for account in accounts
    ]
    with transaction.atomic():
        locked = list(Order.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        return services._claim_for_sending(locked)


def order_updates(queries) -> list[str]:
    """The statements that update orders (on PostgreSQL, one holds the events' insert too)."""
    return [q["sql"] for q in queries if 'UPDATE "orders_order" SET' in q["sql"]]


def test_acknowledgements_of_several_orders_are_written_with_one_update(
    team, paper_account_factory
):
    orders = claimed_orders(team, [paper_account_factory(f"Acc {i}") for i in range(4)])
    answers = [
        (order, OrderAck(f"B{index}", BrokerStatus.OPEN, "open", "Working."))
        for index, order in enumerate(orders)
    ]
    with CaptureQueriesContext(connection) as queries:
        results = services._answers_record(answers)

    assert len(order_updates(queries)) == 1
    assert {result.status for result in results.values()} == {S.OPEN}
    for index, order in enumerate(orders):
        order.refresh_from_db()
        assert (order.status, order.broker_order_id, order.broker_status) == (
            S.OPEN,
            f"B{index}",
            "open",
        )
        assert list(order.events.values_list("to_status", flat=True).order_by("pk")) == [
            S.PENDING,
            S.SUBMITTING,
            S.OPEN,
        ]


def test_acknowledgements_changing_different_fields_keep_each_rows_own_values(
    team, paper_account_factory
):
    # One UPDATE for all: a filled order's filled quantity must not leak into the open one's row,
    # nor the open one's (unchanged) values overwrite the filled one's.
    filled, working = claimed_orders(team, [paper_account_factory(f"Acc {i}") for i in range(2)])
    services._answers_record(
        [
            (filled, OrderAck("F1", BrokerStatus.FILLED, "filled", "")),
            (working, OrderAck("W1", BrokerStatus.OPEN, "open", "Working.")),
        ]
    )

    filled.refresh_from_db()
    working.refresh_from_db()
    assert (filled.status, filled.filled_quantity, filled.broker_message) == (
        S.FILLED,
        filled.quantity,
        "Acknowledged by the broker.",
    )
    assert (working.status, working.filled_quantity, working.broker_message) == (
        S.OPEN,
        Decimal("0"),
        "Working.",
    )
    assert working.average_price is None
    assert filled.submitted_at is not None and filled.submit_attempts == 1


def test_an_outcome_recorded_first_by_a_reconciliation_stands(team, paper_account_factory):
    orders = claimed_orders(team, [paper_account_factory(f"Acc {i}") for i in range(3)])
    reconciled = orders[1]
    # A reconciliation found it in the broker's book first (a redelivered task, the sweeper).
    services.order_transition(
        order=Order.objects.get(pk=reconciled.pk),
        to_status=S.FILLED,
        source="sync",
        message="Found in the broker's order book.",
        filled_quantity=Decimal(10),
    )
    answers = [(order, OrderAck("B", BrokerStatus.OPEN, "open")) for order in orders]

    results = services._answers_record(answers)

    assert results[reconciled.pk].status == S.FILLED
    reconciled.refresh_from_db()
    assert reconciled.status == S.FILLED
    assert not reconciled.events.filter(to_status=S.OPEN).exists()
    for order in (orders[0], orders[2]):
        order.refresh_from_db()
        assert order.status == S.OPEN


def test_failures_among_acknowledgements_are_recorded_by_their_kind(team, paper_account_factory):
    orders = claimed_orders(team, [paper_account_factory(f"Acc {i}") for i in range(4)])
    answers = [
        (orders[0], OrderAck("B0", BrokerStatus.FILLED, "filled")),
        (orders[1], errors.OutcomeUnknown("Read timed out after sending.")),
        (orders[2], errors.OrderRejected("Market closed.")),
        (orders[3], errors.BrokerUnavailable("503 from the broker.")),
    ]
    results = services._answers_record(answers)

    statuses = [Order.objects.get(pk=order.pk).status for order in orders]
    assert statuses == [S.FILLED, S.UNKNOWN, S.REJECTED, S.PENDING]
    assert results[orders[1].pk].reconcile_in is not None  # asked about, never resent
    assert results[orders[3].pk].retry_in is not None  # certainly not taken: sent again later
    assert Order.objects.get(pk=orders[2].pk).rejection_reason == "Market closed."


def test_results_are_handed_over_while_the_threads_go_on():
    release = threading.Event()
    batches: list[list] = []

    def work(item):
        if item >= 4:
            release.wait(5)  # the last items finish only once the first were handed over
        return item * 10

    def on_results(batch):
        batches.append(batch)
        if sum(len(b) for b in batches) >= 4:
            release.set()

    results = services.run_concurrently(list(range(8)), work, threads=8, on_results=on_results)

    assert results == {item: item * 10 for item in range(8)}
    handed = [item for batch in batches for item, _ in batch]
    assert sorted(handed) == list(range(8))  # each exactly once
    assert len(batches) >= 2


def filled_without_price(orders) -> list[tuple]:
    """The paper broker's own answers to ``orders``, as acknowledgements without the price."""
    return [
        (order, OrderAck(ack.broker_order_id, BrokerStatus.FILLED, "filled"))
        for order in orders
        for ack in [services._broker_answer(order)]
    ]


@contextmanager
def fill_price_reads():
    """Per fill-price task run meanwhile, the account ids it was given."""
    runs: list[list[int]] = []

    def count(sender=None, args=(), **kwargs):
        if sender.name == "orders.tasks.account_fill_prices_read_task":
            runs.append(sorted(args[0]))

    task_prerun.connect(count)
    try:
        yield runs
    finally:
        task_prerun.disconnect(count)


def test_fill_prices_of_orders_acknowledged_together_are_read_by_one_task_once_per_account(
    team, paper_account_factory, django_capture_on_commit_callbacks
):
    first, second = paper_account_factory("Acc 1"), paper_account_factory("Acc 2")
    orders = claimed_orders(team, [first, first, first, second])
    with fill_price_reads() as runs, django_capture_on_commit_callbacks(execute=True):
        services._answers_record(filled_without_price(orders))

    assert runs == [sorted([first.pk, second.pk])]  # one task, each account once
    for order in orders:
        order.refresh_from_db()
        assert order.status == S.FILLED
        assert order.average_price == Decimal("1500")
        assert order.events.filter(message="Fill price reported by the broker.").count() == 1


def test_an_order_filled_within_the_window_is_left_to_the_read_already_coming(team, paper_account):
    with fill_price_reads() as runs:
        services._enqueue_fill_prices_read([paper_account.pk])
        services._enqueue_fill_prices_read([paper_account.pk])
    # In production the first read runs after the window, when both orders are stored.
    assert runs == [[paper_account.pk]]


def test_while_the_cache_is_down_every_acknowledgement_still_gets_its_read(
    team, paper_account, redis_down
):
    with fill_price_reads() as runs:
        services._enqueue_fill_prices_read([paper_account.pk])
        services._enqueue_fill_prices_read([paper_account.pk])
    assert runs == [[paper_account.pk], [paper_account.pk]]


def test_one_accounts_failed_fill_price_read_leaves_the_other_accounts_reads_to_go_on(
    team, paper_account_factory, monkeypatch, caplog
):
    failing, fine = paper_account_factory("Acc 1"), paper_account_factory("Acc 2")
    orders = claimed_orders(team, [failing, fine])
    services._answers_record(filled_without_price(orders))  # no on-commit here: no read yet
    real_read = services.account_fill_prices_read

    def read(*, account_id):
        if account_id == failing.pk:
            raise RuntimeError("the adapter broke")
        return real_read(account_id=account_id)

    monkeypatch.setattr(services, "account_fill_prices_read", read)
    assert account_fill_prices_read_task.delay([failing.pk, fine.pk]).get() == 1

    for order in orders:
        order.refresh_from_db()
    assert [order.average_price for order in orders] == [None, Decimal("1500")]
    assert f"Reading the fill prices of account {failing.pk} failed" in caplog.text


@pytest.mark.parametrize(
    "earlier_message",
    [
        lambda order: fill_price_read_task.delay([order.pk]),  # order ids
        lambda order: account_fill_prices_read_task.delay(order.broker_account_id),  # one account
    ],
    ids=["order-ids", "one-account-id"],
)
def test_a_fill_price_message_of_an_earlier_release_reads_its_accounts_fill_prices(
    team, paper_account, earlier_message
):
    (order,) = claimed_orders(team, [paper_account])
    services._answers_record(filled_without_price([order]))  # no on-commit here: no read yet
    order.refresh_from_db()
    assert order.average_price is None

    earlier_message(order)

    order.refresh_from_db()
    assert order.average_price == Decimal("1500")


@pytest.mark.parametrize("count", [1, 3])  # one order has a statement of its own
def test_events_written_together_are_stored_each_with_its_own_values_and_id(
    team, paper_account_factory, count
):
    orders = claimed_orders(team, [paper_account_factory(f"Acc {i}") for i in range(count)])
    now = timezone.now()
    changes = [
        services._transition(
            order,
            to_status=S.OPEN,
            source="broker",
            now=now,
            message=f"Working {index}.",
            broker_status="open",
            data={"broker_order_id": f"B{index}", "price": Decimal("1.5")},
            broker_order_id=f"B{index}",
        )
        for index, order in enumerate(orders)
    ]
    services._transitions_write(changes, from_status=S.SUBMITTING)

    for index, (order, _, event) in enumerate(changes):
        stored = OrderEvent.objects.get(pk=event.pk)
        assert (stored.order_id, stored.from_status, stored.to_status, stored.message) == (
            order.pk,
            S.SUBMITTING,
            S.OPEN,
            f"Working {index}.",
        )
        assert stored.data == {"broker_order_id": f"B{index}", "price": "1.5"}
        assert stored.created_at == now
        assert Order.objects.filter(
            pk=order.pk, status=S.OPEN, broker_order_id=f"B{index}", broker_status="open"
        ).exists()


def test_a_change_of_several_orders_writes_none_when_one_of_them_changed_meanwhile(
    team, paper_account_factory
):
    orders = claimed_orders(team, [paper_account_factory(f"Acc {i}") for i in range(3)])
    Order.objects.filter(pk=orders[1].pk).update(status=S.UNKNOWN)  # another worker's change
    now = timezone.now()
    changes = [
        services._transition(order, to_status=S.OPEN, source="broker", now=now) for order in orders
    ]

    with pytest.raises(services.OrderChanged):
        services._transitions_write(changes, from_status=S.SUBMITTING)

    stored = dict(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("pk", "status"))
    assert stored == {
        orders[0].pk: S.SUBMITTING,
        orders[1].pk: S.UNKNOWN,
        orders[2].pk: S.SUBMITTING,
    }
    assert not OrderEvent.objects.filter(to_status=S.OPEN).exists()
    assert all(order.status == S.SUBMITTING for order in orders)  # the instances are unchanged too
