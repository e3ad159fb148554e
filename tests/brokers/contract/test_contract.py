"""The adapter contract, run over real HTTP against every broker's simulator on loopback."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from brokers.adapters import errors
from brokers.adapters.base import (
    BrokerOrder,
    Funds,
    OrderModification,
    OrderStatus,
    OrderType,
    SessionData,
)

from . import all_harnesses

HARNESSES = all_harnesses()

# In-process brokers (paper) keep their books in the database; declaring it here makes
# pytest-django set up the test database even when this file runs alone.
pytestmark = pytest.mark.django_db


@pytest.fixture(params=HARNESSES, ids=[h.code for h in HARNESSES], scope="module")
def started_harness(request):
    harness = request.param()
    harness.start()
    yield harness
    harness.stop()


@pytest.fixture
def harness(started_harness):
    started_harness.reset()
    return started_harness


@pytest.fixture
def adapter(harness):
    adapter = harness.logged_in_adapter()
    yield adapter
    adapter.close()


def needs_network(harness):
    if not harness.has_network:
        pytest.skip(f"{harness.code} runs in process: there is no network to fail")


def wait_for_status(adapter, broker_order_id, wanted, timeout=3.0) -> BrokerOrder:
    deadline = time.monotonic() + timeout
    while True:
        order = adapter.order_status(broker_order_id)
        if order.status in wanted or time.monotonic() > deadline:
            return order
        time.sleep(0.05)


# Sessions ------------------------------------------------------------------------------------


def test_login_gives_a_session_with_an_expiry(harness):
    adapter = harness.logged_in_adapter()
    assert isinstance(adapter.session, SessionData)
    assert adapter.session.access_token
    assert adapter.session.expires_at is not None
    assert adapter.session.access_token not in repr(adapter.session)


def test_bad_credentials_raise_invalid_credentials(harness):
    with pytest.raises(errors.InvalidCredentials) as caught:
        harness.failed_login()
    assert caught.value.message


def test_expired_session_raises_session_expired_or_relogs_in(harness, adapter):
    needs_network(harness)
    harness.expire_sessions()
    if harness.relogs_in_after_expiry:
        assert isinstance(adapter.funds(), Funds)
    else:
        with pytest.raises(errors.SessionExpired):
            adapter.funds()


def test_refresh_renews_the_session_where_supported(harness, adapter):
    if not adapter.supports("refresh_session"):
        with pytest.raises(errors.NotSupported):
            adapter.refresh()
        return
    before = adapter.session.access_token
    renewed = adapter.refresh()
    assert renewed.access_token and renewed.access_token != before
    adapter.session = renewed
    assert isinstance(adapter.funds(), Funds)


# Reads ---------------------------------------------------------------------------------------


def test_funds_are_decimal(harness, adapter):
    funds = adapter.funds()
    assert isinstance(funds.available, Decimal)
    assert isinstance(funds.total, Decimal)
    assert funds.available > 0
    assert funds.currency


def test_quotes_give_the_last_price(harness, adapter):
    exchange, symbol = harness.tradable
    [quote] = adapter.quotes([(exchange, symbol)])
    assert quote.symbol == symbol
    assert quote.last_price == harness.tradable_price


# Orders --------------------------------------------------------------------------------------


def test_market_order_fills_and_shows_everywhere(harness, adapter):
    request = harness.order_request()
    ack = adapter.place_order(request)
    assert ack.broker_order_id
    order = wait_for_status(adapter, ack.broker_order_id, {OrderStatus.FILLED})
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == request.quantity
    assert order.average_price == harness.tradable_price
    found = adapter.find_order(request.client_order_id)
    assert found is not None and found.broker_order_id == ack.broker_order_id
    assert any(o.broker_order_id == ack.broker_order_id for o in adapter.order_book())
    assert any(t.broker_order_id == ack.broker_order_id for t in adapter.trade_book())
    position = next(p for p in adapter.positions() if p.symbol == request.symbol)
    assert position.quantity == request.quantity


def test_limit_order_rests_until_the_price_crosses(harness, adapter):
    below = harness.tradable_price - 10
    ack = adapter.place_order(harness.order_request(order_type=OrderType.LIMIT, price=below))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.OPEN
    harness.set_price(below - 1)
    order = wait_for_status(adapter, ack.broker_order_id, {OrderStatus.FILLED})
    assert order.status == OrderStatus.FILLED


def test_open_order_can_be_modified_and_cancelled(harness, adapter):
    if not adapter.supports("modify_order"):
        pytest.skip(f"{harness.code} has no order modification")
    below = harness.tradable_price - 10
    ack = adapter.place_order(harness.order_request(order_type=OrderType.LIMIT, price=below))
    adapter.modify_order(ack.broker_order_id, OrderModification(price=below - 5))
    assert adapter.order_status(ack.broker_order_id).price == below - 5
    adapter.cancel_order(ack.broker_order_id)
    order = wait_for_status(adapter, ack.broker_order_id, {OrderStatus.CANCELLED})
    assert order.status == OrderStatus.CANCELLED


def test_cancelling_a_filled_order_is_refused(harness, adapter):
    ack = adapter.place_order(harness.order_request())
    wait_for_status(adapter, ack.broker_order_id, {OrderStatus.FILLED})
    with pytest.raises((errors.OrderRejected, errors.InputError)):
        adapter.cancel_order(ack.broker_order_id)


def test_unknown_order_id_raises_not_found(harness, adapter):
    with pytest.raises(errors.NotFound):
        adapter.order_status("999999999999")


def test_find_order_returns_none_for_an_order_never_sent(harness, adapter):
    assert adapter.find_order(adapter.new_client_order_id()) is None


def test_unknown_instrument_raises_invalid_instrument(harness, adapter):
    with pytest.raises(errors.InvalidInstrument):
        adapter.place_order(harness.unknown_instrument_request())


def test_order_beyond_funds_is_rejected_with_the_reason(harness, adapter):
    request = harness.unaffordable_request()
    try:
        ack = adapter.place_order(request)
    except errors.InsufficientFunds as exc:
        assert exc.message
        return
    order = wait_for_status(adapter, ack.broker_order_id, {OrderStatus.REJECTED})
    assert order.status == OrderStatus.REJECTED
    assert order.message


def test_client_order_id_fits_the_broker(harness):
    client_order_id = harness.adapter_class.new_client_order_id()
    assert len(client_order_id) <= harness.adapter_class.client_order_id_max_length
    assert client_order_id.isalnum()


# Failures ------------------------------------------------------------------------------------


def test_429_raises_rate_limited_with_retry_after(harness, adapter):
    needs_network(harness)
    harness.faults(rate_limit_burst=1, retry_after=2)
    with pytest.raises(errors.RateLimited) as caught:
        adapter.funds()
    assert caught.value.retry_after == Decimal(2)
    assert isinstance(adapter.funds(), Funds)  # the burst is over


def test_server_error_on_a_read_is_broker_unavailable(harness, adapter):
    needs_network(harness)
    harness.faults(error_rate=1.0, error_status=500)
    with pytest.raises(errors.BrokerUnavailable):
        adapter.funds()


def test_server_error_on_a_write_is_outcome_unknown(harness, adapter):
    needs_network(harness)
    harness.faults(error_rate=1.0, error_status=502)
    with pytest.raises(errors.OutcomeUnknown):
        adapter.place_order(harness.order_request())


def test_connection_refused_is_broker_unavailable(harness):
    needs_network(harness)
    adapter = harness.logged_in_adapter()
    adapter.base_url = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(errors.BrokerUnavailable):
        adapter.funds()
    with pytest.raises(errors.BrokerUnavailable):  # never sent, so not unknown
        adapter.place_order(harness.order_request())


def test_accept_then_hang_gives_outcome_unknown_and_reconciles(harness, adapter):
    needs_network(harness)
    adapter.read_timeout = 0.5
    harness.faults(hang_next_orders=1, hang_seconds=1.5)
    request = harness.order_request()
    with pytest.raises(errors.OutcomeUnknown):
        adapter.place_order(request)
    received = [o for o in harness.ledger() if o["client_tag"] == request.client_order_id]
    assert len(received) == 1
    found = adapter.find_order(request.client_order_id)
    assert found is not None
    assert found.status == OrderStatus.FILLED
