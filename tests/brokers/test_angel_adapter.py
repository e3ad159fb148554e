"""Angel One specifics, over real HTTP against the Angel simulator on loopback."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyotp
import pytest
import requests

from brokers.adapters import errors
from brokers.adapters.angel import (
    ERROR_CODES,
    AngelAdapter,
    order_status,
    session_expiry,
)
from brokers.adapters.base import (
    OrderModification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from brokers.simulators.angel import AngelSimulator
from brokers.simulators.base import RunningSimulator

SEED = AngelSimulator.default_seed
USER = SEED["users"][0]
API_KEY = SEED["apps"][0]["api_key"]
SECURE = "/rest/secure/angelbroking"


@pytest.fixture(scope="module")
def running():
    running = RunningSimulator(AngelSimulator())
    yield running
    running.stop()


@pytest.fixture
def sim(running):
    running.simulator.reset()
    return running.simulator


@pytest.fixture
def url(running, sim):
    return running.url


def credentials(**overrides) -> dict[str, str]:
    return {
        "api_key": API_KEY,
        "client_code": USER["client_code"],
        "mpin": USER["mpin"],
        "totp_secret": USER["totp_secret"],
        **overrides,
    }


@pytest.fixture
def adapter(url):
    adapter = AngelAdapter(credentials=credentials(), base_url=url)
    adapter.login()
    yield adapter
    adapter.close()


def order(**overrides) -> OrderRequest:
    fields = dict(
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        quantity=Decimal(2),
        order_type=OrderType.MARKET,
        client_order_id=AngelAdapter.new_client_order_id(),
        product=Product.INTRADAY,
        broker_symbol="INFY-EQ",
        broker_token="1594",
    )
    fields.update(overrides)
    return OrderRequest(**fields)


def headers(adapter: AngelAdapter | None = None) -> dict[str, str]:
    """Angel's full header set, as a raw client would send it."""
    sent = {
        "Content-type": "application/json",
        "Accept": "application/json",
        "X-ClientLocalIP": "127.0.0.1",
        "X-ClientPublicIP": "127.0.0.1",
        "X-MACAddress": "02:00:00:00:00:01",
        "X-PrivateKey": API_KEY,
        "X-UserType": "USER",
        "X-SourceID": "WEB",
    }
    if adapter is not None:
        sent["Authorization"] = f"Bearer {adapter.session.access_token}"
    return sent


