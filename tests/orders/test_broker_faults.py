"""Submission under broker faults, over real HTTP against the DXtrade simulator's ledger."""

from datetime import timedelta

from django.utils import timezone

from orders import services
from orders.models import Order, OrderStatus


def place(team, account, dxtrade, **overrides):
    order, _ = services.order_place(team=team, account=account, spec=dxtrade.spec(**overrides))
    return order


def test_accept_then_hang_goes_unknown_then_reconciles_exactly_once(
    team, dxtrade_account, dxtrade, settings
):
    settings.BROKER_READ_TIMEOUT = 0.5
    dxtrade.faults(hang_next_orders=1, hang_seconds=1.5)
    order = place(team, dxtrade_account, dxtrade)

    result = services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert result.status == order.status == OrderStatus.UNKNOWN
    assert result.reconcile_in is not None
    assert len(dxtrade.ledger_for(order.client_order_id)) == 1  # it did reach the broker

    # A redelivered submit task and the reconcile task both only look the order up.
    services.order_submit(order_id=order.pk)
    result = services.order_reconcile(order_id=order.pk)
    order.refresh_from_db()
    assert order.status in (OrderStatus.OPEN, OrderStatus.FILLED)
    assert result.settled
    assert order.broker_order_id
    assert len(dxtrade.ledger_for(order.client_order_id)) == 1
    sources = [e.source for e in order.events.all()]
    assert sources[-1] == "sync"


def test_unknown_order_missing_after_grace_is_rejected_and_not_resent(
    team, dxtrade_account, dxtrade
):
    # A 500 on the place request: the broker may or may not have taken it.
    dxtrade.faults(error_rate=1.0, error_status=500)
    order = place(team, dxtrade_account, dxtrade)
    assert services.order_submit(order_id=order.pk).status == OrderStatus.UNKNOWN
    dxtrade.faults(error_rate=0.0)

    result = services.order_reconcile(order_id=order.pk)
    assert result.status == OrderStatus.UNKNOWN  # too early to conclude anything
    assert result.reconcile_in > 0

    long_ago = timezone.now() - timedelta(seconds=services.reconcile_grace_seconds() + 1)
    Order.objects.filter(pk=order.pk).update(submitted_at=long_ago)
    services.order_reconcile(order_id=order.pk)
    order.refresh_from_db()
    assert order.status == OrderStatus.REJECTED
    assert "Never reached the broker" in order.rejection_reason
    assert dxtrade.ledger_for(order.client_order_id) == []


def test_broker_unavailable_goes_back_to_pending_then_is_sent_once(team, dxtrade_account, dxtrade):
    dxtrade.faults(error_rate=1.0, error_status=503)
    order = place(team, dxtrade_account, dxtrade)
    result = services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert result.status == order.status == OrderStatus.PENDING
    assert result.retry_in is not None and 0 < result.retry_in <= 60
    assert dxtrade.ledger() == []

    dxtrade.faults(error_rate=0.0)
    result = services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert order.status in (OrderStatus.OPEN, OrderStatus.FILLED)
    assert order.submit_attempts == 2
    assert len(dxtrade.ledger_for(order.client_order_id)) == 1
    assert [e.to_status for e in order.events.all()] == [
        "pending",
        "submitting",
        "pending",
        "submitting",
        order.status,
    ]


def test_429_storm_backs_off_by_retry_after_and_places_each_order_once(
    team, dxtrade_account, dxtrade
):
    orders = [place(team, dxtrade_account, dxtrade) for _ in range(3)]
    dxtrade.faults(rate_limit_burst=4, retry_after=7)
    retries = []
    for _ in range(10):
        pending = [o for o in orders if Order.objects.get(pk=o.pk).status == OrderStatus.PENDING]
        if not pending:
            break
        for order in pending:
            result = services.order_submit(order_id=order.pk)
            if result.retry_in is not None:
                retries.append(result.retry_in)
    assert retries and all(delay == 7 for delay in retries)  # the broker's Retry-After
    for order in orders:
        order.refresh_from_db()
        assert order.status in (OrderStatus.OPEN, OrderStatus.FILLED)
        assert len(dxtrade.ledger_for(order.client_order_id)) == 1
    assert len(dxtrade.ledger()) == 3


def test_sync_follows_a_resting_order_to_cancelled_at_the_broker(team, dxtrade_account, dxtrade):
    order = place(team, dxtrade_account, dxtrade, order_type="LIMIT", price="100.00")
    services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert order.status == OrderStatus.OPEN
    services.order_cancel(order=order)
    services.order_sync(account=dxtrade_account)
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
