"""DXtrade adapter specifics, over real HTTP against the dxtrade simulator on loopback."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from brokers.adapters import errors
from brokers.adapters.base import (
    OrderModification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
)
from brokers.adapters.dxtrade import (
    DXtradeAdapter,
    _number,
    _order_from,
    parse_session_timeout,
)
from brokers.simulators.base import RunningSimulator
from brokers.simulators.dxtrade import DXtradeSimulator

ACCOUNT = "default:1210008442"
CREDENTIALS = {"username": "trader1", "domain": "default", "password": "dx-pass-1"}


@pytest.fixture(scope="module")
def running():
    server = RunningSimulator(DXtradeSimulator())
    yield server
    server.stop()


@pytest.fixture
def sim(running):
    running.simulator.reset()
    return running


def make_adapter(url, **credentials) -> DXtradeAdapter:
    return DXtradeAdapter(credentials={**CREDENTIALS, **credentials}, base_url=url)


@pytest.fixture
def adapter(sim):
    adapter = make_adapter(sim.url)
    adapter.login()
    yield adapter
    adapter.close()


def short_timeout_simulator(timeout) -> RunningSimulator:
    seed = copy.deepcopy(DXtradeSimulator.default_seed)
    seed["session_timeout"] = timeout
    return RunningSimulator(DXtradeSimulator(seed))


def gold(client_order_id: str, **overrides) -> OrderRequest:
    fields = dict(
        symbol="XAU/USD",
        exchange="FX",
        side=Side.BUY,
        quantity=Decimal(10),
        order_type=OrderType.MARKET,
        client_order_id=client_order_id,
    )
    fields.update(overrides)
    return OrderRequest(**fields)


def ledger_tags(sim) -> list[str]:
    return [entry["client_tag"] for entry in sim.simulator.ledger]


# Session timeout parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PT30M", timedelta(minutes=30)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1D", timedelta(days=1)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("pt15m", timedelta(minutes=15)),
        (1800000, timedelta(minutes=30)),
        (Decimal("1800000"), timedelta(minutes=30)),
        ("1800000", timedelta(minutes=30)),
        (" 900000 ", timedelta(minutes=15)),
    ],
)
def test_session_timeout_accepts_milliseconds_and_iso_durations(value, expected):
    assert parse_session_timeout(value) == expected


@pytest.mark.parametrize("value", [None, "", "PT", "P", "30 minutes", "P1DT", "0", "PT0S", True])
def test_malformed_or_zero_session_timeout_is_a_broker_error(value):
    with pytest.raises(errors.BrokerError):
        parse_session_timeout(value)


@pytest.mark.parametrize("timeout", ["PT30M", 1800000, "1800000"])
def test_login_sets_expiry_from_the_timeout_whatever_its_format(timeout):
    server = short_timeout_simulator(timeout)
    try:
        adapter = make_adapter(server.url)
        before = datetime.now(UTC)
        session = adapter.login()
        assert session.expires_at.tzinfo is not None
        assert before + timedelta(minutes=30) <= session.expires_at
        assert session.expires_at <= datetime.now(UTC) + timedelta(minutes=30)
        assert session.extra["timeout_seconds"] == 1800
    finally:
        server.stop()


# Login, accounts, headers --------------------------------------------------------------------


def test_login_resolves_the_first_account_and_its_currency_when_none_is_given(sim):
    adapter = make_adapter(sim.url)
    session = adapter.login()
    assert session.extra["account"] == ACCOUNT
    assert session.extra["currency"] == "USD"


def test_login_uses_the_configured_account_and_its_base_currency(sim):
    adapter = make_adapter(
        sim.url, username="trader2", password="dx-pass-2", account="default:1210009001"
    )
    adapter.login()
    assert adapter.funds().currency == "EUR"
    assert adapter.funds().total == Decimal(25000)


def test_login_with_an_account_the_user_does_not_own_is_an_input_error(sim):
    adapter = make_adapter(sim.url, account="default:999")
    with pytest.raises(errors.InputError):
        adapter.login()


def test_empty_domain_logs_in_to_the_default_domain(sim):
    adapter = make_adapter(sim.url, domain="")
    assert adapter.login().access_token


def test_wrong_password_is_invalid_credentials_with_code_3_and_no_secret(sim):
    adapter = make_adapter(sim.url, password="hunter2-wrong")
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.login()
    assert caught.value.broker_code == "3"
    assert caught.value.http_status == 401
    assert "hunter2-wrong" not in str(caught.value)
    assert "hunter2-wrong" not in repr(adapter)


def test_simulator_refuses_a_missing_or_foreign_auth_header_with_the_dxtrade_envelope(sim):
    token = requests.post(f"{sim.url}/dxsca-web/login", json=CREDENTIALS, timeout=5).json()[
        "sessionToken"
    ]
    url = f"{sim.url}/dxsca-web/accounts/default%3A1210008442/metrics"
    for headers in ({}, {"Authorization": f"Bearer {token}"}, {"Authorization": "DXAPI nope"}):
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401
        assert set(response.json()) == {"errorCode", "description"}
    ok = requests.get(url, headers={"Authorization": f"DXAPI {token}"}, timeout=5)
    assert ok.status_code == 200
    assert ok.json()["metrics"][0]["account"] == ACCOUNT


def test_account_code_is_url_encoded_in_paths(adapter):
    urls = []
    adapter.http.hooks["response"].append(lambda response, **_: urls.append(response.url))
    adapter.funds()
    adapter.positions()
    assert urls and all("/accounts/default%3A1210008442/" in url for url in urls)


def test_base_url_may_include_the_dxsca_web_prefix(sim):
    adapter = make_adapter(sim.url + "/dxsca-web/")
    adapter.login()
    assert adapter.funds().available > 0


# Expiry and re-login -------------------------------------------------------------------------


def test_expired_session_logs_in_again_once_reports_it_and_repeats_the_read(adapter, sim):
    renewed = []
    adapter.on_session_renewed = renewed.append
    old_token = adapter.session.access_token
    sim.simulator.expire_sessions()
    funds = adapter.funds()
    assert funds.total == Decimal(100000)
    assert len(renewed) == 1
    assert renewed[0].access_token == adapter.session.access_token != old_token


def test_inactivity_expires_the_session_but_activity_keeps_it_alive():
    server = short_timeout_simulator("PT0.6S")
    try:
        adapter = make_adapter(server.url)
        adapter.login()
        renewed = []
        adapter.on_session_renewed = renewed.append
        for _ in range(6):  # 1.2s of activity, each call within the 0.6s window
            adapter.funds()
            time.sleep(0.15)
        assert renewed == []
        time.sleep(0.8)
        adapter.funds()
        assert len(renewed) == 1
    finally:
        server.stop()


def test_refused_relogin_raises_invalid_credentials_instead_of_looping(adapter, sim):
    adapter.credentials["password"] = "changed-elsewhere"
    sim.simulator.expire_sessions()
    with pytest.raises(errors.InvalidCredentials):
        adapter.funds()


def test_place_after_expiry_goes_through_exactly_once(adapter, sim):
    sim.simulator.expire_sessions()
    ack = adapter.place_order(gold("afterexpiry01"))
    assert ack.broker_order_id == "afterexpiry01"
    assert ledger_tags(sim).count("afterexpiry01") == 1
    assert adapter.order_status("afterexpiry01").status == OrderStatus.FILLED


def test_duplicate_order_code_returns_the_existing_order_and_places_nothing(adapter, sim):
    first = adapter.place_order(gold("dupcode0001"))
    second = adapter.place_order(gold("dupcode0001"))
    assert second.broker_order_id == first.broker_order_id == "dupcode0001"
    assert second.status == OrderStatus.FILLED
    assert "Already placed" in second.message
    assert ledger_tags(sim).count("dupcode0001") == 1
    assert adapter.positions()[0].quantity == Decimal(10)


def test_simulator_answers_a_duplicate_order_code_with_409_code_100(adapter, sim):
    adapter.place_order(gold("dupcode0002"))
    response = requests.post(
        f"{sim.url}/dxsca-web/accounts/default%3A1210008442/orders",
        json={
            "orderCode": "dupcode0002",
            "type": "MARKET",
            "instrument": "XAU/USD",
            "quantity": 1,
            "positionEffect": "OPEN",
            "side": "BUY",
            "tif": "GTC",
        },
        headers={"Authorization": f"DXAPI {adapter.session.access_token}"},
        timeout=5,
    )
    assert response.status_code == 409
    assert response.json()["errorCode"] == "100"


def test_resending_after_an_unanswered_place_returns_the_order_already_placed(adapter, sim):
    adapter.read_timeout = 0.5
    sim.simulator.faults.hang_next_orders = 1
    sim.simulator.faults.hang_seconds = 1.0
    with pytest.raises(errors.OutcomeUnknown):
        adapter.place_order(gold("hungorder01"))
    ack = adapter.place_order(gold("hungorder01"))
    assert ack.broker_order_id == "hungorder01"
    assert ledger_tags(sim).count("hungorder01") == 1


def test_refresh_pings_for_a_fresh_token_and_retires_the_old_one(adapter, sim):
    old = adapter.session.access_token
    renewed = adapter.refresh()
    assert renewed.access_token != old
    assert renewed.expires_at > datetime.now(UTC) + timedelta(minutes=29)
    assert renewed.extra["account"] == ACCOUNT
    response = requests.get(
        f"{sim.url}/dxsca-web/users/trader1",
        headers={"Authorization": f"DXAPI {old}"},
        timeout=5,
    )
    assert response.status_code == 401


def test_logout_ends_the_session(adapter, sim):
    token = adapter.session.access_token
    adapter.logout()
    response = requests.get(
        f"{sim.url}/dxsca-web/users/trader1",
        headers={"Authorization": f"DXAPI {token}"},
        timeout=5,
    )
    assert response.status_code == 401


# Error mapping -------------------------------------------------------------------------------


def _response(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers["Content-Type"] = "application/json"
    return response


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "2", errors.NotFound),
        (400, "32", errors.InputError),
        (400, "33", errors.InputError),
        (409, "100", errors.OrderRejected),
        (401, "3", errors.SessionExpired),  # after a re-login: the session is still refused
        (403, "77", errors.AuthError),
        (404, "999", errors.NotFound),
        (418, "999", errors.BrokerError),
    ],
)
def test_error_envelope_maps_to_typed_errors_keeping_code_and_description(status, code, expected):
    adapter = DXtradeAdapter(credentials=CREDENTIALS, base_url="http://127.0.0.1:9")
    body = b'{"errorCode": "%s", "description": "what DXtrade said"}' % code.encode()
    with pytest.raises(expected) as caught:
        adapter._checked(_response(status, body))
    assert type(caught.value) is expected
    assert caught.value.broker_code == code
    assert caught.value.message == "what DXtrade said"


def test_numeric_error_codes_are_read_as_text():
    adapter = DXtradeAdapter(credentials=CREDENTIALS, base_url="http://127.0.0.1:9")
    with pytest.raises(errors.NotFound) as caught:
        adapter._checked(_response(404, b'{"errorCode": 2, "description": "gone"}'))
    assert caught.value.broker_code == "2"


def test_unknown_instrument_is_invalid_instrument_from_404_code_2(adapter):
    with pytest.raises(errors.InvalidInstrument) as caught:
        adapter.place_order(gold("badsymbol01", symbol="XXX/YYY"))
    assert caught.value.broker_code == "2"


def test_bad_quantity_is_an_input_error_with_code_32(adapter, sim):
    with pytest.raises(errors.InputError) as caught:
        adapter.place_order(gold("badqty00001", quantity=Decimal(-5)))
    assert caught.value.broker_code == "32"
    assert ledger_tags(sim) == []


def test_throttled_answer_is_rate_limited(adapter, sim):
    sim.simulator.faults.rate_limit_burst = 1
    with pytest.raises(errors.RateLimited) as caught:
        adapter.positions()
    assert caught.value.broker_code == "429"


def test_order_beyond_funds_is_rejected_with_the_reject_reason(adapter):
    adapter.place_order(gold("toobig00001", quantity=Decimal(1_000_000)))
    order = adapter.order_status("toobig00001")
    assert order.status == OrderStatus.REJECTED
    assert order.raw_status == "REJECTED"
    assert "Insufficient" in order.message


def test_prices_with_more_digits_than_a_double_holds_are_refused_not_rounded():
    assert _number(Decimal("1.08505")) == 1.08505
    assert _number(Decimal("2350.00")) == 2350
    with pytest.raises(errors.InputError):
        _number(Decimal("1.0850500000000000001"))


# Status vocabulary ---------------------------------------------------------------------------


def _row(status, filled="0", **extra):
    return {
        "orderId": 1,
        "orderCode": "1",
        "clientOrderId": "abc",
        "type": "LIMIT",
        "instrument": "EUR/USD",
        "side": "BUY",
        "status": status,
        "legs": [
            {
                "quantity": Decimal(1000),
                "filledQuantity": Decimal(filled),
                "price": Decimal("1.08"),
                "averagePrice": Decimal("1.08"),
            }
        ],
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("ACCEPTED", "0", OrderStatus.OPEN),
        ("WORKING", "0", OrderStatus.OPEN),
        ("WORKING", "400", OrderStatus.PARTIALLY_FILLED),
        ("COMPLETED", "1000", OrderStatus.FILLED),
        ("CANCELED", "0", OrderStatus.CANCELLED),
        ("CANCELED", "400", OrderStatus.CANCELLED),
        ("EXPIRED", "0", OrderStatus.EXPIRED),
        ("REJECTED", "0", OrderStatus.REJECTED),
        ("SOMETHING_NEW", "0", OrderStatus.PENDING),
    ],
)
def test_dxtrade_statuses_map_to_ours(status, filled, expected):
    order = _order_from(_row(status, filled))
    assert order.status == expected
    assert order.raw_status == status
    assert order.filled_quantity == Decimal(filled)


def test_partial_fill_keeps_quantity_and_average_price():
    order = _order_from(_row("WORKING", "400"))
    assert order.quantity == Decimal(1000)
    assert order.average_price == Decimal("1.08")
    assert order.broker_order_id == "abc"  # the client's orderCode, not the numeric orderId


def test_order_without_a_client_code_is_identified_by_the_server_order_code():
    order = _order_from(_row("WORKING", clientOrderId=None, orderCode="srv-77"))
    assert order.broker_order_id == "srv-77"
    assert order.client_order_id == ""


# Reads ---------------------------------------------------------------------------------------


def test_funds_map_balance_available_funds_margin_and_equity(adapter):
    adapter.place_order(gold("fundsfill01"))  # 10 oz at 2350 = 23500 of margin, no leverage
    funds = adapter.funds()
    assert funds.total == Decimal(100000)
    assert funds.used_margin == Decimal(23500)
    assert funds.available == Decimal(76500)
    assert funds.equity == Decimal(100000)
    assert funds.currency == "USD"


def test_quote_last_price_is_the_mid_of_bid_and_ask(adapter):
    eur, xau = adapter.quotes([("FX", "EUR/USD"), ("FX", "XAU/USD")])
    assert (eur.symbol, eur.bid, eur.ask, eur.last_price) == (
        "EUR/USD",
        Decimal("1.0849"),
        Decimal("1.0851"),
        Decimal("1.0850"),
    )
    assert xau.last_price == Decimal("2350.00")
    assert xau.bid < xau.last_price < xau.ask


def test_quote_for_an_unknown_symbol_is_invalid_instrument(adapter):
    with pytest.raises(errors.InvalidInstrument):
        adapter.quotes([("FX", "NOT/REAL")])


def test_instrument_master_parses_the_instruments_query(adapter):
    records = {r.symbol: r for r in adapter.instrument_master()}
    assert set(records) == {"EUR/USD", "GBP/USD", "XAU/USD"}
    gold_record = records["XAU/USD"]
    assert gold_record.exchange == "FX"
    assert gold_record.broker_symbol == "XAU/USD"
    assert gold_record.tick_size == Decimal("0.01")
    assert gold_record.lot_size == Decimal(1)  # quantities are units, not lots
    assert gold_record.name == "Gold vs US Dollar"


def test_short_position_is_negative(adapter):
    adapter.place_order(gold("short000001", side=Side.SELL, quantity=Decimal(3)))
    [position] = adapter.positions()
    assert position.symbol == "XAU/USD"
    assert position.quantity == Decimal(-3)
    assert position.average_price == Decimal("2350.00")
    assert position.position_id


def test_trade_book_comes_from_fill_executions(adapter):
    adapter.place_order(gold("tradebook01"))
    adapter.place_order(gold("restinglim1", order_type=OrderType.LIMIT, price=Decimal(2000)))
    [trade] = adapter.trade_book()
    assert trade.broker_order_id == "tradebook01"
    assert (trade.quantity, trade.price, trade.side) == (Decimal(10), Decimal("2350"), Side.BUY)
    assert trade.trade_id and trade.traded_at is not None


def test_holdings_are_not_supported(adapter):
    assert not adapter.supports("holdings")
    with pytest.raises(errors.NotSupported):
        adapter.holdings()


# Modify and cancel ---------------------------------------------------------------------------


def test_modify_resends_the_whole_order_with_the_changes(adapter):
    adapter.place_order(gold("modify00001", order_type=OrderType.LIMIT, price=Decimal(2300)))
    adapter.modify_order("modify00001", OrderModification(quantity=Decimal(4)))
    order = adapter.order_status("modify00001")
    assert (order.quantity, order.price, order.status) == (
        Decimal(4),
        Decimal(2300),
        OrderStatus.OPEN,
    )


def test_stop_order_trigger_can_be_modified(adapter):
    adapter.place_order(gold("stop0000001", order_type=OrderType.STOP, trigger_price=Decimal(2400)))
    adapter.modify_order("stop0000001", OrderModification(trigger_price=Decimal(2450)))
    order = adapter.order_status("stop0000001")
    assert order.order_type == OrderType.STOP
    assert order.trigger_price == Decimal(2450)


def test_cancelling_twice_returns_the_cancelled_order(adapter):
    adapter.place_order(gold("cancel00001", order_type=OrderType.LIMIT, price=Decimal(2300)))
    assert adapter.cancel_order("cancel00001").status == OrderStatus.CANCELLED
    again = adapter.cancel_order("cancel00001")
    assert again.status == OrderStatus.CANCELLED
    assert again.message == "Already cancelled."


def test_cancelling_an_unknown_order_is_not_found(adapter):
    with pytest.raises(errors.NotFound) as caught:
        adapter.cancel_order("neverplaced")
    assert caught.value.broker_code == "2"
