"""Match-Trader adapter specifics, over real HTTP against the matchtrade simulator on loopback."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from brokers.adapters import errors
from brokers.adapters.base import OrderModification, OrderRequest, OrderStatus, OrderType, Side
from brokers.adapters.matchtrade import (
    EXCHANGE,
    MatchTraderAdapter,
    _history_order,
    operation_error,
    parse_instrument,
    session_expiry,
)
from brokers.simulators.base import RunningSimulator
from brokers.simulators.matchtrade import MatchTraderSimulator

from .contract.harness_matchtrade import Harness

SYSTEM = MatchTraderSimulator.default_seed["systems"][0]["uuid"]
CREDENTIALS = Harness().credentials()


def start(**seed_changes) -> RunningSimulator:
    seed = copy.deepcopy(MatchTraderSimulator.default_seed)
    seed.update(seed_changes)
    return RunningSimulator(MatchTraderSimulator(seed))


@pytest.fixture(scope="module")
def running():
    running = start()
    yield running
    running.stop()


@pytest.fixture
def sim(running):
    requests.post(f"{running.url}/__sim__/reset", timeout=5).raise_for_status()
    return running


def connect(sim, **credential_changes) -> MatchTraderAdapter:
    adapter = MatchTraderAdapter(
        credentials={**CREDENTIALS, **credential_changes}, base_url=sim.url
    )
    adapter.login()
    return adapter


def set_price(sim, symbol: str, price: str) -> None:
    requests.post(f"{sim.url}/__sim__/prices", json={symbol: price}, timeout=5).raise_for_status()


def ledger(sim) -> list[dict]:
    return requests.get(f"{sim.url}/__sim__/ledger", timeout=5).json()["orders"]


def order(adapter, **fields) -> OrderRequest:
    """A BUY MARKET order for 0.10 lot of gold unless ``fields`` say otherwise."""
    values = dict(
        symbol="XAUUSD",
        exchange=EXCHANGE,
        side=Side.BUY,
        quantity=Decimal("0.10"),
        order_type=OrderType.MARKET,
        client_order_id=adapter.new_client_order_id(),
    )
    values.update(fields)
    return OrderRequest(**values)


# Login and sessions ------------------------------------------------------------------------------


def test_login_keeps_tokens_refresh_cookie_and_the_chosen_trading_account(sim):
    adapter = connect(sim, trading_account_id="700101")
    session = adapter.session
    assert session.access_token.count(".") == 2  # the co-auth JWT
    assert session.refresh_token  # the rt cookie's value
    assert session.extra["trading_account_id"] == "700101"
    assert session.extra["trading_api_token"] == "tat-700101-8a4d6c0b2e9f"
    assert session.extra["system_uuid"] == SYSTEM
    assert session.extra["currency"] == "USD"
    assert session.extra["login_path"] == "/manager/co-login"
    assert adapter.funds().total == Decimal("5000.00")  # the second account's balance
    assert not adapter.http.cookies  # tokens never linger in the cookie jar
    assert session.refresh_token not in repr(session)


def test_login_without_a_trading_account_id_uses_the_first_account(sim):
    adapter = connect(sim, trading_account_id="")
    assert adapter.session.extra["trading_account_id"] == "700100"


def test_unknown_trading_account_id_is_invalid_credentials(sim):
    with pytest.raises(errors.InvalidCredentials, match="999"):
        connect(sim, trading_account_id="999")


def test_wrong_password_is_invalid_credentials_without_the_password_in_the_message(sim):
    with pytest.raises(errors.InvalidCredentials) as caught:
        connect(sim, password="Hunter2-not-it")
    assert caught.value.http_status == 401
    assert caught.value.broker_code == "INVALID_CREDENTIALS"
    assert "Hunter2" not in str(caught.value)


def test_wrong_broker_id_is_invalid_credentials(sim):
    with pytest.raises(errors.InvalidCredentials):
        connect(sim, broker_id="77")


def test_login_falls_back_to_mtr_login_where_co_login_is_missing():
    running = start(serve_co_login=False)
    try:
        adapter = connect(running)
        assert adapter.session.extra["login_path"] == "/manager/mtr-login"
        assert adapter.session.extra["trading_account_id"] == "700100"  # from tradingAccounts
        assert adapter.funds().total == Decimal("100000.00")
    finally:
        running.stop()


def test_session_expiry_is_the_tokens_exp_claim(sim):
    before = datetime.now(UTC)
    adapter = connect(sim)
    expires_at = adapter.session.expires_at
    assert expires_at.tzinfo is not None
    # The simulator's token lives 900 s; exp has whole-second precision.
    assert before + timedelta(seconds=898) <= expires_at <= before + timedelta(seconds=902)


def test_session_expiry_falls_back_to_fifteen_minutes_for_an_opaque_token():
    issued = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert session_expiry("opaque-token", issued) == issued + timedelta(minutes=15)
    assert session_expiry("a.!!!.c", issued) == issued + timedelta(minutes=15)


def test_refresh_sends_the_rt_cookie_and_renews_the_co_auth_token(sim):
    adapter = connect(sim)
    old = adapter.session.access_token
    renewed = adapter.refresh()
    assert renewed.access_token != old
    assert renewed.refresh_token == adapter.session.refresh_token
    assert renewed.extra["trading_api_token"] == "tat-700100-3f9c2b7e5d1a"
    assert adapter.session is renewed
    assert adapter.funds().currency == "USD"


def test_refresh_with_a_refused_cookie_is_session_expired(sim):
    adapter = connect(sim)
    adapter.session.refresh_token = "forged"
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.refresh()
    assert caught.value.http_status == 401


def test_expired_token_is_session_expired_with_the_platforms_code(sim):
    adapter = connect(sim)
    requests.post(f"{sim.url}/__sim__/expire-sessions", timeout=5).raise_for_status()
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.positions()
    assert caught.value.broker_code == "UNAUTHORIZED"
    with pytest.raises(errors.SessionExpired):  # the refresh cookie died with the session
        adapter.refresh()


def test_logout_and_holdings_are_not_supported(sim):
    adapter = connect(sim)
    with pytest.raises(errors.NotSupported):
        adapter.logout()
    with pytest.raises(errors.NotSupported):
        adapter.holdings()
    assert not adapter.supports("holdings")


# Simulator checks: headers and envelopes ---------------------------------------------------------


def test_trading_call_needs_both_the_auth_trading_api_header_and_the_co_auth_cookie(sim):
    adapter = connect(sim)
    url = f"{sim.url}/mtr-api/{SYSTEM}/balance"
    token = adapter.session.extra["trading_api_token"]
    cookie = f"co-auth={adapter.session.access_token}"
    assert requests.get(url, headers={"Auth-trading-api": token, "Cookie": cookie}).ok
    for headers in ({"Cookie": cookie}, {"Auth-trading-api": token}, {}):
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["status"] == "UNAUTHORIZED"
        assert response.json()["errorMessage"]
    wrong = requests.get(url, headers={"Auth-trading-api": "tat-nope", "Cookie": cookie})
    assert wrong.status_code == 401


def test_trading_token_of_another_system_is_refused(sim):
    adapter = connect(sim)
    response = requests.get(
        f"{sim.url}/mtr-api/00000000-other-system/balance",
        headers={
            "Auth-trading-api": adapter.session.extra["trading_api_token"],
            "Cookie": f"co-auth={adapter.session.access_token}",
        },
        timeout=5,
    )
    assert response.status_code == 401


def test_throttled_request_gets_429_in_the_platform_envelope(sim):
    requests.post(f"{sim.url}/__sim__/faults", json={"rate_limit_burst": 1}, timeout=5)
    response = requests.post(f"{sim.url}/manager/co-login", json={}, timeout=5)
    assert response.status_code == 429
    assert response.json()["status"] == "TOO_MANY_REQUESTS"


# Funds, positions, quotes, instruments -----------------------------------------------------------


def test_funds_parse_string_numbers_exactly(sim):
    adapter = connect(sim)
    adapter.place_order(order(adapter, quantity=Decimal("0.10")))  # 0.1 lot gold at 2350
    raw = requests.get(
        f"{sim.url}/mtr-api/{SYSTEM}/balance",
        headers={
            "Auth-trading-api": adapter.session.extra["trading_api_token"],
            "Cookie": f"co-auth={adapter.session.access_token}",
        },
        timeout=5,
    ).json()
    assert isinstance(raw["balance"], str) and isinstance(raw["margin"], str)
    funds = adapter.funds()
    assert funds.total == Decimal("100000.00")
    assert funds.used_margin == Decimal("235.00")  # 0.1 * 100 oz * 2350 / leverage 100
    assert funds.equity == Decimal("100000.00")
    assert funds.available == Decimal("99765.00")
    assert all(isinstance(v, Decimal) for v in (funds.total, funds.used_margin, funds.available))


def test_sell_position_has_negative_quantity_and_its_own_id(sim):
    adapter = connect(sim)
    buy = adapter.place_order(order(adapter, side=Side.BUY, quantity=Decimal("0.20")))
    sell = adapter.place_order(order(adapter, side=Side.SELL, quantity=Decimal("0.05")))
    by_id = {p.position_id: p for p in adapter.positions()}
    assert by_id[buy.broker_order_id].quantity == Decimal("0.20")
    assert by_id[sell.broker_order_id].quantity == Decimal("-0.05")
    assert by_id[sell.broker_order_id].exchange == EXCHANGE


def test_close_position_closes_it_and_realises_the_profit(sim):
    adapter = connect(sim)
    ack = adapter.place_order(order(adapter, quantity=Decimal("0.10")))
    set_price(sim, "XAUUSD", "2360.00")
    close = adapter.close_position(ack.broker_order_id)
    assert close.status == OrderStatus.FILLED and close.broker_order_id
    assert adapter.positions() == []
    assert adapter.funds().total == Decimal("100100.00")  # 10 USD/oz * 10 oz
    closing = [t for t in adapter.trade_book() if t.broker_order_id == close.broker_order_id]
    assert [(t.side, t.quantity, t.price) for t in closing] == [
        (Side.SELL, Decimal("0.10"), Decimal("2360.00"))
    ]


def test_close_position_can_close_part_of_a_position(sim):
    adapter = connect(sim)
    ack = adapter.place_order(order(adapter, quantity=Decimal("0.30")))
    adapter.close_position(ack.broker_order_id, volume=Decimal("0.10"))
    [position] = adapter.positions()
    assert position.quantity == Decimal("0.20")
    fills = {t.broker_order_id: t.quantity for t in adapter.trade_book()}
    assert fills[ack.broker_order_id] == Decimal("0.30")  # the opening fill, whole
    assert sorted(fills.values()) == [Decimal("0.10"), Decimal("0.30")]


def test_margin_and_profit_follow_the_positions_as_they_open_close_and_reprice(sim):
    adapter = connect(sim)
    first = adapter.place_order(order(adapter, quantity=Decimal("0.30")))
    set_price(sim, "XAUUSD", "2360.00")
    sell = adapter.place_order(order(adapter, side=Side.SELL, quantity=Decimal("0.10")))
    set_price(sim, "XAUUSD", "2340.50")
    adapter.place_order(order(adapter, quantity=Decimal("0.20")))
    adapter.close_position(first.broker_order_id, volume=Decimal("0.10"))
    adapter.close_position(sell.broker_order_id)
    set_price(sim, "XAUUSD", "2371.25")

    positions = adapter.positions()
    assert sorted(p.quantity for p in positions) == [Decimal("0.20"), Decimal("0.20")]
    # The positions one by one: 100 oz a lot, leverage 100.
    margin = sum(abs(p.quantity) * 100 * p.average_price / 100 for p in positions)
    profit = sum(p.pnl for p in positions)
    funds = adapter.funds()
    assert funds.used_margin == margin == Decimal("938.10")  # (2350 + 2340.50) * 20 oz / 100
    assert profit == Decimal("1040.00")  # (2371.25 - 2350 + 2371.25 - 2340.50) * 20 oz
    assert funds.equity == funds.total + profit
    assert funds.available == funds.equity - margin


def test_closing_an_unknown_position_is_not_found(sim):
    adapter = connect(sim)
    with pytest.raises(errors.NotFound):
        adapter.close_position("123456")
    with pytest.raises(errors.NotFound) as caught:  # the platform's own answer
        adapter.close_position("123456", instrument="XAUUSD", side=Side.BUY, volume=Decimal(1))
    assert caught.value.broker_code == "POSITION_NOT_FOUND"


def test_quotes_report_bid_ask_and_their_mid_as_last_price(sim):
    adapter = connect(sim)
    quotes = {q.symbol: q for q in adapter.quotes([(EXCHANGE, "EURUSD"), (EXCHANGE, "XAUUSD")])}
    assert quotes["EURUSD"].bid == Decimal("1.08495")
    assert quotes["EURUSD"].ask == Decimal("1.08505")
    assert quotes["EURUSD"].last_price == Decimal("1.085")
    assert quotes["XAUUSD"].last_price == Decimal("2350")


def test_instrument_master_parses_effective_instruments(sim):
    adapter = connect(sim)
    by_symbol = {record.symbol: record for record in adapter.instrument_master()}
    assert set(by_symbol) == {"EURUSD", "GBPUSD", "XAUUSD"}
    gold = by_symbol["XAUUSD"]
    assert (gold.exchange, gold.broker_symbol, gold.instrument_type) == (
        EXCHANGE,
        "XAUUSD",
        "COMMODITY",
    )
    assert gold.tick_size == Decimal("0.01")
    assert gold.lot_size == Decimal("0.01")
    assert by_symbol["EURUSD"].tick_size == Decimal("0.00001")
    assert by_symbol["EURUSD"].name == "Euro vs US Dollar"


def test_parse_instrument_defaults_when_fields_are_missing():
    record = parse_instrument({"symbol": "US30"})
    assert (record.symbol, record.lot_size, record.tick_size) == (
        "US30",
        Decimal("0.01"),
        Decimal("0.00001"),
    )


# Orders ------------------------------------------------------------------------------------------


def test_volume_is_sent_in_lots_with_exact_digits_and_the_client_id_as_comment(sim):
    adapter = connect(sim)
    request = order(adapter, quantity=Decimal("0.10"))
    ack = adapter.place_order(request)
    [received] = ledger(sim)
    assert received["volume"] == "0.10"  # a JSON number with its digits, never via float
    assert received["client_tag"] == request.client_order_id
    assert received["broker_order_id"] == ack.broker_order_id
    assert adapter.find_order(request.client_order_id).broker_order_id == ack.broker_order_id


@pytest.mark.parametrize(
    ("symbol", "quantity", "error_class", "native_code"),
    [
        ("NOSUCH", Decimal("0.10"), errors.InvalidInstrument, "INSTRUMENT_NOT_FOUND"),
        ("XAUUSD", Decimal("0.001"), errors.InputError, "INVALID_VOLUME"),
        ("XAUUSD", Decimal("100"), errors.InsufficientFunds, "NOT_ENOUGH_MONEY"),
    ],
)
def test_refused_operations_raise_typed_errors_with_the_native_code(
    sim, symbol, quantity, error_class, native_code
):
    adapter = connect(sim)
    with pytest.raises(error_class) as caught:
        adapter.place_order(order(adapter, symbol=symbol, quantity=quantity))
    assert caught.value.broker_code == native_code
    assert caught.value.message


@pytest.mark.parametrize(
    ("body", "error_class"),
    [
        ({"status": "REJECTED", "nativeCode": "NOT_ENOUGH_MONEY"}, errors.InsufficientFunds),
        ({"status": "REJECTED", "nativeCode": "NO_MONEY"}, errors.InsufficientFunds),
        ({"status": "REJECTED", "nativeCode": "INSTRUMENT_NOT_FOUND"}, errors.InvalidInstrument),
        ({"status": "REJECTED", "nativeCode": "INVALID_SYMBOL"}, errors.InvalidInstrument),
        ({"status": "REJECTED", "nativeCode": "INVALID_VOLUME"}, errors.InputError),
        ({"status": "REJECTED", "nativeCode": "INVALID_PRICE"}, errors.InputError),
        ({"status": "REJECTED", "nativeCode": "INVALID_ORDER_TYPE"}, errors.InputError),
        ({"status": "REJECTED", "nativeCode": "INVALID_REQUEST"}, errors.InputError),
        ({"status": "REJECTED", "nativeCode": "ORDER_NOT_FOUND"}, errors.NotFound),
        ({"status": "REJECTED", "nativeCode": "POSITION_NOT_FOUND"}, errors.NotFound),
        ({"status": "REJECTED", "nativeCode": "ORDER_NOT_ACTIVE"}, errors.OrderRejected),
        ({"status": "REJECTED", "nativeCode": "MARKET_CLOSED"}, errors.OrderRejected),
        ({"status": "REJECTED", "errorMessage": "Not enough money"}, errors.InsufficientFunds),
        ({"status": "REJECTED", "errorMessage": "Unknown instrument XX"}, errors.InvalidInstrument),
        ({"status": "REJECTED", "errorMessage": "Order not found"}, errors.NotFound),
        ({"status": "REJECTED", "errorMessage": "Trading disabled"}, errors.OrderRejected),
    ],
)
def test_error_table_maps_native_codes_then_messages(body, error_class):
    error = operation_error(body)
    assert type(error) is error_class
    assert error.broker_code and error.message


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("FILLED", OrderStatus.FILLED),
        ("EXECUTED", OrderStatus.FILLED),
        ("CANCELLED", OrderStatus.CANCELLED),
        ("CANCELED", OrderStatus.CANCELLED),
        ("REJECTED", OrderStatus.REJECTED),
        ("EXPIRED", OrderStatus.EXPIRED),
        ("ACTIVE", OrderStatus.OPEN),
        ("SOMETHING_NEW", OrderStatus.PENDING),
    ],
)
def test_history_status_vocabulary(raw, status):
    row = {"id": "1", "symbol": "EURUSD", "side": "SELL", "volume": "1", "type": "LIMIT"}
    parsed = _history_order({**row, "status": raw})
    assert (parsed.status, parsed.raw_status, parsed.side) == (status, raw, Side.SELL)


def test_stop_order_waits_for_its_trigger_then_fills(sim):
    adapter = connect(sim)
    ack = adapter.place_order(
        order(adapter, order_type=OrderType.STOP, trigger_price=Decimal("2360.00"))
    )
    resting = adapter.order_status(ack.broker_order_id)
    assert (resting.status, resting.trigger_price, resting.price) == (
        OrderStatus.OPEN,
        Decimal("2360.00"),
        None,
    )
    set_price(sim, "XAUUSD", "2361.00")
    filled = adapter.order_status(ack.broker_order_id)
    assert filled.status == OrderStatus.FILLED and filled.raw_status == "FILLED"
    assert [p.position_id for p in adapter.positions()] == [ack.broker_order_id]


def test_modify_changes_volume_but_refuses_a_type_change(sim):
    adapter = connect(sim)
    ack = adapter.place_order(order(adapter, order_type=OrderType.LIMIT, price=Decimal("2300.00")))
    adapter.modify_order(ack.broker_order_id, OrderModification(quantity=Decimal("0.50")))
    changed = adapter.order_status(ack.broker_order_id)
    assert (changed.quantity, changed.price) == (Decimal("0.50"), Decimal("2300.00"))
    with pytest.raises(errors.InputError):
        adapter.modify_order(ack.broker_order_id, OrderModification(order_type=OrderType.STOP))


def test_cancelled_order_shows_cancelled_and_cannot_be_cancelled_again(sim):
    adapter = connect(sim)
    request = order(adapter, order_type=OrderType.LIMIT, price=Decimal("2300.00"))
    ack = adapter.place_order(request)
    adapter.cancel_order(ack.broker_order_id)
    cancelled = adapter.find_order(request.client_order_id)
    assert (cancelled.status, cancelled.raw_status) == (OrderStatus.CANCELLED, "CANCELLED")
    with pytest.raises(errors.OrderRejected):
        adapter.cancel_order(ack.broker_order_id)


def test_cancelling_an_unknown_order_is_not_found(sim):
    adapter = connect(sim)
    with pytest.raises(errors.NotFound):
        adapter.cancel_order("424242")


def test_simulator_refuses_to_cancel_an_order_that_is_no_longer_active(sim):
    adapter = connect(sim)
    ack = adapter.place_order(order(adapter))
    response = requests.post(
        f"{sim.url}/mtr-api/{SYSTEM}/pending-order/cancel",
        json={"id": ack.broker_order_id, "instrument": "XAUUSD", "orderSide": "BUY"},
        headers={
            "Auth-trading-api": adapter.session.extra["trading_api_token"],
            "Cookie": f"co-auth={adapter.session.access_token}",
        },
        timeout=5,
    )
    assert response.json()["status"] == "REJECTED"
    assert response.json()["nativeCode"] == "ORDER_NOT_ACTIVE"


def test_without_an_order_history_filled_orders_are_read_from_positions():
    running = start(serve_order_history=False)
    try:
        adapter = connect(running)
        request = order(adapter)
        ack = adapter.place_order(request)
        filled = adapter.order_status(ack.broker_order_id)
        assert (filled.status, filled.filled_quantity) == (OrderStatus.FILLED, request.quantity)
        assert filled.average_price == Decimal("2350.00")
        adapter.close_position(ack.broker_order_id)
        # Closed, it is still found through closed-positions, by its comment too.
        assert adapter.find_order(request.client_order_id).broker_order_id == ack.broker_order_id
        with pytest.raises(errors.NotFound):
            adapter.order_status("999999")
    finally:
        running.stop()