def envelope(status: int, body: dict) -> requests.Response:
    """A response as Angel would send it, for the error-mapping table."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


# Headers and the gateway ---------------------------------------------------------------------


def test_adapter_sends_every_header_angel_requires(adapter):
    sent = adapter._headers()
    for name in (
        "Content-type",
        "Accept",
        "X-ClientLocalIP",
        "X-ClientPublicIP",
        "X-MACAddress",
        "X-PrivateKey",
        "X-UserType",
        "X-SourceID",
    ):
        assert sent[name], name
    assert sent["Authorization"] == f"Bearer {adapter.session.access_token}"
    assert sent["X-UserType"] == "USER" and sent["X-SourceID"] == "WEB"
    assert adapter.funds().total > 0  # and the simulator, which checks them all, accepts them


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("X-PrivateKey", "AB1053"),
        ("X-UserType", "AB1005"),
        ("X-SourceID", "AB2000"),
        ("X-ClientLocalIP", "AB2000"),
        ("X-ClientPublicIP", "AB2000"),
        ("X-MACAddress", "AB2000"),
        ("Accept", "AB2000"),
    ],
)
def test_simulator_refuses_a_request_missing_a_mandatory_header(adapter, url, header, code):
    sent = headers(adapter)
    del sent[header]
    response = requests.get(f"{url}{SECURE}/user/v1/getRMS", headers=sent, timeout=5)
    assert response.status_code == 400
    assert response.json() == {
        "status": False,
        "message": response.json()["message"],
        "errorcode": code,
        "data": None,
    }


def test_missing_bearer_token_gets_the_gateway_envelope(url):
    response = requests.get(f"{url}{SECURE}/user/v1/getRMS", headers=headers(), timeout=5)
    assert response.status_code == 200
    assert response.json() == {
        "success": False,
        "message": "Token missing",
        "errorCode": "AG8003",
        "data": "",
    }


def test_unknown_token_is_ag8001_and_raises_session_expired(adapter, url):
    sent = {**headers(), "Authorization": "Bearer not-a-token"}
    body = requests.get(f"{url}{SECURE}/user/v1/getRMS", headers=sent, timeout=5).json()
    assert (body["success"], body["errorCode"], body["message"]) == (
        False,
        "AG8001",
        "Invalid Token",
    )
    adapter.session.access_token = "not-a-token"
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.funds()
    assert caught.value.broker_code == "AG8001"


def test_expired_token_is_ag8002_and_raises_session_expired(adapter, sim):
    sim.expire_sessions()
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.positions()
    assert caught.value.broker_code == "AG8002"
    assert caught.value.message == "Token Expired"


def test_token_of_another_api_key_is_refused(adapter, url):
    sent = {**headers(adapter), "X-PrivateKey": "someone-elses-key"}
    response = requests.get(f"{url}{SECURE}/user/v1/getRMS", headers=sent, timeout=5)
    assert response.json()["errorcode"] == "AB1053"


def test_get_with_the_sdks_json_query_string_is_accepted(adapter, url):
    # smartapi-python sends GET parameters as json.dumps(params) in the raw query string.
    response = requests.get(
        f"{url}{SECURE}/order/v1/getOrderBook?%7B%7D", headers=headers(adapter), timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {"status": True, "message": "SUCCESS", "errorcode": "", "data": None}
    refresh = json.dumps({"refreshToken": adapter.session.refresh_token})
    profile = requests.get(
        f"{url}{SECURE}/user/v1/getProfile?{requests.utils.quote(refresh)}",
        headers=headers(adapter),
        timeout=5,
    ).json()
    assert profile["data"]["clientcode"] == USER["client_code"]


def test_unknown_route_answers_with_angels_envelope(adapter, url):
    response = requests.get(f"{url}{SECURE}/nope", headers=headers(adapter), timeout=5)
    assert response.status_code == 404
    assert response.json()["status"] is False


# Login, refresh, logout, expiry ----------------------------------------------------------------


def test_login_with_mpin_and_current_totp_gives_jwt_refresh_and_feed_tokens(url):
    adapter = AngelAdapter(credentials=credentials(), base_url=url)
    session = adapter.login()
    assert adapter.session is session
    assert session.access_token.count(".") == 2  # a JWT
    assert session.refresh_token and session.feed_token
    assert session.access_token not in repr(session)


def test_wrong_totp_raises_invalid_credentials_with_angels_message(url):
    adapter = AngelAdapter(credentials=credentials(totp_secret=pyotp.random_base32()), base_url=url)
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.login()
    assert (caught.value.broker_code, caught.value.message) == ("AB1050", "Invalid totp")


def test_wrong_mpin_raises_invalid_credentials(url):
    adapter = AngelAdapter(credentials=credentials(mpin="9999"), base_url=url)
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.login()
    assert caught.value.broker_code == "AB1000"
    assert "9999" not in str(caught.value)


def test_unknown_api_key_raises_invalid_credentials(url):
    adapter = AngelAdapter(credentials=credentials(api_key="wrong-key"), base_url=url)
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.login()
    assert caught.value.broker_code == "AB1053"
    assert "wrong-key" not in str(caught.value)


def test_malformed_totp_secret_is_invalid_credentials_without_echoing_it(url):
    adapter = AngelAdapter(credentials=credentials(totp_secret="not base32 !!"), base_url=url)
    with pytest.raises(errors.InvalidCredentials) as caught:
        adapter.login()
    assert "not base32" not in str(caught.value)


def test_session_expiry_is_read_from_the_jwt_exp_claim():
    short = RunningSimulator(AngelSimulator({**SEED, "session_seconds": 3600}))
    try:
        adapter = AngelAdapter(credentials=credentials(), base_url=short.url)
        session = adapter.login()
        expected = datetime.now(UTC) + timedelta(hours=1)
        assert abs(session.expires_at - expected) < timedelta(seconds=5)
        assert session.expires_at.tzinfo is not None
    finally:
        short.stop()


def test_session_expiry_falls_back_to_24_hours_without_an_exp_claim():
    issued_at = datetime(2025, 1, 2, 9, 0, tzinfo=UTC)
    assert session_expiry("opaque-token", issued_at) == issued_at + timedelta(hours=24)
    payload = "eyJleHAiOjE3MzU4MDkyMDB9"  # {"exp":1735809200}
    assert session_expiry(f"h.{payload}.s", issued_at) == datetime.fromtimestamp(1735809200, UTC)


def test_refresh_gives_a_new_jwt_that_works(adapter):
    before = adapter.session
    renewed = adapter.refresh()
    assert renewed.access_token != before.access_token
    assert adapter.session is renewed
    assert renewed.expires_at >= before.expires_at
    assert adapter.funds().available > 0


def test_invalid_refresh_token_raises_session_expired(adapter):
    adapter.session.refresh_token = "bogus"
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.refresh()
    assert caught.value.broker_code == "AB8050"


def test_expired_refresh_token_raises_session_expired(adapter, sim):
    sim.expire_sessions()
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.refresh()
    assert caught.value.broker_code == "AB8051"


def test_logout_revokes_the_token(adapter):
    token = adapter.session.access_token
    adapter.logout()
    assert adapter.session is None
    adapter.login()
    adapter.session.access_token = token
    with pytest.raises(errors.SessionExpired) as caught:
        adapter.funds()
    assert caught.value.broker_code == "AG8001"


# Error mapping and statuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("AG8001", errors.SessionExpired),
        ("AG8002", errors.SessionExpired),
        ("AG8003", errors.SessionExpired),
        ("AB1010", errors.SessionExpired),
        ("AB1011", errors.SessionExpired),
        ("AB8050", errors.SessionExpired),
        ("AB8051", errors.SessionExpired),
        ("AB1000", errors.InvalidCredentials),
        ("AB1050", errors.InvalidCredentials),
        ("AB1053", errors.InvalidCredentials),
        ("AB1006", errors.AccountLocked),
        ("AB1009", errors.InvalidInstrument),
        ("AB1013", errors.NotFound),
        ("AB1008", errors.InputError),
        ("AB1012", errors.InputError),
        ("AB1004", errors.BrokerUnavailable),
        ("RS-0111", errors.InsufficientFunds),
    ],
)
def test_angel_error_codes_raise_the_matching_typed_error(code, error_class):
    assert ERROR_CODES[code] is error_class
    adapter = AngelAdapter(credentials=credentials())
    for body in (
        {"status": False, "message": "broker says no", "errorcode": code, "data": None},
        {"success": False, "message": "broker says no", "errorCode": code, "data": ""},
    ):
        with pytest.raises(error_class) as caught:
            adapter._raise(envelope(200, body), write=False)
        assert type(caught.value) is error_class
        assert (caught.value.broker_code, caught.value.message) == (code, "broker says no")


def test_unlisted_error_is_order_rejected_on_a_write_and_broker_error_on_a_read():
    adapter = AngelAdapter(credentials=credentials())
    body = {"status": False, "message": "Order is complete", "errorcode": "AB2000", "data": None}
    with pytest.raises(errors.OrderRejected):
        adapter._raise(envelope(200, body), write=True)
    with pytest.raises(errors.BrokerError) as caught:
        adapter._raise(envelope(200, body), write=False)
    assert type(caught.value) is errors.BrokerError


def test_throttling_answered_with_http_200_is_rate_limited():
    adapter = AngelAdapter(credentials=credentials())
    body = {"status": False, "message": "Access denied because of exceeding access rate"}
    with pytest.raises(errors.RateLimited):
        adapter._raise(envelope(200, body), write=False)


def test_non_json_answer_to_a_write_is_outcome_unknown():
    adapter = AngelAdapter(credentials=credentials())
    response = requests.Response()
    response.status_code = 200
    response._content = b"<html>gateway</html>"
    with pytest.raises(errors.OutcomeUnknown):
        adapter._raise(response, write=True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("open", OrderStatus.OPEN),
        ("complete", OrderStatus.FILLED),
        ("rejected", OrderStatus.REJECTED),
        ("cancelled", OrderStatus.CANCELLED),
        ("trigger pending", OrderStatus.OPEN),
        ("open pending", OrderStatus.PENDING),
        ("validation pending", OrderStatus.PENDING),
        ("put order req received", OrderStatus.PENDING),
        ("modify pending", OrderStatus.OPEN),
        ("cancel pending", OrderStatus.OPEN),
        ("after market order req received", OrderStatus.PENDING),
        ("AMO SUBMITTED", OrderStatus.PENDING),
        ("something new", OrderStatus.PENDING),
    ],
)
def test_angel_status_words_map_to_normalized_statuses(raw, expected):
    assert order_status(raw, Decimal(0)) == expected


def test_open_order_with_fills_is_partially_filled():
    assert order_status("open", Decimal(3)) == OrderStatus.PARTIALLY_FILLED
    assert order_status("cancelled", Decimal(3)) == OrderStatus.CANCELLED


# Orders ----------------------------------------------------------------------------------------


def test_place_sends_every_value_as_a_string_and_the_client_id_as_ordertag(adapter, sim):
    request = order(order_type=OrderType.LIMIT, price=Decimal("1490.5"))
    ack = adapter.place_order(request)
    [received] = sim.ledger
    body = received["body"]
    assert all(isinstance(value, str) for value in body.values())
    assert body["ordertag"] == request.client_order_id
    assert (body["tradingsymbol"], body["symboltoken"]) == ("INFY-EQ", "1594")
    assert (body["variety"], body["ordertype"], body["producttype"]) == (
        "NORMAL",
        "LIMIT",
        "INTRADAY",
    )
    assert (body["price"], body["quantity"], body["duration"]) == ("1490.5", "2", "DAY")
    assert received["broker_order_id"] == ack.broker_order_id  # the uniqueorderid


def test_broker_order_id_is_the_unique_order_id_and_details_find_it(adapter, sim):
    ack = adapter.place_order(order())
    [received] = sim.ledger
    assert ack.broker_order_id != received["orderid"]
    status = adapter.order_status(ack.broker_order_id)
    assert status.broker_order_id == ack.broker_order_id
    assert (status.status, status.raw_status) == (OrderStatus.FILLED, "complete")
    assert status.average_price == Decimal("1500")
    assert status.placed_at is not None and status.placed_at.tzinfo is not None


def test_order_without_a_symbol_token_is_refused_before_any_call(adapter, sim):
    with pytest.raises(errors.InvalidInstrument):
        adapter.place_order(order(broker_token=""))
    assert sim.ledger == []


def test_symbol_token_that_does_not_match_the_symbol_is_invalid_instrument(adapter, sim):
    with pytest.raises(errors.InvalidInstrument) as caught:
        adapter.place_order(order(broker_symbol="SBIN-EQ", broker_token="1594"))
    assert caught.value.broker_code == "AB1009"


def test_gtc_validity_is_refused_before_any_call(adapter, sim):
    with pytest.raises(errors.InputError):
        adapter.place_order(order(validity=Validity.GTC))
    assert sim.ledger == []


def test_client_order_id_of_20_characters_is_refused(adapter, sim):
    with pytest.raises(errors.InputError):
        adapter.place_order(order(client_order_id="a" * 20))
    assert sim.ledger == []
    assert len(AngelAdapter.new_client_order_id()) == 19


def test_stop_order_goes_as_stoploss_variety_and_triggers(adapter, sim):
    ack = adapter.place_order(order(order_type=OrderType.STOP, trigger_price=Decimal("1510")))
    body = sim.ledger[0]["body"]
    assert (body["variety"], body["ordertype"], body["triggerprice"], body["price"]) == (
        "STOPLOSS",
        "STOPLOSS_MARKET",
        "1510",
        "0",
    )
    waiting = adapter.order_status(ack.broker_order_id)
    assert (waiting.status, waiting.raw_status) == (OrderStatus.OPEN, "trigger pending")
    assert waiting.trigger_price == Decimal("1510")
    sim.set_prices({"NSE:INFY-EQ": Decimal("1511")})
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.FILLED


def test_ioc_limit_order_that_cannot_fill_is_cancelled(adapter):
    ack = adapter.place_order(
        order(order_type=OrderType.LIMIT, price=Decimal("1400"), validity=Validity.IOC)
    )
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.CANCELLED


def test_modify_changes_only_what_is_asked(adapter):
    ack = adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1450")))
    adapter.modify_order(ack.broker_order_id, OrderModification(quantity=Decimal(5)))
    changed = adapter.order_status(ack.broker_order_id)
    assert (changed.quantity, changed.price, changed.order_type) == (
        Decimal(5),
        Decimal("1450"),
        OrderType.LIMIT,
    )


def test_modify_or_cancel_of_an_unknown_order_is_not_found(adapter):
    with pytest.raises(errors.NotFound):
        adapter.cancel_order("00000000-0000-4000-8000-000000000000")
    with pytest.raises(errors.NotFound):
        adapter.modify_order("nope", OrderModification(price=Decimal(1)))


def test_rejection_for_funds_reports_angels_reason(adapter):
    ack = adapter.place_order(order(quantity=Decimal(10_000)))
    rejected = adapter.order_status(ack.broker_order_id)
    assert (rejected.status, rejected.raw_status) == (OrderStatus.REJECTED, "rejected")
    assert "Insufficient Funds" in rejected.message


def test_find_order_matches_the_ordertag(adapter):
    request = order()
    ack = adapter.place_order(request)
    adapter.place_order(order())
    found = adapter.find_order(request.client_order_id)
    assert found is not None and found.broker_order_id == ack.broker_order_id


def test_trade_book_translates_order_ids_to_unique_order_ids(adapter):
    ack = adapter.place_order(order(quantity=Decimal(3)))
    [trade] = adapter.trade_book()
    assert trade.broker_order_id == ack.broker_order_id
    assert (trade.symbol, trade.side, trade.quantity, trade.price) == (
        "INFY",
        Side.BUY,
        Decimal(3),
        Decimal("1500.00"),
    )
    assert trade.trade_id and trade.traded_at is not None


# Portfolio, funds, quotes, instruments ---------------------------------------------------------


def test_funds_parse_rms_strings_exactly(adapter):
    funds = adapter.funds()
    assert funds.total == Decimal("1000000.00")
    assert (funds.available, funds.used_margin, funds.currency) == (
        Decimal("1000000.00"),
        Decimal(0),
        "INR",
    )
    adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1400.05")))
    funds = adapter.funds()
    assert funds.used_margin == Decimal("2800.10")
    assert funds.available == Decimal("997199.90")


def test_positions_show_the_signed_net_quantity(adapter):
    adapter.place_order(order(quantity=Decimal(4)))
    adapter.place_order(order(side=Side.SELL, quantity=Decimal(1)))
    [position] = adapter.positions()
    assert (position.symbol, position.exchange, position.quantity) == ("INFY", "NSE", Decimal(3))
    assert (position.average_price, position.product) == (Decimal("1500.00"), "INTRADAY")


def test_holdings_come_from_get_holding(adapter):
    [holding] = adapter.holdings()
    assert (holding.symbol, holding.quantity, holding.average_price) == (
        "SBIN",
        Decimal(10),
        Decimal("600.5"),
    )
    assert holding.last_price == Decimal("812.35")
    assert holding.pnl == (Decimal("812.35") - Decimal("600.50")) * 10


def test_quotes_resolve_tokens_from_the_master_once_per_adapter(adapter, sim):
    [infy, sbin] = adapter.quotes([("NSE", "INFY"), ("NSE", "SBIN")])
    assert (infy.symbol, infy.last_price) == ("INFY", Decimal("1500"))
    assert (sbin.symbol, sbin.last_price) == ("SBIN", Decimal("812.35"))
    assert (sbin.bid, sbin.ask) == (Decimal("812.30"), Decimal("812.40"))
    adapter.quotes([("NSE", "RELIANCE-EQ")])  # Angel's own symbol works too
    assert sim.master_downloads == 1
    other = AngelAdapter(credentials=credentials(), base_url=adapter.base_url)
    other.session = adapter.session
    other.quotes([("NSE", "INFY")])
    assert sim.master_downloads == 2  # the map lives on the instance, not the module


def test_quote_of_an_unknown_symbol_is_invalid_instrument(adapter):
    with pytest.raises(errors.InvalidInstrument):
        adapter.quotes([("NSE", "NOSUCH")])


def test_instrument_master_parses_angels_scrip_master(adapter):
    records = {r.broker_token: r for r in adapter.instrument_master()}
    sbin = records["3045"]
    assert (sbin.symbol, sbin.broker_symbol, sbin.exchange) == ("SBIN", "SBIN-EQ", "NSE")
    assert (sbin.tick_size, sbin.lot_size, sbin.instrument_type) == (
        Decimal("0.05"),
        Decimal(1),
        "EQ",
    )
    assert sbin.strike is None and sbin.expiry == ""
    option = records["58784"]
    assert (option.symbol, option.exchange, option.instrument_type) == (
        "NIFTY28OCT2524400CE",
        "NFO",
        "OPTIDX",
    )
    assert (option.strike, option.expiry, option.lot_size) == (
        Decimal("24400"),
        "2025-10-28",
        Decimal(75),
    )


def test_instrument_master_url_is_angels_file_in_production_and_the_simulators_otherwise():
    production = AngelAdapter(credentials=credentials())
    assert production.instrument_master_url() == (
        "https://margincalculator.angelbroking.com/OpenAPI_File/files/OpenAPIScripMaster.json"
    )
    local = AngelAdapter(credentials=credentials(), base_url="http://127.0.0.1:9/")
    assert local.instrument_master_url() == (
        "http://127.0.0.1:9/OpenAPI_File/files/OpenAPIScripMaster.json"
    )


def test_secrets_never_reach_repr(adapter):
    text = repr(adapter) + repr(adapter.session)
    for secret in (API_KEY, USER["mpin"], USER["totp_secret"], adapter.session.access_token):
        assert secret not in text
    assert AngelAdapter.secret_field_names() == {"api_key", "mpin", "totp_secret"}


def test_totp_window_is_thirty_seconds(url):
    # The simulator accepts one step either side; a code from two minutes ago must fail.
    from brokers.simulators.angel import _totp_matches

    secret = USER["totp_secret"]
    assert _totp_matches(secret, pyotp.TOTP(secret).now())
    assert not _totp_matches(secret, pyotp.TOTP(secret).at(time.time() - 120))
