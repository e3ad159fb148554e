"""Fyers API v3 adapter: auth-code login, orders through the sync order API, portfolio, quotes.

Sources: Fyers' v3 documentation (myapi.fyers.in/docsv3) and the official fyers-apiv3 SDKs.
Where the docs leave a point open, the choice and its reason are written next to the code.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import requests

from . import errors
from .base import (
    IST,
    AuthFlow,
    BrokerAdapter,
    BrokerOrder,
    CredentialField,
    Funds,
    Holding,
    InstrumentRecord,
    OrderAck,
    OrderModification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Quote,
    SessionData,
    Side,
    Trade,
    Validity,
    decimal_or_zero,
    to_decimal,
)

#: Fyers says a refresh token is valid for 15 days (and that refresh tokens are being
#: discontinued, "from 1st April" in the 2026 docs; until then we use them).
REFRESH_TOKEN_LIFETIME = timedelta(days=15)

ORDER_TYPES = {
    OrderType.LIMIT: 1,
    OrderType.MARKET: 2,
    OrderType.STOP: 3,  # SL-M
    OrderType.STOP_LIMIT: 4,  # SL-L
}
ORDER_TYPES_BY_NUMBER = {number: order_type for order_type, number in ORDER_TYPES.items()}

SIDES = {Side.BUY: 1, Side.SELL: -1}
SIDES_BY_NUMBER = {number: side for side, number in SIDES.items()}

PRODUCTS = {Product.DELIVERY: "CNC", Product.INTRADAY: "INTRADAY", Product.MARGIN: "MARGIN"}

VALIDITIES = {Validity.DAY: "DAY", Validity.IOC: "IOC"}  # Fyers has no GTC for regular orders

#: Numeric order status -> standard status. 3 is documented as "not used currently".
STATUSES = {
    1: OrderStatus.CANCELLED,
    2: OrderStatus.FILLED,
    4: OrderStatus.PENDING,  # transit: sent on, no answer from the exchange yet
    5: OrderStatus.REJECTED,
    6: OrderStatus.OPEN,
    7: OrderStatus.EXPIRED,
}

#: Fyers' negative error codes -> typed errors.
#: -8/-15/-16/-17 are all token problems: whether the token lapsed overnight or was revoked
#: (logout elsewhere, app re-created), the cure is the same new interactive login, so they all
#: raise SessionExpired. -352 is an unknown app id: the stored client_id is wrong.
#: -437 (auth code refused) and -371 (appIdHash refused, i.e. wrong secret) happen at login:
#: the credentials or the code from the redirect were refused. -501 is a refused refresh token:
#: it lapsed (15 days) or was revoked, so only a new browser login helps (SessionExpired); a
#: wrong PIN at refresh is reported under the same code, told apart by its message.
#: -441/-442 (missing auth code / wrong grant_type) are our own request mistakes.
ERROR_CODES: dict[int, type[errors.BrokerError]] = {
    -8: errors.SessionExpired,
    -15: errors.SessionExpired,
    -16: errors.SessionExpired,
    -17: errors.SessionExpired,
    -50: errors.InputError,
    -51: errors.NotFound,
    -53: errors.NotFound,
    -99: errors.OrderRejected,
    -300: errors.InvalidInstrument,
    -352: errors.InvalidCredentials,
    -371: errors.InvalidCredentials,
    -429: errors.RateLimited,
    -437: errors.InvalidCredentials,
    -441: errors.InputError,
    -442: errors.InputError,
    -501: errors.SessionExpired,
}

#: Words in a -99 rejection that mean the account lacked money (e.g. "RED:Margin Shortfall:...").
FUNDS_WORDS = ("margin", "fund", "insufficient", "shortfall")

#: Fallback by HTTP status when the body carries no known code (Fyers' documented statuses).
HTTP_STATUS_ERRORS: dict[int, type[errors.BrokerError]] = {
    400: errors.InputError,
    401: errors.SessionExpired,
    403: errors.AuthError,
    404: errors.NotFound,
}

#: Fyers "Exchange Instrument type" codes for the capital-market segment (symbol master col 3).
INSTRUMENT_TYPES = {
    0: "EQ",
    1: "PREFSHARES",
    2: "DEBENTURES",
    3: "WARRANTS",
    4: "MISC",
    5: "SGB",
    6: "GSECS",
    7: "TBILLS",
    8: "MF",
    9: "ETF",
    10: "INDEX",
    50: "MISC",
}

# Columns of the headerless symbol master CSV (21 per row), by position.
MASTER_FYTOKEN = 0
MASTER_DESCRIPTION = 1
MASTER_INSTRUMENT_TYPE = 2
MASTER_LOT_SIZE = 3
MASTER_TICK_SIZE = 4
MASTER_EXPIRY = 8
MASTER_TICKER = 9
MASTER_STRIKE = 15

ORDER_TAG_PREFIX = "1:"  # Fyers shows a tag we sent as "1:<tag>"; "2:" marks its own tags


class FyersAdapter(BrokerAdapter):
    """Fyers API v3: OAuth-style auth-code login, JSON orders, day-long access tokens."""

    code = "fyers"
    name = "Fyers"
    auth_flow = AuthFlow.OAUTH_REDIRECT
    credential_fields = (
        CredentialField(
            "client_id",
            "App ID",
            help_text='The app id from the Fyers API dashboard, like "ABCD1234-100".',
        ),
        CredentialField("secret_key", "Secret key", secret=True),
        CredentialField(
            "pin",
            "PIN",
            secret=True,
            required=False,
            help_text="Your 4-digit Fyers PIN; lets the platform renew the session each morning "
            "without a browser login.",
        ),
    )
    has = {
        "oauth_login": True,
        "credentials_login": False,
        "refresh_session": True,
        "logout": True,
        "place_order": True,
        "modify_order": True,
        "cancel_order": True,
        "order_status": True,
        "order_book": True,
        "trade_book": True,
        "positions": True,
        "holdings": True,
        "funds": True,
        "quotes": True,
        "instrument_master": True,
    }
    order_types = frozenset(ORDER_TYPES)
    production_base_url = "https://api-t1.fyers.in"
    #: Fyers publishes one symbol master per segment; we read the NSE cash market.
    instrument_master_url = "https://public.fyers.in/sym_details/NSE_CM.csv"
    # One budget for every call an app makes (docs: 10/s, 200/min, 100,000/day), so every
    # request uses the "default" category rather than splitting orders and data.
    rate_limits = {"default": ("10/second", "200/minute", "100000/day")}
    # Docs: an order tag is alphanumeric, 1-30 characters, and not "Untagged" or the client id.
    # A refreshed access token still ends at the same midnight: renew after expiry instead.
    renew_after_expiry = True
    # Fyers counts its limits per app (client_id): one budget for every account on the app.
    rate_limit_app_field = "client_id"
    client_order_id_max_length = 30
    currency = "INR"

    # Authentication --------------------------------------------------------------------------

    def login_url(self, *, state: str, redirect_url: str) -> str:
        query = urlencode(
            {
                "client_id": self.credentials["client_id"],
                "redirect_uri": redirect_url,
                "response_type": "code",
                "state": state,
            }
        )
        return f"{self.base_url}/api/v3/generate-authcode?{query}"

    def complete_login(self, params: Mapping[str, str], *, redirect_url: str = "") -> SessionData:
        # The redirect carries s=ok&code=200&auth_code=...&state=...; "code" is a status, not
        # the auth code. Checking state is the caller's job: it made it.
        if params.get("s") != "ok" or not params.get("auth_code"):
            raise errors.InvalidCredentials(
                params.get("message") or "Fyers did not return an auth code.",
                broker_code=params.get("code") or None,
            )
        payload = self._post_unauthenticated(
            "/api/v3/validate-authcode",
            {
                "grant_type": "authorization_code",
                "appIdHash": self.app_id_hash(),
                "code": params["auth_code"],
            },
        )
        issued_at = datetime.now(IST)
        self.session = SessionData(
            access_token=_required(payload, "access_token"),
            refresh_token=payload.get("refresh_token") or "",
            issued_at=issued_at,
            expires_at=access_token_expiry(issued_at),
            extra={
                "refresh_token_expires_at": (issued_at + REFRESH_TOKEN_LIFETIME).isoformat()
                if payload.get("refresh_token")
                else "",
            },
        )
        return self.session

    def refresh(self) -> SessionData:
        if self.session is None or not self.session.refresh_token:
            raise errors.SessionExpired("No Fyers refresh token; log in again.")
        pin = self.credentials.get("pin") or ""
        if not pin:
            raise errors.NotSupported("Store the Fyers PIN to renew sessions without a login.")
        payload = self._post_unauthenticated(
            "/api/v3/validate-refresh-token",
            {
                "grant_type": "refresh_token",
                "appIdHash": self.app_id_hash(),
                "refresh_token": self.session.refresh_token,
                "pin": pin,
            },
        )
        issued_at = datetime.now(IST)
        # Only a new access token comes back; the refresh token keeps its original 15 days.
        self.session = SessionData(
            access_token=_required(payload, "access_token"),
            refresh_token=self.session.refresh_token,
            feed_token=self.session.feed_token,
            issued_at=issued_at,
            expires_at=access_token_expiry(issued_at),
            extra=dict(self.session.extra),
        )
        return self.session

    def logout(self) -> None:
        self._call("POST", "/api/v3/logout")

    def app_id_hash(self) -> str:
        """sha256 hex of "client_id:secret_key", which Fyers takes instead of the secret."""
        return hashlib.sha256(
            f"{self.credentials['client_id']}:{self.credentials['secret_key']}".encode()
        ).hexdigest()

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        body = {
            "symbol": fyers_symbol(order.exchange, order.symbol, order.broker_symbol),
            "qty": _whole_number(order.quantity, "quantity"),
            "type": ORDER_TYPES[order.order_type],
            "side": SIDES[order.side],
            "productType": PRODUCTS[order.product],
            "limitPrice": order.price
            if order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and order.price
            else 0,
            "stopPrice": order.trigger_price
            if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and order.trigger_price
            else 0,
            "validity": _validity(order.validity),
            "disclosedQty": 0,
            "offlineOrder": False,
            "stopLoss": 0,
            "takeProfit": 0,
            "orderTag": _order_tag(order.client_order_id),
        }
        payload = self._call("POST", "/api/v3/orders/sync", json_body=body, write=True)
        if payload.get("code") == 201:
            # Docs: 201 means the request went out but no acknowledgement came back.
            raise errors.OutcomeUnknown(
                payload.get("message") or "Fyers has not acknowledged the order yet.",
                broker_code="201",
            )
        return OrderAck(
            broker_order_id=str(_required(payload, "id")),
            status=OrderStatus.PENDING,
            message=payload.get("message") or "",
        )

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        body: dict[str, Any] = {"id": broker_order_id}
        if changes.quantity is not None:
            body["qty"] = _whole_number(changes.quantity, "quantity")
        if changes.order_type is not None:
            body["type"] = ORDER_TYPES[changes.order_type]
        if changes.price is not None:
            body["limitPrice"] = changes.price
        if changes.trigger_price is not None:
            body["stopPrice"] = changes.trigger_price
        payload = self._call("PATCH", "/api/v3/orders/sync", json_body=body, write=True)
        return OrderAck(
            broker_order_id=str(payload.get("id") or broker_order_id),
            status=OrderStatus.OPEN,
            message=payload.get("message") or "",
        )

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        payload = self._call(
            "DELETE", "/api/v3/orders/sync", json_body={"id": broker_order_id}, write=True
        )
        return OrderAck(
            broker_order_id=str(payload.get("id") or broker_order_id),
            status=OrderStatus.CANCELLED,
            message=payload.get("message") or "",
        )

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        payload = self._call("GET", "/api/v3/orders", params={"id": broker_order_id})
        for row in payload.get("orderBook") or []:
            if str(row.get("id")) == str(broker_order_id):
                return _order(row)
        raise errors.NotFound(f"Fyers has no order {broker_order_id}.", broker_code="-51")

    def find_order(self, client_order_id: str) -> BrokerOrder | None:
        # The order book filters on the tag as Fyers shows it, "1:<tag>".
        payload = self._call(
            "GET", "/api/v3/orders", params={"order_tag": ORDER_TAG_PREFIX + client_order_id}
        )
        for row in payload.get("orderBook") or []:
            order = _order(row)
            if order.client_order_id == client_order_id:
                return order
        return None

    def order_book(self) -> list[BrokerOrder]:
        payload = self._call("GET", "/api/v3/orders")
        return [_order(row) for row in payload.get("orderBook") or []]

    def trade_book(self) -> list[Trade]:
        payload = self._call("GET", "/api/v3/tradebook")
        trades = []
        for row in payload.get("tradeBook") or []:
            exchange, symbol = split_fyers_symbol(row.get("symbol", ""))
            trades.append(
                Trade(
                    trade_id=str(row.get("tradeNumber", "")),
                    broker_order_id=str(row.get("orderNumber", "")),
                    symbol=symbol,
                    exchange=exchange,
                    side=SIDES_BY_NUMBER[int(row["side"])],
                    quantity=decimal_or_zero(row.get("tradedQty")),
                    price=decimal_or_zero(row.get("tradePrice")),
                    traded_at=parse_fyers_time(row.get("orderDateTime")),
                )
            )
        return trades

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        payload = self._call("GET", "/api/v3/positions")
        positions = []
        for row in payload.get("netPositions") or []:
            exchange, symbol = split_fyers_symbol(row.get("symbol", ""))
            positions.append(
                Position(
                    symbol=symbol,
                    exchange=exchange,
                    quantity=decimal_or_zero(row.get("netQty")),
                    average_price=decimal_or_zero(row.get("netAvg")),
                    product=str(row.get("productType", "")),
                    last_price=to_decimal(row.get("ltp")),
                    pnl=to_decimal(row.get("pl")),
                    position_id=str(row.get("id", "")),
                )
            )
        return positions

    def holdings(self) -> list[Holding]:
        payload = self._call("GET", "/api/v3/holdings")
        holdings = []
        for row in payload.get("holdings") or []:
            exchange, symbol = split_fyers_symbol(row.get("symbol", ""))
            holdings.append(
                Holding(
                    symbol=symbol,
                    exchange=exchange,
                    quantity=decimal_or_zero(row.get("quantity")),
                    average_price=decimal_or_zero(row.get("costPrice")),
                    last_price=to_decimal(row.get("ltp")),
                    pnl=to_decimal(row.get("pl")),
                )
            )
        return holdings

    def funds(self) -> Funds:
        payload = self._call("GET", "/api/v3/funds")
        # fund_limit rows by id: 1 Total Balance, 2 Utilized Amount, 10 Available Balance.
        amounts = {
            int(row["id"]): decimal_or_zero(row.get("equityAmount"))
            for row in payload.get("fund_limit") or []
        }
        if 10 not in amounts:
            raise errors.BrokerError("Fyers funds answer has no Available Balance row.")
        return Funds(
            total=amounts.get(1, amounts[10]),
            available=amounts[10],
            used_margin=amounts.get(2, Decimal(0)),
            currency=self.currency,
        )

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        wanted = {
            fyers_symbol(exchange, symbol): (exchange, symbol) for exchange, symbol in instruments
        }
        payload = self._call("GET", "/data/quotes", params={"symbols": ",".join(wanted)})
        quotes = []
        for row in payload.get("d") or []:
            name = row.get("n", "")
            values = row.get("v") or {}
            if row.get("s") != "ok":
                raise errors.InvalidInstrument(
                    f"Fyers has no quote for {name}: {values.get('errmsg', 'invalid symbol')}",
                    broker_code="-300",
                )
            exchange, symbol = wanted.get(name) or split_fyers_symbol(name)
            quotes.append(
                Quote(
                    symbol=symbol,
                    exchange=exchange,
                    last_price=decimal_or_zero(values.get("lp")),
                    bid=to_decimal(values.get("bid")),
                    ask=to_decimal(values.get("ask")),
                    open=to_decimal(values.get("open_price")),
                    high=to_decimal(values.get("high_price")),
                    low=to_decimal(values.get("low_price")),
                    close=to_decimal(values.get("prev_close_price")),
                    volume=to_decimal(values.get("volume")),
                )
            )
        return quotes

    def instrument_master(self) -> list[InstrumentRecord]:
        # The master lives on public.fyers.in, not the API host; a test or staging base URL
        # serves it under the same path.
        if self.base_url == self.production_base_url:
            url = self.instrument_master_url
        else:
            url = self.base_url + "/sym_details/NSE_CM.csv"
        self.throttle("default")
        try:
            response = self.http.get(url, timeout=(self.connect_timeout, 60))
        except requests.exceptions.RequestException as exc:
            raise errors.BrokerUnavailable("Could not download the Fyers symbol master.") from exc
        if response.status_code != 200:
            raise errors.BrokerUnavailable(
                f"Fyers symbol master download failed (HTTP {response.status_code}).",
                http_status=response.status_code,
            )
        return parse_symbol_master(response.content.decode("utf-8-sig"))

    # HTTP --------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self.session is None or not self.session.access_token:
            raise errors.SessionExpired("Not logged in to Fyers.")
        return {
            "Authorization": f"{self.credentials['client_id']}:{self.session.access_token}",
            "Content-Type": "application/json",
            "version": "3",
        }

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: dict | None = None,
        params: dict | None = None,
        write: bool = False,
    ) -> dict:
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if params:
            kwargs["params"] = params
        if json_body is not None:
            kwargs["data"] = _dumps(json_body)
        response = self._request(method, path, write=write, category="default", **kwargs)
        return self._check(response)

    def _post_unauthenticated(self, path: str, body: dict) -> dict:
        response = self._request(
            "POST",
            path,
            category="default",
            data=_dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return self._check(response)

    def _check(self, response: requests.Response) -> dict:
        """The payload of a success envelope, or the typed error for a failure one."""
        payload = self._json(response)
        if not isinstance(payload, dict):
            raise errors.BrokerError(
                "Fyers sent an unexpected answer.", http_status=response.status_code
            )
        if payload.get("s") == "ok" and response.status_code < 400:
            return payload
        raise error_for(payload, response.status_code, response.headers.get("Retry-After"))

    def _describe_error(self, response: requests.Response) -> tuple[str, str | None]:
        try:
            payload = response.json()
        except ValueError:
            return response.text[:200], None
        if not isinstance(payload, dict):
            return response.text[:200], None
        code = payload.get("code")
        return str(payload.get("message") or ""), (str(code) if code is not None else None)


# --- Helpers ---------------------------------------------------------------------------------


def access_token_expiry(issued_at: datetime) -> datetime:
    """When a Fyers access token stops working: the next midnight IST after it was issued.

    UNCONFIRMED: Fyers documents the token as valid "for the day" without a time. Midnight IST
    is the earliest reading, so we never trust a token Fyers has already dropped; refreshing
    (or logging in) a little early costs nothing.
    """
    local = issued_at.astimezone(IST)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=IST)


def error_for(
    payload: Mapping[str, Any], http_status: int, retry_after: str | None = None
) -> errors.BrokerError:
    """The typed error for a Fyers error envelope ``{"s": "error", "code": -N, "message"}``."""
    message = str(payload.get("message") or "Fyers refused the request.")
    try:
        code = int(payload.get("code"))
    except (TypeError, ValueError):
        code = None
    broker_code = str(code) if code is not None else None
    error_class = ERROR_CODES.get(code) if code is not None else None
    if error_class is None:
        error_class = HTTP_STATUS_ERRORS.get(http_status, errors.BrokerError)
    lowered = message.lower()
    if error_class is errors.OrderRejected and any(word in lowered for word in FUNDS_WORDS):
        error_class = errors.InsufficientFunds
    if code == -501 and "pin" in lowered:
        error_class = errors.InvalidCredentials
    if error_class is errors.RateLimited:
        return errors.RateLimited(
            message,
            retry_after=to_decimal(retry_after) if retry_after else None,
            broker_code=broker_code,
            http_status=http_status,
        )
    return error_class(message, broker_code=broker_code, http_status=http_status)


def fyers_symbol(exchange: str, symbol: str, broker_symbol: str = "") -> str:
    """Fyers' symbol for an instrument: the master's ticker when known, else a cash equity.

    ("NSE", "INFY") -> "NSE:INFY-EQ". Derivatives and other series (-BE, indices) need the
    ticker from the instrument master, passed as ``broker_symbol``.
    """
    if broker_symbol:
        return broker_symbol
    return f"{exchange.upper()}:{symbol.upper()}-EQ"


def split_fyers_symbol(fyers_name: str) -> tuple[str, str]:
    """Split "NSE:INFY-EQ" into ("NSE", "INFY"); other series stay whole ("NSE:ABC-BE")."""
    exchange, _, ticker = fyers_name.partition(":")
    if not ticker:
        return "", exchange
    if ticker.endswith("-EQ"):
        ticker = ticker[: -len("-EQ")]
    return exchange, ticker


def parse_fyers_time(value: Any) -> datetime | None:
    """Fyers times are IST text: "09-Mar-2023 09:34:38" (some endpoints "09-03-2023 ...")."""
    if not value:
        return None
    for pattern in ("%d-%b-%Y %H:%M:%S", "%d-%m-%Y %H:%M:%S"):
        try:
            return datetime.strptime(str(value), pattern).replace(tzinfo=IST)
        except ValueError:
            continue
    return None


def normalize_status(status: Any, quantity: Decimal, filled: Decimal) -> OrderStatus:
    """Fyers' numeric status, with pending orders that have some fills as PARTIALLY_FILLED."""
    try:
        number = int(status)
    except (TypeError, ValueError):
        raise errors.BrokerError(f"Fyers sent an unknown order status {status!r}.") from None
    normalized = STATUSES.get(number)
    if normalized is None:
        raise errors.BrokerError(f"Fyers sent an unknown order status {status!r}.")
    if normalized == OrderStatus.OPEN and 0 < filled < quantity:
        return OrderStatus.PARTIALLY_FILLED
    return normalized


