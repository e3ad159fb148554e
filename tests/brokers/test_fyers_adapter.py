"""Fyers-specific behaviour, over real HTTP against the Fyers simulator on loopback."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from brokers.adapters import errors
from brokers.adapters.base import (
    OPERATIONS,
    OrderModification,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from brokers.adapters.fyers import (
    IST,
    FyersAdapter,
    access_token_expiry,
    error_for,
    fyers_symbol,
    normalize_status,
    parse_symbol_master,
    split_fyers_symbol,
)
from brokers.simulators.base import RunningSimulator
from brokers.simulators.fyers import FyersSimulator
from tests.brokers.contract.harness_fyers import APP, Harness


@pytest.fixture(scope="module")
def harness():
    harness = Harness()
    harness.running = RunningSimulator(FyersSimulator())
    yield harness
    harness.stop()


@pytest.fixture
def fresh(harness):
    harness.reset()
    return harness


@pytest.fixture
def adapter(fresh):
    adapter = fresh.logged_in_adapter()
    yield adapter
    adapter.close()


def raw_get(harness, path: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{harness.url}{path}", headers=headers, timeout=5)


# Login and session ---------------------------------------------------------------------------


def test_app_id_hash_is_sha256_hex_of_client_id_colon_secret(fresh):
    adapter = fresh.adapter()
    expected = hashlib.sha256(b"SIMAPP1234-100:SIMSECRET9").hexdigest()
    assert adapter.app_id_hash() == expected


def test_login_url_carries_app_id_redirect_state_and_response_type_code(fresh):
    url = fresh.adapter().login_url(state="abc123", redirect_url=APP["redirect_uri"])
    assert url.startswith(f"{fresh.url}/api/v3/generate-authcode?")
    assert "client_id=SIMAPP1234-100" in url
    assert "response_type=code" in url
    assert "state=abc123" in url
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fbrokers%2Fcallback%2Ffyers%2F" in url


def test_login_page_refuses_a_redirect_uri_the_app_did_not_register(fresh):
    url = fresh.adapter().login_url(state="s", redirect_url="https://evil.example/cb")
    response = requests.get(url, timeout=5)
    assert response.status_code == 400
    assert response.json()["s"] == "error"


def test_redirect_returns_state_and_auth_code_not_in_the_code_field(fresh):
    params = fresh.authorize_in_browser(fresh.adapter(), state="round-trip")
    assert params["s"] == "ok"
    assert params["code"] == "200"
    assert params["state"] == "round-trip"
    assert params["auth_code"]


def test_login_sets_expiry_at_next_midnight_ist_and_refresh_expiry_in_extra(fresh):
    before = datetime.now(IST)
    adapter = fresh.logged_in_adapter()
    session = adapter.session
    assert session.expires_at == access_token_expiry(session.issued_at)
    assert session.expires_at > before
    assert session.expires_at.astimezone(IST).time() == datetime.min.time()
    refresh_expiry = datetime.fromisoformat(session.extra["refresh_token_expires_at"])
    assert refresh_expiry - session.issued_at == timedelta(days=15)
    assert session.refresh_token not in repr(session)


@pytest.mark.parametrize(
    ("issued_at", "expected"),
    [
        (datetime(2025, 1, 7, 9, 0, tzinfo=IST), datetime(2025, 1, 8, 0, 0, tzinfo=IST)),
        (datetime(2025, 1, 7, 23, 59, tzinfo=IST), datetime(2025, 1, 8, 0, 0, tzinfo=IST)),
        # 20:00 UTC is already 01:30 the next day in India.
        (datetime(2025, 1, 7, 20, 0, tzinfo=UTC), datetime(2025, 1, 9, 0, 0, tzinfo=IST)),
    ],
)
def test_access_token_expires_at_the_next_midnight_ist(issued_at, expected):
    assert access_token_expiry(issued_at) == expected


def test_a_used_auth_code_is_refused_as_invalid_credentials(fresh):
    adapter = fresh.adapter()
    params = fresh.authorize_in_browser(adapter)
    adapter.complete_login(params)
    with pytest.raises(errors.InvalidCredentials) as caught:
        fresh.adapter().complete_login(params)
    assert caught.value.broker_code == "-437"


def test_wrong_secret_is_refused_as_invalid_credentials_with_the_broker_code(fresh):
    params = fresh.authorize_in_browser(fresh.adapter())
    with pytest.raises(errors.InvalidCredentials) as caught:
        fresh.adapter(fresh.bad_credentials()).complete_login(params)
    assert caught.value.broker_code == "-371"
    assert "WRONGSECRET" not in str(caught.value)


def test_a_cancelled_login_redirect_raises_invalid_credentials(fresh):
    with pytest.raises(errors.InvalidCredentials):
        fresh.adapter().complete_login({"s": "error", "code": "-1", "message": "user cancelled"})


def test_refresh_keeps_the_refresh_token_and_works_after_the_access_token_expired(adapter, fresh):
    old_refresh = adapter.session.refresh_token
    fresh.expire_sessions()
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.funds()
    assert caught.value.broker_code == "-8"
    renewed = adapter.refresh()
    assert renewed.refresh_token == old_refresh
    assert adapter.funds().available > 0


def test_refresh_with_a_wrong_pin_is_invalid_credentials(fresh):
    adapter = fresh.adapter({**fresh.credentials(), "pin": "0000"})
    adapter.complete_login(fresh.authorize_in_browser(adapter))
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.refresh()
    assert caught.value.broker_code == "-501"


def test_refresh_with_an_unknown_refresh_token_is_session_expired(adapter):
    adapter.session.refresh_token = "not-a-refresh-token"
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.refresh()
    assert caught.value.broker_code == "-501"


def test_refresh_without_a_stored_pin_is_not_supported(fresh):
    credentials = {k: v for k, v in fresh.credentials().items() if k != "pin"}
    adapter = fresh.adapter(credentials)
    adapter.complete_login(fresh.authorize_in_browser(adapter))
    with pytest.raises(errors.NotSupported):
        adapter.refresh()


def test_logout_revokes_the_access_token(adapter):
    adapter.logout()
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.funds()
    assert caught.value.broker_code == "-15"


# Headers and the simulator's own checks --------------------------------------------------------


def test_adapter_sends_client_id_colon_token_without_bearer_and_version_3(adapter):
    headers = adapter._headers()
    assert headers["Authorization"] == f"{APP['client_id']}:{adapter.session.access_token}"
    assert headers["version"] == "3"
    assert headers["Content-Type"] == "application/json"


def test_simulator_answers_missing_authorization_with_minus_16_and_401(fresh):
    response = raw_get(fresh, "/api/v3/funds", {"version": "3"})
    assert response.status_code == 401
    assert response.json() == {
        "s": "error",
        "code": -16,
        "message": "Could not authenticate the user",
    }


def test_simulator_refuses_a_bearer_token_with_minus_15(adapter, fresh):
    headers = {"Authorization": f"Bearer {adapter.session.access_token}", "version": "3"}
    response = raw_get(fresh, "/api/v3/funds", headers)
    assert response.status_code == 401
    assert response.json()["code"] in (-15, -352)


def test_simulator_refuses_a_request_without_the_version_header(adapter, fresh):
    headers = {"Authorization": f"{APP['client_id']}:{adapter.session.access_token}"}
    response = raw_get(fresh, "/api/v3/funds", headers)
    assert response.status_code == 400
    assert response.json()["code"] == -50


def test_simulator_rate_limit_answer_is_fyers_envelope_with_retry_after(fresh):
    fresh.faults(rate_limit_burst=1, retry_after=3)
    response = raw_get(fresh, "/api/v3/funds", {})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["code"] == -429


# Error code -> typed error ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        (-8, "Your token has expired", 401, errors.SessionExpired),
        (-15, "Invalid token", 401, errors.SessionExpired),
        (-16, "Could not authenticate the user", 401, errors.SessionExpired),
        (-17, "Token is Invalid or Expired", 401, errors.SessionExpired),
        (-50, "Invalid input", 400, errors.InputError),
        (-51, "Invalid order id", 400, errors.NotFound),
        (-99, "Order cannot be changed: order is filled", 400, errors.OrderRejected),
        (-99, "RED:Margin Shortfall:INR 5.00 Available:INR 1.00", 400, errors.InsufficientFunds),
        (-99, "Insufficient funds", 400, errors.InsufficientFunds),
        (-300, "Invalid symbol provided", 400, errors.InvalidInstrument),
        (-352, "Invalid App ID", 401, errors.InvalidCredentials),
        (-371, "Please provide valid appIdHash", 400, errors.InvalidCredentials),
        (-437, "invalid auth code", 400, errors.InvalidCredentials),
        (-441, "auth code is required", 400, errors.InputError),
        (-442, "Please provide valid grant_type", 400, errors.InputError),
        (-501, "Invalid refresh token", 400, errors.SessionExpired),
        (-501, "Invalid pin", 400, errors.InvalidCredentials),
        (-9999, "something new", 401, errors.SessionExpired),
        (-9999, "something new", 400, errors.InputError),
        (-9999, "something new", 418, errors.BrokerError),
    ],
)
def test_error_codes_map_to_typed_errors_keeping_code_and_message(code, message, status, expected):
    error = error_for({"s": "error", "code": code, "message": message}, status)
    assert type(error) is expected
    assert error.broker_code == str(code)
    assert error.message == message
    assert error.http_status == status


def test_minus_429_carries_retry_after():
    error = error_for({"s": "error", "code": -429, "message": "limit"}, 429, "2")
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == Decimal(2)


def test_unknown_symbol_over_http_is_invalid_instrument_minus_300(adapter, fresh):
    with pytest.raises(errors.InvalidInstrument) as caught:
        adapter.place_order(fresh.order_request(symbol="NOSUCHSYMBOL"))
    assert caught.value.broker_code == "-300"


def test_unaffordable_order_is_insufficient_funds_and_stays_in_the_book_as_rejected(adapter, fresh):
    request = fresh.unaffordable_request()
    with pytest.raises(errors.InsufficientFunds) as caught:
        adapter.place_order(request)
    assert caught.value.broker_code == "-99"
    assert "Margin Shortfall" in caught.value.message
    order = adapter.find_order(request.client_order_id)
    assert order is not None and order.status == OrderStatus.REJECTED


def test_cancelling_a_filled_order_is_order_rejected_minus_99(adapter, fresh):
    ack = adapter.place_order(fresh.order_request())
    with pytest.raises(errors.OrderRejected) as caught:
        adapter.cancel_order(ack.broker_order_id)
    assert caught.value.broker_code == "-99"


def test_unknown_order_id_is_not_found_minus_51(adapter):
    with pytest.raises(errors.NotFound) as caught:
        adapter.order_status("25010100009999")
    assert caught.value.broker_code == "-51"


# Status vocabulary ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (1, OrderStatus.CANCELLED),
        (2, OrderStatus.FILLED),
        (4, OrderStatus.PENDING),
        (5, OrderStatus.REJECTED),
        (6, OrderStatus.OPEN),
        (7, OrderStatus.EXPIRED),
    ],
)
def test_numeric_statuses_map_to_standard_statuses(status, expected):
    assert normalize_status(status, Decimal(10), Decimal(0)) == expected


def test_pending_order_with_some_fills_is_partially_filled():
    assert normalize_status(6, Decimal(10), Decimal(4)) == OrderStatus.PARTIALLY_FILLED


def test_cancelled_order_with_some_fills_stays_cancelled():
    assert normalize_status(1, Decimal(10), Decimal(4)) == OrderStatus.CANCELLED


@pytest.mark.parametrize("status", [3, 99, "x", None])
def test_unknown_status_is_a_broker_error(status):
    with pytest.raises(errors.BrokerError):
        normalize_status(status, Decimal(1), Decimal(0))


# Orders on the wire ----------------------------------------------------------------------------


def test_standard_symbol_becomes_the_fyers_cash_equity_ticker():
    assert fyers_symbol("NSE", "infy") == "NSE:INFY-EQ"
    assert fyers_symbol("NSE", "BAJAJ-AUTO") == "NSE:BAJAJ-AUTO-EQ"
    assert fyers_symbol("NSE", "NIFTY", broker_symbol="NSE:NIFTY25JANFUT") == "NSE:NIFTY25JANFUT"
    assert split_fyers_symbol("NSE:INFY-EQ") == ("NSE", "INFY")
    assert split_fyers_symbol("NSE:ABC-BE") == ("NSE", "ABC-BE")


def test_broker_symbol_from_the_master_is_what_gets_sent(adapter, fresh):
    request = fresh.order_request(symbol="STATEBANK", broker_symbol="NSE:SBIN-EQ")
    adapter.place_order(request)
    [received] = fresh.ledger()
    assert received["symbol"] == "NSE:SBIN-EQ"
    assert received["client_tag"] == request.client_order_id


def test_order_book_shows_our_tag_with_the_1_prefix_and_find_order_strips_it(adapter, fresh):
    request = fresh.order_request()
    ack = adapter.place_order(request)
    payload = raw_get(
        fresh,
        "/api/v3/orders",
        {**adapter._headers()},
    ).json()
    [row] = [r for r in payload["orderBook"] if r["id"] == ack.broker_order_id]
    assert row["orderTag"] == f"1:{request.client_order_id}"
    found = adapter.find_order(request.client_order_id)
    assert found.client_order_id == request.client_order_id
    assert found.broker_order_id == ack.broker_order_id


def test_a_tag_fyers_would_refuse_is_refused_before_sending(adapter, fresh):
    for bad in ("has-dash", "x" * 31, "Untagged"):
        with pytest.raises(errors.InputError):
            adapter.place_order(fresh.order_request(client_order_id=bad))
    assert fresh.ledger() == []


def test_fractional_quantity_is_refused_before_sending(adapter, fresh):
    with pytest.raises(errors.InputError):
        adapter.place_order(fresh.order_request(quantity=Decimal("1.5")))
    assert fresh.ledger() == []


def test_gtc_validity_is_refused_before_sending(adapter, fresh):
    with pytest.raises(errors.InputError):
        adapter.place_order(fresh.order_request(validity=Validity.GTC))
    assert fresh.ledger() == []


def test_limit_price_reaches_fyers_with_its_exact_digits(adapter, fresh):
    price = Decimal("1490.05")
    ack = adapter.place_order(fresh.order_request(order_type=OrderType.LIMIT, price=price))
    order = adapter.order_status(ack.broker_order_id)
    assert order.price == price
    assert order.status == OrderStatus.OPEN
    assert order.order_type == OrderType.LIMIT
    assert order.side == Side.BUY


def test_stop_limit_order_waits_as_pending_then_fills_when_triggered(adapter, fresh):
    ack = adapter.place_order(
        fresh.order_request(
            order_type=OrderType.STOP_LIMIT, trigger_price=Decimal("1510"), price=Decimal("1515")
        )
    )
    order = adapter.order_status(ack.broker_order_id)
    assert order.status == OrderStatus.OPEN and order.raw_status == "6"
    assert order.trigger_price == Decimal("1510")
    fresh.set_price(Decimal("1512"))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.FILLED


def test_modify_changes_quantity_and_price(adapter, fresh):
    ack = adapter.place_order(
        fresh.order_request(order_type=OrderType.LIMIT, price=Decimal("1400"))
    )
    adapter.modify_order(
        ack.broker_order_id, OrderModification(quantity=Decimal(3), price=Decimal("1401.5"))
    )
    order = adapter.order_status(ack.broker_order_id)
    assert order.quantity == Decimal(3)
    assert order.price == Decimal("1401.5")


def test_filled_order_reports_fill_price_time_and_trade(adapter, fresh):
    ack = adapter.place_order(fresh.order_request(quantity=Decimal(2)))
    order = adapter.order_status(ack.broker_order_id)
    assert order.status == OrderStatus.FILLED
    assert order.filled_quantity == Decimal(2)
    assert order.average_price == Decimal("1500")
    assert order.placed_at is not None and order.placed_at.tzinfo is not None
    [trade] = [t for t in adapter.trade_book() if t.broker_order_id == ack.broker_order_id]
    assert (trade.symbol, trade.exchange, trade.side) == ("INFY", "NSE", Side.BUY)
    assert trade.quantity == Decimal(2) and trade.price == Decimal("1500")


# Portfolio and market data ---------------------------------------------------------------------


def test_funds_read_total_available_and_utilized_rows(adapter, fresh):
    before = adapter.funds()
    assert before.total == Decimal("1000000")
    assert before.available == Decimal("1000000")
    assert before.used_margin == Decimal(0)
    assert before.currency == "INR"
    adapter.place_order(fresh.order_request(order_type=OrderType.LIMIT, price=Decimal("1000")))
    after = adapter.funds()
    assert after.available == Decimal("999000")
    assert after.used_margin == Decimal("1000")


def test_positions_are_signed_and_use_standard_symbols(adapter, fresh):
    adapter.place_order(fresh.order_request(side=Side.SELL, quantity=Decimal(4)))
    [position] = adapter.positions()
    assert (position.symbol, position.exchange) == ("INFY", "NSE")
    assert position.quantity == Decimal(-4)
    assert position.average_price == Decimal("1500")
    assert position.product == "INTRADAY"
    assert position.position_id == "NSE:INFY-EQ-INTRADAY"


def test_delivery_product_is_sent_as_cnc(adapter, fresh):
    adapter.place_order(fresh.order_request(product=Product.DELIVERY))
    [position] = adapter.positions()
    assert position.product == "CNC"


def test_holdings_come_from_the_demat_account(adapter):
    [holding] = adapter.holdings()
    assert (holding.symbol, holding.exchange) == ("SBIN", "NSE")
    assert holding.quantity == Decimal(10)
    assert holding.average_price == Decimal("600")
    assert holding.last_price == Decimal("800")
    assert holding.pnl == Decimal("2000")


def test_quotes_map_fyers_fields_to_the_standard_quote(adapter):
    infy, sbin = adapter.quotes([("NSE", "INFY"), ("NSE", "SBIN")])
    assert (infy.symbol, infy.exchange, infy.last_price) == ("INFY", "NSE", Decimal("1500"))
    assert infy.bid == Decimal("1499.95") and infy.ask == Decimal("1500.05")
    assert infy.close == Decimal("1500")
    assert sbin.last_price == Decimal("800")


def test_quote_for_an_unknown_symbol_is_invalid_instrument(adapter):
    with pytest.raises(errors.InvalidInstrument):
        adapter.quotes([("NSE", "INFY"), ("NSE", "NOSUCH")])


# Instrument master -----------------------------------------------------------------------------


def test_instrument_master_downloads_and_parses_the_nse_cm_csv(fresh):
    records = {r.symbol: r for r in fresh.adapter().instrument_master()}
    assert set(records) == {"INFY", "SBIN", "RELIANCE"}
    infy = records["INFY"]
    assert infy.exchange == "NSE"
    assert infy.broker_symbol == "NSE:INFY-EQ"
    assert infy.broker_token == "101000000001594"
    assert infy.lot_size == Decimal(1)
    assert infy.tick_size == Decimal("0.05")
    assert infy.instrument_type == "EQ"
    assert infy.name == "INFOSYS LIMITED"
    assert infy.expiry == "" and infy.strike is None


def test_instrument_master_comes_from_public_fyers_in_in_production():
    adapter = FyersAdapter(credentials={"client_id": "X-100", "secret_key": "s"})
    assert adapter.base_url == "https://api-t1.fyers.in"
    assert adapter.instrument_master_url == "https://public.fyers.in/sym_details/NSE_CM.csv"


def test_symbol_master_parse_reads_expiry_strike_and_lot_of_a_derivative_row():
    # Expiry 1738229400 is 30 Jan 2025 15:00 IST.
    row = (
        "101125013035008,NIFTY 30 Jan 25 23000 CE,14,75,0.05,,0915-1530|1815-1915:,2025-01-07,"
        "1738229400,NSE:NIFTY2513023000CE,10,11,35008,NIFTY,26000,23000.0,CE,101000000026000,"
        "None,0,0.0\n"
    )
    [record] = parse_symbol_master(row)
    assert record.broker_symbol == "NSE:NIFTY2513023000CE"
    assert record.symbol == "NIFTY2513023000CE"
    assert record.lot_size == Decimal(75)
    assert record.expiry == "2025-01-30"
    assert record.strike == Decimal("23000.0")
    assert record.instrument_type == "14"  # derivative codes are kept as Fyers sends them


def test_symbol_master_parse_skips_short_or_blank_rows():
    assert parse_symbol_master("\n1,2,3\n") == []


def test_credentials_mark_secret_key_and_pin_secret_but_not_client_id():
    assert FyersAdapter.secret_field_names() == {"secret_key", "pin"}
    assert set(FyersAdapter.has) == set(OPERATIONS)
    assert all(FyersAdapter.has[name] for name in OPERATIONS if name != "credentials_login")
