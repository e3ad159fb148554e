"""Placing and submitting orders through the services, against the paper broker."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from brokers.models import BrokerAccount, Instrument
from orders import risk, services
from orders.models import Order, OrderStatus

from .conftest import paper_orders, spec


def place(team, account, **overrides):
    return services.order_place(team=team, account=account, spec=spec(**overrides))


def test_place_writes_a_pending_order_and_queues_it_after_commit(
    team, paper_account, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        order, created = place(team, paper_account)
    assert created
    assert order.status == OrderStatus.PENDING
    assert paper_orders(paper_account) == []  # nothing sent inside the transaction
    assert len(callbacks) == 1
    assert list(order.events.values_list("from_status", "to_status")) == [("", "pending")]
    assert len(order.client_order_id) <= paper_account.adapter_class.client_order_id_max_length
    assert order.client_order_id.isalnum()


def read_with_trading_controls(account):
    """The account as the API's validation reads it: with its kill switches and limits."""
    return risk.with_trading_controls(BrokerAccount.objects.all()).get(pk=account.pk)


@pytest.mark.parametrize("read", ["plain", "with trading controls"])
def test_an_order_and_its_creation_event_are_stored_as_placed(
    team, paper_account, read, django_capture_on_commit_callbacks
):
    account = paper_account if read == "plain" else read_with_trading_controls(paper_account)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        order, created = services.order_place(
            team=team,
            account=account,
            spec=spec(order_type="LIMIT", price=Decimal("101.25"), validity="IOC"),
            idempotency_key="key-1",
        )
    assert created and len(callbacks) == 1
    stored = Order.objects.get(pk=order.pk)
    for field in Order._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(order, field.attname), field.name
    assert (stored.price, stored.status, stored.idempotency_key) == (
        Decimal("101.25"),
        OrderStatus.PENDING,
        "key-1",
    )
    event = stored.events.get()
    assert (event.from_status, event.to_status, event.source, event.message, event.data) == (
        "",
        "pending",
        "api",
        "Accepted.",
        {},
    )


def test_a_halted_account_read_with_its_controls_gets_a_rejected_order_never_queued(
    team, paper_account, django_capture_on_commit_callbacks
):
    services.trading_halt_set(team=team, account=paper_account, halted=True)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        order, _ = services.order_place(
            team=team, account=read_with_trading_controls(paper_account), spec=spec()
        )
    assert callbacks == []
    order.refresh_from_db()
    assert order.status == OrderStatus.REJECTED
    assert "halted on the account" in order.rejection_reason
    assert order.events.get().data == {"code": "trading_halted"}
    assert paper_orders(paper_account) == []


def test_on_postgresql_an_order_and_its_event_go_in_with_one_statement(team, paper_account):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no INSERT inside WITH: two INSERTs there")
    account = read_with_trading_controls(paper_account)
    with CaptureQueriesContext(connection) as queries:
        order, _ = services.order_place(team=team, account=account, spec=spec())
    writes = [q["sql"] for q in queries if "INSERT" in q["sql"]]
    assert len(writes) == 1
    assert '"orders_order"' in writes[0] and '"orders_orderevent"' in writes[0]
    assert order.events.get().order_id == order.pk


def test_commit_runs_the_submit_task_and_records_the_fill(
    team, paper_account, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        order, _ = place(team, paper_account)
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == Decimal(10)
    assert order.average_price == Decimal("1500")
    assert order.submitted_at is not None
    events = [(e.from_status, e.to_status) for e in order.events.all()]
    assert events == [
        ("", "pending"),
        ("pending", "submitting"),
        ("submitting", "filled"),
        ("filled", "filled"),
    ]  # the fill, then its price
    [at_broker] = paper_orders(paper_account)
    assert at_broker.client_order_id == order.client_order_id


def test_submit_twice_sends_once(team, paper_account):
    order, _ = place(team, paper_account)
    first = services.order_submit(order_id=order.pk)
    second = services.order_submit(order_id=order.pk)
    assert first.status == second.status == OrderStatus.FILLED
    assert len(paper_orders(paper_account)) == 1


def test_redelivered_task_on_submitting_order_finds_it_instead_of_resending(team, paper_account):
    # The first worker sent the order, then died before recording the answer.
    order, _ = place(team, paper_account)
    order_request = services.order_request(order)
    paper_account.adapter_class(credentials={}, account_id=paper_account.pk).place_order(
        order_request
    )
    Order.objects.filter(pk=order.pk).update(
        status=OrderStatus.SUBMITTING, submitted_at=timezone.now()
    )
    result = services.order_submit(order_id=order.pk)
    assert result.status == OrderStatus.FILLED
    assert len(paper_orders(paper_account)) == 1
    order.refresh_from_db()
    assert order.events.last().source == "sync"


def test_submitting_order_not_at_broker_waits_out_the_grace_period(team, paper_account):
    order, _ = place(team, paper_account)
    Order.objects.filter(pk=order.pk).update(
        status=OrderStatus.SUBMITTING, submitted_at=timezone.now()
    )
    result = services.order_submit(order_id=order.pk)
    assert result.status == OrderStatus.SUBMITTING
    assert result.reconcile_in and result.reconcile_in > 0
    assert paper_orders(paper_account) == []


def test_submitting_order_missing_after_grace_is_rejected_never_resent(team, paper_account):
    order, _ = place(team, paper_account)
    long_ago = timezone.now() - timedelta(seconds=services.reconcile_grace_seconds() + 5)
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.SUBMITTING, submitted_at=long_ago)
    result = services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert result.status == order.status == OrderStatus.REJECTED
    assert "Never reached the broker" in order.rejection_reason
    assert "not sent again" in order.rejection_reason
    assert paper_orders(paper_account) == []