def parse_symbol_master(text: str) -> list[InstrumentRecord]:
    """Rows of a Fyers symbol master CSV (no header, 21 columns) as InstrumentRecords."""
    records = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) <= MASTER_STRIKE or not row[MASTER_TICKER]:
            continue
        exchange, symbol = split_fyers_symbol(row[MASTER_TICKER])
        try:
            type_code = int(row[MASTER_INSTRUMENT_TYPE])
        except ValueError:
            type_code = None
        strike = to_decimal(row[MASTER_STRIKE])
        records.append(
            InstrumentRecord(
                symbol=symbol,
                exchange=exchange,
                broker_symbol=row[MASTER_TICKER],
                broker_token=row[MASTER_FYTOKEN],
                lot_size=to_decimal(row[MASTER_LOT_SIZE]) or Decimal(1),
                tick_size=to_decimal(row[MASTER_TICK_SIZE]) or Decimal("0.05"),
                instrument_type=INSTRUMENT_TYPES.get(type_code, row[MASTER_INSTRUMENT_TYPE]),
                name=row[MASTER_DESCRIPTION],
                expiry=_expiry(row[MASTER_EXPIRY]),
                strike=strike if strike is not None and strike > 0 else None,
            )
        )
    return records


def _expiry(value: str) -> str:
    # Expiry is an epoch in seconds for derivatives, empty (or 0) for cash instruments.
    try:
        seconds = int(Decimal(value))
    except (ArithmeticError, ValueError):
        return ""
    if seconds <= 0:
        return ""
    return datetime.fromtimestamp(seconds, IST).date().isoformat()


