"""Zerodha adapter over real HTTP against the Kite simulator on loopback."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests

from brokers.adapters import errors
from brokers.adapters.base import (
    OrderModification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from brokers.adapters.zerodha import (
    IST,
    STATUSES,
    ZerodhaAdapter,
    normalize_status,
    session_expiry,
)
from brokers.simulators.base import RunningSimulator
from brokers.simulators.kite import KiteSimulator, totp_now
from tests.brokers.contract.harness_zerodha import APP, USER, Harness

TOTP_USER = KiteSimulator.default_seed["users"][1]


@pytest.fixture(scope="module")
def harness():
    harness = Harness()
    harness.running = RunningSimulator(KiteSimulator())
    yield harness
    harness.stop()


@pytest.fixture
def sim(harness):
    simulator = harness.running.simulator
    simulator.reset()
    yield simulator
    simulator.__dict__.pop("clock", None)  # back to the real clock


@pytest.fixture
def adapter(harness, sim):
    adapter = harness.logged_in_adapter()
    yield adapter
    adapter.close()


def at_ist(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)


def order(**overrides) -> OrderRequest:
    fields = dict(
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        quantity=Decimal(2),
        order_type=OrderType.MARKET,
        client_order_id=ZerodhaAdapter.new_client_order_id(),
    )
    fields.update(overrides)
    return OrderRequest(**fields)


def capture_requests(adapter) -> list[requests.PreparedRequest]:
    sent: list[requests.PreparedRequest] = []
    adapter.http.hooks["response"].append(lambda response, **kwargs: sent.append(response.request))
    return sent


# Login ---------------------------------------------------------------------------------------


def test_login_url_points_at_kite_with_state_in_redirect_params():
    adapter = ZerodhaAdapter(credentials={"api_key": "abc123", "api_secret": "s"})
    url = urlsplit(adapter.login_url(state="signed.state", redirect_url="https://x/cb"))
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://kite.zerodha.com/connect/login"
    query = parse_qs(url.query)
    assert query == {"api_key": ["abc123"], "v": ["3"], "redirect_params": ["state=signed.state"]}


def test_login_url_uses_the_overridden_base_url_host(harness, sim):
    adapter = harness.adapter()
    assert adapter.login_url(state="s", redirect_url="").startswith(
        f"{harness.url}/connect/login?api_key={APP['api_key']}&v=3&redirect_params="
    )


def test_redirect_carries_request_token_and_the_state_from_redirect_params(harness, sim):
    params = harness.redirect_params(harness.adapter(), state="abc.def=")
    assert params["status"] == "success"
    assert params["action"] == "login"
    assert params["request_token"]
    assert params["state"] == "abc.def="
    assert urlsplit(APP["redirect_url"]).path == "/brokers/callback/zerodha/"


def test_complete_login_exchanges_the_token_with_a_sha256_checksum(harness, sim):
    adapter = harness.adapter()
    params = harness.redirect_params(adapter)
    sent = capture_requests(adapter)
    session = adapter.complete_login(params)
    [exchange] = sent
    form = dict(parse_qsl(exchange.body))
    expected = hashlib.sha256(
        (APP["api_key"] + params["request_token"] + APP["api_secret"]).encode()
    ).hexdigest()
    assert exchange.method == "POST" and exchange.path_url == "/session/token"
    assert form == {
        "api_key": APP["api_key"],
        "request_token": params["request_token"],
        "checksum": expected,
    }
    assert session.access_token
    assert session.extra == {"user_id": USER["user_id"], "user_name": USER["user_name"]}


def test_wrong_api_secret_is_invalid_credentials_without_leaking_secrets(harness, sim):
    adapter = harness.adapter(harness.bad_credentials())
    params = harness.redirect_params(adapter)
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.complete_login(params)
    assert caught.value.broker_code == "InputException"
    assert "not-the-api-secret" not in str(caught.value)
    assert params["request_token"] not in str(caught.value)


def test_a_request_token_works_only_once(harness, sim):
    adapter = harness.adapter()
    params = harness.redirect_params(adapter)
    adapter.complete_login(params)
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.complete_login(params)
    assert caught.value.broker_code == "TokenException"
    assert caught.value.http_status == 403


def test_redirect_without_success_status_is_refused(harness, sim):
    with pytest.raises(errors.InvalidCredentials):
        harness.adapter().complete_login({"status": "cancelled", "request_token": "x"})


def test_bad_password_rerenders_the_form_with_an_error_and_no_redirect(harness, sim):
    response = requests.post(
        f"{harness.url}/connect/login",
        data={"api_key": APP["api_key"], "user_id": USER["user_id"], "password": "wrong"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "Invalid `user_id` or `password`." in response.text
    assert '<form method="post"' in response.text


def test_unknown_api_key_gets_an_error_page(harness, sim):
    response = requests.get(f"{harness.url}/connect/login?api_key=nope&v=3", timeout=5)
    assert response.status_code == 400
    assert "Invalid `api_key`." in response.text
    assert "<form" not in response.text


def test_user_with_totp_needs_the_current_code(harness, sim):
    data = {
        "api_key": APP["api_key"],
        "user_id": TOTP_USER["user_id"],
        "password": TOTP_USER["password"],
    }
    url = f"{harness.url}/connect/login"
    without = requests.post(url, data=data, allow_redirects=False, timeout=5)
    assert without.status_code == 200 and "Invalid TOTP." in without.text
    code = totp_now(TOTP_USER["totp_secret"])
    with_code = requests.post(url, data={**data, "twofa": code}, allow_redirects=False, timeout=5)
    assert with_code.status_code == 302
    assert "request_token=" in with_code.headers["Location"]


# Session expiry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login_time", "expires_at"),
    [
        ("2025-01-10 09:15:00", "2025-01-11 06:00:00"),
        ("2025-01-10 05:59:59", "2025-01-10 06:00:00"),
        ("2025-01-10 06:00:00", "2025-01-11 06:00:00"),
        ("2025-01-10 23:59:59", "2025-01-11 06:00:00"),
    ],
)
def test_session_expires_at_the_next_six_am_ist_after_login(harness, sim, login_time, expires_at):
    sim.clock = lambda: at_ist(login_time)
    adapter = harness.logged_in_adapter()
    assert adapter.session.issued_at == at_ist(login_time)
    assert adapter.session.expires_at == at_ist(expires_at)
    assert adapter.session.expires_at.utcoffset() == timedelta(hours=5, minutes=30)


def test_session_expiry_reads_naive_times_as_ist():
    assert session_expiry(datetime(2025, 3, 1, 14, 0)) == at_ist("2025-03-02 06:00:00")


def test_token_stops_working_at_six_am_ist(harness, sim):
    sim.clock = lambda: at_ist("2025-01-10 15:00:00")
    adapter = harness.logged_in_adapter()
    sim.clock = lambda: at_ist("2025-01-11 05:59:59")
    assert adapter.funds().available > 0
    sim.clock = lambda: at_ist("2025-01-11 06:00:00")
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.funds()
    assert caught.value.broker_code == "TokenException"


def test_logout_invalidates_the_access_token(adapter):
    adapter.logout()
    with pytest.raises(errors.SessionExpired):
        adapter.funds()


# Headers ---------------------------------------------------------------------------------------


def test_every_call_sends_kite_version_and_token_authorization(adapter):
    sent = capture_requests(adapter)
    adapter.funds()
    adapter.place_order(order())
    for request in sent:
        assert request.headers["X-Kite-Version"] == "3"
        assert request.headers["Authorization"] == (
            f"token {APP['api_key']}:{adapter.session.access_token}"
        )


def test_place_order_is_form_encoded_with_variety_and_tag(adapter):
    sent = capture_requests(adapter)
    request = order(order_type=OrderType.LIMIT, price=Decimal("1490.05"), product=Product.MARGIN)
    adapter.place_order(request)
    [place] = sent
    assert place.path_url == "/orders/regular"
    assert place.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(place.body)) == {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": "2",
        "product": "NRML",
        "order_type": "LIMIT",
        "validity": "DAY",
        "tag": request.client_order_id,
        "price": "1490.05",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Kite-Version": "3"},
        {"X-Kite-Version": "3", "Authorization": "token wrongkey:whatever"},
        {"X-Kite-Version": "3", "Authorization": "Bearer whatever"},
    ],
)
def test_simulator_refuses_missing_or_wrong_auth_with_the_token_exception_envelope(
    harness, adapter, headers
):
    response = requests.get(f"{harness.url}/user/margins", headers=headers, timeout=5)
    assert response.status_code == 403
    assert "json" in response.headers["Content-Type"]
    body = response.json()
    assert body["status"] == "error" and body["error_type"] == "TokenException"
    assert body["message"]


def test_simulator_needs_the_version_header_even_with_a_valid_token(harness, adapter):
    authorization = f"token {APP['api_key']}:{adapter.session.access_token}"
    response = requests.get(
        f"{harness.url}/user/margins", headers={"Authorization": authorization}, timeout=5
    )
    assert response.status_code == 403
    assert response.json()["error_type"] == "TokenException"


def test_unknown_route_gets_the_kite_error_envelope(harness, sim):
    response = requests.get(f"{harness.url}/no/such/route", timeout=5)
    assert response.status_code == 404
    assert response.json() == {
        "status": "error",
        "message": "Route not found",
        "error_type": "GeneralException",
        "data": None,
    }


# Error mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected"),
    [
        (403, "TokenException", "Token is invalid or has expired.", errors.SessionExpired),
        (400, "InputException", "Invalid `price`.", errors.InputError),
        (400, "InputException", "Invalid `tradingsymbol`.", errors.InvalidInstrument),
        (
            400,
            "InputException",
            "The instrument you are placing an order for has expired.",
            errors.InvalidInstrument,
        ),
        (400, "OrderException", "Order cannot be modified.", errors.OrderRejected),
        (400, "MarginException", "Insufficient funds.", errors.InsufficientFunds),
        (400, "HoldingException", "Insufficient holdings.", errors.OrderRejected),
        (403, "PermissionException", "Insufficient permission.", errors.AuthError),
        (403, "UserException", "Your account is blocked.", errors.AccountLocked),
        (400, "GeneralException", "Couldn't find that `order_id`.", errors.NotFound),
        (400, "GeneralException", "Something odd.", errors.BrokerError),
        (503, "NetworkException", "OMS unreachable.", errors.BrokerUnavailable),
        (502, "DataException", "Bad OMS response.", errors.BrokerUnavailable),
        (500, "GeneralException", "Internal error.", errors.BrokerUnavailable),
        (429, "NetworkException", "Too many requests", errors.RateLimited),
    ],
)
def test_kite_errors_map_to_typed_errors_keeping_code_and_message(
    adapter, sim, status, error_type, message, expected
):
    sim.fail_next(status, error_type, message)
    with pytest.raises(expected) as caught:
        adapter.positions()
    assert type(caught.value) is expected
    assert caught.value.message == message
    assert caught.value.broker_code == error_type
    assert caught.value.http_status == status


def test_5xx_on_an_order_write_is_outcome_unknown_but_503_is_unavailable(adapter, sim):
    sim.fail_next(502, "DataException", "Bad OMS response.")
    with pytest.raises(errors.OutcomeUnknown):
        adapter.place_order(order())
    sim.fail_next(503, "NetworkException", "OMS unreachable.")
    with pytest.raises(errors.BrokerUnavailable):
        adapter.place_order(order())


def test_tag_over_20_characters_is_refused_by_kite(adapter, harness):
    with pytest.raises(errors.InputError) as caught:
        adapter.place_order(order(client_order_id="a" * 21))
    assert type(caught.value) is errors.InputError
    assert caught.value.broker_code == "InputException"
    assert "tag" in caught.value.message
    assert harness.ledger() == []


def test_unknown_tradingsymbol_is_invalid_instrument_from_an_input_exception(adapter):
    with pytest.raises(errors.InvalidInstrument) as caught:
        adapter.place_order(order(symbol="NOSUCH"))
    assert caught.value.broker_code == "InputException"
    assert caught.value.message == "Invalid `tradingsymbol`."


def test_quantity_off_the_lot_size_is_an_input_error(adapter):
    future = order(exchange="NFO", symbol="NIFTY25DECFUT", quantity=Decimal(10))
    with pytest.raises(errors.InputError) as caught:
        adapter.place_order(future)
    assert "lot size 75" in caught.value.message


def test_fractional_quantity_is_refused_before_sending(adapter, harness):
    with pytest.raises(errors.InputError):
        adapter.place_order(order(quantity=Decimal("1.5")))
    assert harness.ledger() == []


def test_gtc_validity_is_not_supported(adapter):
    with pytest.raises(errors.NotSupported):
        adapter.place_order(order(validity=Validity.GTC))


# Status vocabulary ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "filled", "expected"),
    [
        ("PUT ORDER REQ RECEIVED", 0, OrderStatus.PENDING),
        ("VALIDATION PENDING", 0, OrderStatus.PENDING),
        ("OPEN PENDING", 0, OrderStatus.PENDING),
        ("AMO REQ RECEIVED", 0, OrderStatus.PENDING),
        ("OPEN", 0, OrderStatus.OPEN),
        ("OPEN", 4, OrderStatus.PARTIALLY_FILLED),
        ("TRIGGER PENDING", 0, OrderStatus.OPEN),
        ("MODIFY VALIDATION PENDING", 0, OrderStatus.OPEN),
        ("MODIFY PENDING", 4, OrderStatus.PARTIALLY_FILLED),
        ("CANCEL PENDING", 0, OrderStatus.OPEN),
        ("CANCEL PENDING", 4, OrderStatus.PARTIALLY_FILLED),
        ("COMPLETE", 10, OrderStatus.FILLED),
        ("CANCELLED", 0, OrderStatus.CANCELLED),
        ("CANCELLED", 4, OrderStatus.CANCELLED),
        ("REJECTED", 0, OrderStatus.REJECTED),
        ("SOMETHING NEW", 0, OrderStatus.PENDING),
    ],
)
def test_kite_status_vocabulary_normalizes(raw, filled, expected):
    assert normalize_status(raw, Decimal(10), Decimal(filled)) == expected


def test_every_documented_status_is_in_the_table():
    documented = {
        "COMPLETE",
        "CANCELLED",
        "REJECTED",
        "OPEN",
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "MODIFY VALIDATION PENDING",
        "MODIFY PENDING",
        "TRIGGER PENDING",
        "CANCEL PENDING",
        "AMO REQ RECEIVED",
    }
    assert documented <= set(STATUSES)


def test_order_status_takes_the_last_entry_of_the_order_history(adapter, harness, sim):
    ack = adapter.place_order(
        order(order_type=OrderType.LIMIT, price=Decimal("1480"), quantity=Decimal(10))
    )
    adapter.modify_order(ack.broker_order_id, OrderModification(price=Decimal("1475")))
    history = requests.get(
        f"{harness.url}/orders/{ack.broker_order_id}",
        headers={
            "X-Kite-Version": "3",
            "Authorization": f"token {APP['api_key']}:{adapter.session.access_token}",
        },
        timeout=5,
    ).json()["data"]
    assert [entry["status"] for entry in history] == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "OPEN",
        "MODIFY VALIDATION PENDING",
        "MODIFY PENDING",
        "OPEN",
    ]
    status = adapter.order_status(ack.broker_order_id)
    assert status.status == OrderStatus.OPEN and status.raw_status == "OPEN"
    assert status.price == Decimal("1475")


def test_partial_fill_shows_partially_filled_then_cancelled_keeps_the_fill(adapter, sim):
    ack = adapter.place_order(
        order(order_type=OrderType.LIMIT, price=Decimal("1480"), quantity=Decimal(10))
    )
    sim.fill_partially(ack.broker_order_id, Decimal(4), Decimal("1479.5"))
    partial = adapter.order_status(ack.broker_order_id)
    assert partial.status == OrderStatus.PARTIALLY_FILLED
    assert partial.raw_status == "OPEN"
    assert partial.filled_quantity == Decimal(4)
    assert partial.average_price == Decimal("1479.5")
    adapter.cancel_order(ack.broker_order_id)
    cancelled = adapter.order_status(ack.broker_order_id)
    assert cancelled.status == OrderStatus.CANCELLED
    assert cancelled.filled_quantity == Decimal(4)
    [trade] = [t for t in adapter.trade_book() if t.broker_order_id == ack.broker_order_id]
    assert (trade.quantity, trade.price) == (Decimal(4), Decimal("1479.5"))


def test_stop_order_waits_in_trigger_pending_then_fills(adapter, harness):
    ack = adapter.place_order(order(order_type=OrderType.STOP, trigger_price=Decimal("1510")))
    waiting = adapter.order_status(ack.broker_order_id)
    assert (waiting.raw_status, waiting.status) == ("TRIGGER PENDING", OrderStatus.OPEN)
    assert waiting.order_type == OrderType.STOP
    harness.set_price(Decimal("1511"))
    filled = adapter.order_status(ack.broker_order_id)
    assert (filled.raw_status, filled.status) == ("COMPLETE", OrderStatus.FILLED)


def test_margin_shortfall_is_accepted_then_rejected_with_the_rms_message(adapter):
    ack = adapter.place_order(order(quantity=Decimal(1_000_000)))
    rejected = adapter.order_status(ack.broker_order_id)
    assert rejected.status == OrderStatus.REJECTED
    assert rejected.message.startswith("RMS:Margin Exceeds")


def test_unknown_order_is_not_found_on_status_modify_and_cancel(adapter):
    with pytest.raises(errors.NotFound):
        adapter.order_status("250101000000999")
    with pytest.raises(errors.NotFound):
        adapter.modify_order("250101000000999", OrderModification(price=Decimal(1)))
    with pytest.raises(errors.NotFound):
        adapter.cancel_order("250101000000999")


def test_cancelling_a_complete_order_is_an_order_exception(adapter):
    ack = adapter.place_order(order())
    with pytest.raises(errors.OrderRejected) as caught:
        adapter.cancel_order(ack.broker_order_id)
    assert caught.value.broker_code == "OrderException"


def test_ioc_limit_order_that_cannot_fill_is_cancelled(adapter):
    ack = adapter.place_order(
        order(order_type=OrderType.LIMIT, price=Decimal("1400"), validity=Validity.IOC)
    )
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.CANCELLED


def test_find_order_scans_the_order_book_by_tag(adapter):
    first = adapter.place_order(order())
    request = order(order_type=OrderType.LIMIT, price=Decimal("1400"))
    second = adapter.place_order(request)
    found = adapter.find_order(request.client_order_id)
    assert found.broker_order_id == second.broker_order_id != first.broker_order_id
    assert found.client_order_id == request.client_order_id


# Portfolio, funds, quotes, instruments ---------------------------------------------------------


def test_products_map_to_kite_products_in_positions(adapter):
    adapter.place_order(order(product=Product.DELIVERY))
    adapter.place_order(order(product=Product.INTRADAY, symbol="SBIN"))
    products = {p.symbol: p.product for p in adapter.positions()}
    assert products == {"INFY": "CNC", "SBIN": "MIS"}


def test_funds_use_live_balance_and_debits(adapter):
    before = adapter.funds()
    assert before == before.__class__(
        total=Decimal(1_000_000),
        available=Decimal(1_000_000),
        used_margin=Decimal(0),
        currency="INR",
        equity=Decimal(1_000_000),
    )
    adapter.place_order(order(quantity=Decimal(2)))  # fills at 1500
    adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1000")))  # blocks 2000
    after = adapter.funds()
    assert after.used_margin == Decimal(5000)
    assert after.available == Decimal(995_000)
    assert after.total == Decimal(1_000_000)
    assert all(isinstance(v, Decimal) for v in (after.total, after.available, after.used_margin))


def test_holdings_come_from_the_demat_account(adapter):
    holdings = {h.symbol: h for h in adapter.holdings()}
    assert holdings["SBIN"].quantity == Decimal(50)
    assert holdings["SBIN"].average_price == Decimal(600)
    assert holdings["SBIN"].pnl == Decimal(10_000)  # (800 - 600) * 50


def test_quotes_parse_depth_and_ohlc_as_decimals(adapter, harness):
    sent = capture_requests(adapter)
    quotes = adapter.quotes([("NSE", "INFY"), ("NSE", "RELIANCE"), ("NSE", "NOSUCH")])
    assert sent[0].path_url == "/quote?i=NSE%3AINFY&i=NSE%3ARELIANCE&i=NSE%3ANOSUCH"
    infy, reliance = quotes
    assert (infy.symbol, infy.exchange, infy.last_price) == ("INFY", "NSE", Decimal(1500))
    assert (infy.bid, infy.ask) == (Decimal("1499.95"), Decimal("1500.05"))
    assert (reliance.bid, reliance.ask) == (Decimal("2899.9"), Decimal("2900.1"))
    assert infy.close == Decimal(1500)
    harness.set_price(Decimal("1523.4"))
    [moved] = adapter.quotes([("NSE", "INFY")])
    assert (moved.last_price, moved.high) == (Decimal("1523.4"), Decimal("1523.4"))


def test_instrument_master_parses_the_csv_dump(adapter):
    records = {(r.exchange, r.symbol): r for r in adapter.instrument_master()}
    infy = records[("NSE", "INFY")]
    assert (infy.broker_symbol, infy.broker_token) == ("INFY", "408065")
    assert (infy.lot_size, infy.tick_size, infy.instrument_type) == (1, Decimal("0.05"), "EQ")
    assert (infy.expiry, infy.strike, infy.name) == ("", None, "INFOSYS")
    option = records[("NFO", "NIFTY25DEC24000CE")]
    assert (option.lot_size, option.expiry, option.strike) == (75, "2025-12-30", Decimal(24000))
    assert option.instrument_type == "CE"
    future = records[("NFO", "NIFTY25DECFUT")]
    assert (future.instrument_type, future.strike) == ("FUT", None)
    assert records[("NSE", "RELIANCE")].tick_size == Decimal("0.1")


def test_instrument_dump_is_csv_with_kites_columns(harness, sim):
    response = requests.get(f"{harness.url}/instruments", timeout=5)
    assert "csv" in response.headers["Content-Type"]
    assert response.text.splitlines()[0] == (
        "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
        "tick_size,lot_size,instrument_type,segment,exchange"
    )