def test_client_order_id_retry_with_same_spec_returns_the_first_order(team, paper_account):
    first, created = place(team, paper_account, client_order_id="abc123")
    again, created_again = place(team, paper_account, client_order_id="abc123")
    assert created and not created_again
    assert again.pk == first.pk
    assert Order.objects.count() == 1


def test_client_order_id_reused_for_another_order_is_refused(team, paper_account):
    place(team, paper_account, client_order_id="abc123")
    with pytest.raises(services.DuplicateClientOrderId):
        place(team, paper_account, client_order_id="abc123", quantity=Decimal(11))
    assert Order.objects.count() == 1


def test_same_client_order_id_on_two_accounts_is_two_orders(team, paper_account_factory):
    one, two = paper_account_factory("A"), paper_account_factory("B")
    first, _ = place(team, one, client_order_id="same1")
    second, _ = place(team, two, client_order_id="same1")
    assert first.pk != second.pk


def test_unknown_instrument_is_rejected_before_any_broker_call(team, paper_account):
    Instrument.objects.create(
        broker="paper", exchange="NSE", symbol="INFY", broker_symbol="INFY", broker_token="1"
    )
    order, _ = place(team, paper_account, symbol="NOSUCH")
    assert order.status == OrderStatus.REJECTED
    assert "NOSUCH" in order.rejection_reason
    assert services.order_submit(order_id=order.pk).status == OrderStatus.REJECTED
    assert paper_orders(paper_account) == []


def test_instrument_master_fills_broker_symbol_and_token(team, paper_account):
    Instrument.objects.create(
        broker="paper", exchange="NSE", symbol="INFY", broker_symbol="INFY-EQ", broker_token="408"
    )
    order, _ = place(team, paper_account)
    request = services.order_request(order)
    assert (request.broker_symbol, request.broker_token) == ("INFY-EQ", "408")


def test_broker_rejection_is_recorded_with_its_reason(team, paper_account):
    order, _ = place(team, paper_account, quantity=Decimal(10_000_000))
    result = services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert result.status == order.status == OrderStatus.REJECTED
    assert "Insufficient funds" in order.rejection_reason


def test_limit_order_rests_open_then_sync_records_the_fill(team, paper_account):
    from brokers.paper import paper_price_set

    order, _ = place(team, paper_account, order_type="LIMIT", price=Decimal("1400"))
    services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    assert order.status == OrderStatus.OPEN
    assert order.broker_order_id
    assert services.order_sync(account=paper_account) == 0  # nothing changed yet
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1390"))
    assert services.order_sync(account=paper_account) == 1
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == Decimal(10)
    assert order.average_price == Decimal("1390")
    assert order.events.last().source == "sync"


def test_cancel_pending_order_is_local_and_the_task_then_sends_nothing(team, paper_account):
    order, _ = place(team, paper_account)
    services.order_cancel(order=order)
    assert services.order_submit(order_id=order.pk).status == OrderStatus.CANCELLED
    assert paper_orders(paper_account) == []


def test_cancel_open_order_cancels_at_the_broker(team, paper_account):
    order, _ = place(team, paper_account, order_type="LIMIT", price=Decimal("1400"))
    services.order_submit(order_id=order.pk)
    services.order_cancel(order=Order.objects.get(pk=order.pk))
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert paper_orders(paper_account)[0].status == "CANCELLED"


def test_cancel_filled_order_is_a_conflict(team, paper_account):
    order, _ = place(team, paper_account)
    services.order_submit(order_id=order.pk)
    with pytest.raises(services.OrderConflict):
        services.order_cancel(order=Order.objects.get(pk=order.pk))


def test_modify_open_order_changes_it_at_the_broker(team, paper_account):
    order, _ = place(team, paper_account, order_type="LIMIT", price=Decimal("1400"))
    services.order_submit(order_id=order.pk)
    services.order_modify(order=Order.objects.get(pk=order.pk), changes={"price": Decimal("1450")})
    order.refresh_from_db()
    assert order.price == Decimal("1450")
    assert order.status == OrderStatus.OPEN
    assert paper_orders(paper_account)[0].price == Decimal("1450")
    assert "1400" in order.events.last().message


def test_pending_order_older_than_its_ttl_expires_unsent(team, paper_account, settings):
    settings.ORDERS_PENDING_TTL_SECONDS = 60
    order, _ = place(team, paper_account)
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(seconds=61))
    assert services.order_submit(order_id=order.pk).status == OrderStatus.EXPIRED
    assert paper_orders(paper_account) == []


def test_session_expired_rejects_with_login_reason(team, paper_account):
    from brokers.models import ConnectionState, PaperBook

    PaperBook.objects.filter(broker_account=paper_account).delete()  # the paper "session" is gone
    order, _ = place(team, paper_account)
    services.order_submit(order_id=order.pk)
    order.refresh_from_db()
    paper_account.refresh_from_db()
    assert order.status == OrderStatus.REJECTED
    assert order.rejection_reason == "Broker session expired: log in again."
    assert paper_account.connection_state == ConnectionState.NEEDS_LOGIN