def _order(row: Mapping[str, Any]) -> BrokerOrder:
    exchange, symbol = split_fyers_symbol(row.get("symbol", ""))
    quantity = decimal_or_zero(row.get("qty"))
    filled = decimal_or_zero(row.get("filledQty"))
    tag = str(row.get("orderTag") or "")
    return BrokerOrder(
        broker_order_id=str(row.get("id", "")),
        # Only "1:" tags are ours; "2:Untagged" and other "2:" tags are Fyers' own.
        client_order_id=tag[len(ORDER_TAG_PREFIX) :] if tag.startswith(ORDER_TAG_PREFIX) else "",
        symbol=symbol,
        exchange=exchange,
        side=SIDES_BY_NUMBER[int(row["side"])],
        order_type=ORDER_TYPES_BY_NUMBER[int(row["type"])],
        quantity=quantity,
        status=normalize_status(row.get("status"), quantity, filled),
        raw_status=str(row.get("status", "")),
        filled_quantity=filled,
        average_price=to_decimal(row.get("tradedPrice")) if filled else None,
        price=to_decimal(row.get("limitPrice")) or None,
        trigger_price=to_decimal(row.get("stopPrice")) or None,
        message=str(row.get("message") or ""),
        placed_at=parse_fyers_time(row.get("orderDateTime")),
    )


