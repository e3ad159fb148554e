from decimal import Decimal

import pytest

from orders.models import (
    ALLOWED_TRANSITIONS,
    FINAL_STATUSES,
    EventSource,
    IllegalTransition,
    Order,
    OrderEvent,
    OrderStatus,
)
from orders.services import OrderChanged, order_transition

ALL = list(OrderStatus)
ILLEGAL = [(a, b) for a in ALL for b in ALL if b not in ALLOWED_TRANSITIONS[a]]
LEGAL = [(a, b) for a in ALL for b in ALL if b in ALLOWED_TRANSITIONS[a]]


@pytest.fixture
def make_order(team, paper_account):
    def make(status):
        return Order.objects.create(
            team=team,
            broker_account=paper_account,
            client_order_id=f"c{Order.objects.count()}",
            symbol="INFY",
            exchange="NSE",
            side="BUY",
            quantity=Decimal(1),
            order_type="MARKET",
            status=status,
        )

    return make


@pytest.mark.parametrize(("from_status", "to_status"), ILLEGAL)
def test_illegal_transition_raises_and_writes_nothing(make_order, from_status, to_status):
    order = make_order(from_status)
    with pytest.raises(IllegalTransition):
        order_transition(order=order, to_status=to_status, source=EventSource.ADMIN)
    order.refresh_from_db()
    assert order.status == from_status
    assert not OrderEvent.objects.filter(order=order).exists()


@pytest.mark.parametrize(("from_status", "to_status"), LEGAL)
def test_legal_transition_writes_status_and_one_event(make_order, from_status, to_status):
    order = make_order(from_status)
    order_transition(order=order, to_status=to_status, source=EventSource.TASK, message="m")
    order.refresh_from_db()
    assert order.status == to_status
    event = OrderEvent.objects.get(order=order)
    assert (event.from_status, event.to_status, event.source) == (
        from_status,
        to_status,
        EventSource.TASK,
    )


def test_final_statuses_allow_no_transition_at_all():
    for status in FINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] == frozenset()


def test_unknown_is_never_sent_again():
    assert OrderStatus.PENDING not in ALLOWED_TRANSITIONS[OrderStatus.UNKNOWN]
    assert OrderStatus.SUBMITTING not in ALLOWED_TRANSITIONS[OrderStatus.UNKNOWN]


def test_stale_status_is_refused_by_compare_and_set(make_order):
    order = make_order(OrderStatus.PENDING)
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.CANCELLED)
    with pytest.raises(OrderChanged):
        order_transition(order=order, to_status=OrderStatus.SUBMITTING, source=EventSource.TASK)
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert not OrderEvent.objects.filter(order=order).exists()