def _order_tag(client_order_id: str) -> str:
    if not (
        client_order_id.isascii()
        and client_order_id.isalnum()
        and len(client_order_id) <= FyersAdapter.client_order_id_max_length
        and client_order_id != "Untagged"
    ):
        raise errors.InputError(
            "A Fyers order tag must be 1-30 letters or digits (and not 'Untagged')."
        )
    return client_order_id


def _whole_number(value: Decimal, name: str) -> int:
    if value != value.to_integral_value():
        raise errors.InputError(f"Fyers takes a whole-number {name}, not {value}.")
    return int(value)


def _validity(validity: Validity) -> str:
    try:
        return VALIDITIES[validity]
    except KeyError:
        raise errors.InputError(f"Fyers orders are DAY or IOC, not {validity}.") from None


def _required(payload: Mapping[str, Any], key: str) -> Any:
    value = payload.get(key)
    if not value:
        raise errors.BrokerError(f"Fyers answer has no {key}.")
    return value


def _json_number(value: Any) -> Any:
    # Fyers takes prices as JSON numbers. A Decimal price has at most ~10 significant digits,
    # which a float's shortest repr reproduces exactly, so the digits on the wire are ours.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Not JSON serializable: {type(value)}")


def _dumps(body: Mapping[str, Any]) -> str:
    return json.dumps(body, default=_json_number)
