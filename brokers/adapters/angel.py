"""Angel One SmartAPI adapter (wire format as in the smartapi-python 1.5.x SDK).

Choices made where Angel's public material is silent or vague, and why:

- Order ids: Angel gives every order an ``orderid`` (exchange-day number, used by modify and
  cancel) and a ``uniqueorderid`` (a UUID, the only key of the single-order endpoint
  ``GET order/v1/details/{uniqueorderid}``). ``broker_order_id`` is the ``uniqueorderid``, so that
  ``order_status``, the most frequent call, is one cheap request. Modify and cancel read the
  order's details first (modifyOrder needs every field of the order anyway, and both need the
  ``orderid`` and ``variety``). Trade-book rows carry only ``orderid``, so ``trade_book`` reads
  the order book too to translate. A place answer without ``uniqueorderid`` raises
  OutcomeUnknown: the order exists, and ``find_order`` (by ``ordertag``) finds its id.
- ``client_order_id`` travels as ``ordertag``; Angel wants it under 20 characters, hence 19.
- Session expiry: Angel's staff say a fresh jwtToken lives 24-28 hours and that the token's own
  ``exp`` claim is authoritative, so ``expires_at`` is read from the JWT; if it has none, we
  assume the lower bound, 24 hours after login.
- Refresh (generateTokens) sends the current jwt as Bearer, as the SDK does. Refresh-token
  errors AB8050/AB8051 raise SessionExpired, not InvalidCredentials: the stored MPIN and TOTP
  secret are still good, and a fresh login fixes it.
- Insufficient funds: Angel's RMS accepts the order and lists it as ``rejected`` with the reason
  in ``text``; the adapter reports that, and also maps RMS error code RS-0111 (fund limit
  insufficient, seen in Angel's newer docs on placeOrder) to InsufficientFunds.
- A ``status: false`` answer with a code not in ERROR_CODES is OrderRejected on a write (the
  broker took the request and refused it) and a plain BrokerError on a read. Angel sometimes
  answers throttling with HTTP 200 and "exceeding access rate": that is RateLimited too.
- Quotes: ``market/v1/quote`` wants tokens, the platform passes (exchange, symbol); the first
  ``quotes()`` call on an instance downloads the scrip master and keeps a symbol -> token map on
  that instance (never module state).
- Scrip master: ``tick_size`` is in paise ("5.000000" is 0.05) and option ``strike`` is 100x the
  strike ("2440000.000000" is 24400); both are divided by 100. ``-1`` strikes mean none.
- Headers X-ClientLocalIP / X-ClientPublicIP / X-MACAddress are mandatory; like the SDK we send
  fixed IPs and this machine's MAC.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

import pyotp
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

AUTH = "/rest/auth/angelbroking"
SECURE = "/rest/secure/angelbroking"
SCRIP_MASTER_PATH = "/OpenAPI_File/files/OpenAPIScripMaster.json"
#: Used when the token carries no ``exp``: the low end of Angel's "24-28 hours".
DEFAULT_SESSION_LIFETIME = timedelta(hours=24)

ORDER_TYPES = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP: "STOPLOSS_MARKET",
    OrderType.STOP_LIMIT: "STOPLOSS_LIMIT",
}
ORDER_TYPES_FROM_ANGEL = {value: key for key, value in ORDER_TYPES.items()}
#: Angel needs variety STOPLOSS for stop orders and NORMAL for the rest.
VARIETIES = {
    OrderType.MARKET: "NORMAL",
    OrderType.LIMIT: "NORMAL",
    OrderType.STOP: "STOPLOSS",
    OrderType.STOP_LIMIT: "STOPLOSS",
}
PRODUCTS = {
    Product.DELIVERY: "DELIVERY",
    Product.INTRADAY: "INTRADAY",
    Product.MARGIN: "CARRYFORWARD",
}
DURATIONS = {Validity.DAY: "DAY", Validity.IOC: "IOC"}  # Angel has no GTC order

#: Angel's order status words (``status`` / ``orderstatus``, lowercase) -> normalized.
#: An ``open`` order with filled shares is PARTIALLY_FILLED (see _order_status).
STATUSES = {
    "open": OrderStatus.OPEN,
    "complete": OrderStatus.FILLED,
    "rejected": OrderStatus.REJECTED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "trigger pending": OrderStatus.OPEN,  # a stop order working at the broker
    "open pending": OrderStatus.PENDING,
    "validation pending": OrderStatus.PENDING,
    "put order req received": OrderStatus.PENDING,
    "after market order req received": OrderStatus.PENDING,
    "amo req received": OrderStatus.PENDING,
    "amo submitted": OrderStatus.PENDING,
    # Modify/cancel in flight or refused: the order itself is still working.
    "modify pending": OrderStatus.OPEN,
    "modify validation pending": OrderStatus.OPEN,
    "modified": OrderStatus.OPEN,
    "not modified": OrderStatus.OPEN,
    "cancel pending": OrderStatus.OPEN,
    "not cancelled": OrderStatus.OPEN,
}

#: Angel error codes -> typed errors. Gateway (AG...) and business (AB...) codes alike.
ERROR_CODES: dict[str, type[errors.BrokerError]] = {
    "AG8001": errors.SessionExpired,  # invalid token
    "AG8002": errors.SessionExpired,  # token expired
    "AG8003": errors.SessionExpired,  # token missing
    "AB1010": errors.SessionExpired,  # AMX session expired
    "AB1011": errors.SessionExpired,  # client not logged in
    "AB8050": errors.SessionExpired,  # invalid refresh token: log in again
    "AB8051": errors.SessionExpired,  # refresh token expired: log in again
    "AB1000": errors.InvalidCredentials,  # invalid client code or password (MPIN)
    "AB1050": errors.InvalidCredentials,  # invalid TOTP
    "AB1053": errors.InvalidCredentials,  # invalid api key
    "AB1005": errors.InvalidCredentials,  # user type must be USER
    "AB1006": errors.AccountLocked,  # client blocked for trading
    "AB1009": errors.InvalidInstrument,  # symbol not found
    "AB1018": errors.InvalidInstrument,  # failed to get symbol details
    "AB1013": errors.NotFound,  # order not found
    "AB1008": errors.InputError,  # invalid order variety
    "AB1012": errors.InputError,  # invalid product type
    "AB1004": errors.BrokerUnavailable,  # something went wrong, try after some time
    "AB2001": errors.BrokerUnavailable,  # internal error, try after some time
    "RS-0111": errors.InsufficientFunds,  # RMS: fund limit insufficient
}
RATE_LIMIT_MESSAGE = "exceeding access rate"


class AngelAdapter(BrokerAdapter):
    """Angel One SmartAPI: headless login with client code, MPIN and a TOTP secret."""

    code = "angel"
    name = "Angel One"
    auth_flow = AuthFlow.CREDENTIALS_TOTP
    credential_fields = (
        CredentialField("api_key", "API key", secret=True, help_text="SmartAPI app's API key"),
        CredentialField("client_code", "Client code"),
        CredentialField("mpin", "MPIN", secret=True),
        CredentialField(
            "totp_secret",
            "TOTP secret",
            secret=True,
            help_text="The base32 secret shown when you enabled TOTP for SmartAPI",
        ),
    )
    has: ClassVar[Mapping[str, bool]] = {
        "oauth_login": False,
        "credentials_login": True,
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
    production_base_url = "https://apiconnect.angelone.in"
    production_instrument_master_url = (
        "https://margincalculator.angelbroking.com" + SCRIP_MASTER_PATH
    )
    # Angel's documented limits, per endpoint. The single-order details endpoint has no
    # published limit (UNCONFIRMED): it falls to "default".
    rate_limits: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "login": ("1/second",),
        "refresh": ("1/second", "1000/hour"),
        "profile": ("3/second",),
        "funds": ("2/second",),
        "orders": ("20/second", "500/minute", "1000/hour"),
        "modify": ("20/second", "500/minute", "1000/hour"),
        "cancel": ("20/second", "500/minute", "1000/hour"),
        "order_book": ("1/second",),
        "trade_book": ("1/second",),
        "positions": ("1/second",),
        "holdings": ("1/second",),
        "quotes": ("10/second", "500/minute", "5000/hour"),
        "default": ("10/second",),
    }
    # SmartAPI counts its limits per API key (X-PrivateKey).
    rate_limit_app_field = "api_key"
    client_order_id_max_length = 19  # "ordertag ... should be less than 20 characters"
    currency = "INR"

    # Headers the SDK sends; the IPs are fixed values there too.
    client_local_ip: ClassVar[str] = "127.0.0.1"
    client_public_ip: ClassVar[str] = "127.0.0.1"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._tokens: dict[tuple[str, str], tuple[str, str]] | None = None

    # Authentication --------------------------------------------------------------------------

    def login(self) -> SessionData:
        try:
            totp = pyotp.TOTP(self.credentials["totp_secret"]).now()
        except (ValueError, TypeError, KeyError) as exc:  # binascii.Error is a ValueError
            raise errors.InvalidCredentials("The TOTP secret is not a valid base32 key.") from exc
        body = {
            "clientcode": self.credentials.get("client_code", ""),
            "password": self.credentials.get("mpin", ""),
            "totp": totp,
        }
        data = self._call(
            "POST", f"{AUTH}/user/v1/loginByPassword", json=body, category="login", auth=False
        )
        self.session = _session_from(data)
        return self.session

    def refresh(self) -> SessionData:
        if self.session is None or not self.session.refresh_token:
            raise errors.SessionExpired("No refresh token: log in again.")
        data = self._call(
            "POST",
            f"{AUTH}/jwt/v1/generateTokens",
            json={"refreshToken": self.session.refresh_token},
            category="refresh",
        )
        self.session = _session_from(data)
        return self.session

    def logout(self) -> None:
        self._call(
            "POST",
            f"{SECURE}/user/v1/logout",
            json={"clientcode": self.credentials.get("client_code", "")},
        )
        self.session = None

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        if not order.broker_token:
            raise errors.InvalidInstrument(
                f"No Angel symbol token for {order.exchange}:{order.symbol}; "
                "look it up in the instrument master first."
            )
        if len(order.client_order_id) > self.client_order_id_max_length:
            raise errors.InputError(
                f"Angel order tags must be under 20 characters: {order.client_order_id!r}"
            )
        if order.validity not in DURATIONS:
            raise errors.InputError(f"Angel One has no {order.validity} orders.")
        body = {
            "variety": VARIETIES[order.order_type],
            "tradingsymbol": order.broker_symbol or order.symbol,
            "symboltoken": order.broker_token,
            "transactiontype": order.side.value,
            "exchange": order.exchange,
            "ordertype": ORDER_TYPES[order.order_type],
            "producttype": PRODUCTS[order.product],
            "duration": DURATIONS[order.validity],
            "price": _text(order.price),
            "triggerprice": _text(order.trigger_price),
            "squareoff": "0",
            "stoploss": "0",
            "quantity": _text(order.quantity),
            "ordertag": order.client_order_id,
        }
        data = self._call(
            "POST", f"{SECURE}/order/v1/placeOrder", json=body, write=True, category="orders"
        )
        unique_order_id = (data or {}).get("uniqueorderid") or ""
        if not unique_order_id:
            raise errors.OutcomeUnknown(
                "Angel accepted the order but sent no uniqueorderid; find it by its tag."
            )
        return OrderAck(broker_order_id=unique_order_id, message="SUCCESS")

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        current = self._details(broker_order_id)
        order_type = ORDER_TYPES[changes.order_type] if changes.order_type else current["ordertype"]
        price = changes.price if changes.price is not None else to_decimal(current["price"])
        trigger = (
            changes.trigger_price
            if changes.trigger_price is not None
            else to_decimal(current["triggerprice"])
        )
        quantity = changes.quantity if changes.quantity is not None else current["quantity"]
        body = {
            "variety": current["variety"],
            "orderid": current["orderid"],
            "ordertype": order_type,
            "producttype": current["producttype"],
            "duration": current["duration"],
            "price": _text(price),
            "triggerprice": _text(trigger),
            "quantity": _text(to_decimal(quantity)),
            "tradingsymbol": current["tradingsymbol"],
            "symboltoken": current["symboltoken"],
            "exchange": current["exchange"],
        }
        self._call(
            "POST", f"{SECURE}/order/v1/modifyOrder", json=body, write=True, category="modify"
        )
        return OrderAck(broker_order_id=broker_order_id, message="SUCCESS")

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        current = self._details(broker_order_id)
        body = {"variety": current["variety"], "orderid": current["orderid"]}
        self._call(
            "POST", f"{SECURE}/order/v1/cancelOrder", json=body, write=True, category="cancel"
        )
        return OrderAck(broker_order_id=broker_order_id, message="SUCCESS")

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        return _order(self._details(broker_order_id))

    def order_book(self) -> list[BrokerOrder]:
        return [_order(row) for row in self._order_rows()]

    def trade_book(self) -> list[Trade]:
        rows = self._call("GET", f"{SECURE}/order/v1/getTradeBook", category="trade_book") or []
        unique_ids = {}
        if rows:
            unique_ids = {row["orderid"]: row["uniqueorderid"] for row in self._order_rows()}
        today = datetime.now(IST).date()
        return [
            Trade(
                trade_id=str(row.get("fillid", "")),
                broker_order_id=unique_ids.get(row["orderid"], row["orderid"]),
                symbol=_common_symbol(row["tradingsymbol"]),
                exchange=row["exchange"],
                side=Side(row["transactiontype"]),
                quantity=decimal_or_zero(row.get("fillsize")),
                price=decimal_or_zero(row.get("fillprice")),
                traded_at=_fill_time(row.get("filltime", ""), today),
            )
            for row in rows
        ]

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        rows = self._call("GET", f"{SECURE}/order/v1/getPosition", category="positions") or []
        return [
            Position(
                symbol=_common_symbol(row["tradingsymbol"]),
                exchange=row["exchange"],
                quantity=decimal_or_zero(row.get("netqty")),
                average_price=decimal_or_zero(row.get("avgnetprice")),
                product=row.get("producttype", ""),
                last_price=to_decimal(row.get("ltp")),
                pnl=to_decimal(row.get("pnl")),
            )
            for row in rows
        ]

    def holdings(self) -> list[Holding]:
        rows = self._call("GET", f"{SECURE}/portfolio/v1/getHolding", category="holdings") or []
        return [
            Holding(
                symbol=_common_symbol(row["tradingsymbol"]),
                exchange=row["exchange"],
                quantity=decimal_or_zero(row.get("quantity")),
                average_price=decimal_or_zero(row.get("averageprice")),
                last_price=to_decimal(row.get("ltp")),
                pnl=to_decimal(row.get("profitandloss")),
            )
            for row in rows
        ]

    def funds(self) -> Funds:
        data = self._call("GET", f"{SECURE}/user/v1/getRMS", category="funds") or {}
        # availablecash is the cash balance; net is what is left for new orders after the
        # margin used by open orders and positions (utiliseddebits).
        return Funds(
            total=decimal_or_zero(data.get("availablecash")),
            available=decimal_or_zero(data.get("net")),
            used_margin=decimal_or_zero(data.get("utiliseddebits")),
            currency=self.currency,
        )

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        tokens = self._symbol_tokens()
        wanted: dict[str, list[str]] = {}
        for exchange, symbol in instruments:
            try:
                _, token = tokens[(exchange, symbol)]
            except KeyError:
                raise errors.InvalidInstrument(f"Unknown instrument {exchange}:{symbol}") from None
            wanted.setdefault(exchange, []).append(token)
        body = {"mode": "FULL", "exchangeTokens": wanted}
        data = self._call("POST", f"{SECURE}/market/v1/quote", json=body, category="quotes")
        rows = (data or {}).get("fetched") or []
        fetched = {(row["exchange"], str(row["symbolToken"])): row for row in rows}
        quotes = []
        for exchange, symbol in instruments:
            _, token = tokens[(exchange, symbol)]
            row = fetched.get((exchange, token))
            if row is None:
                raise errors.InvalidInstrument(f"Angel sent no quote for {exchange}:{symbol}")
            depth = row.get("depth") or {}
            quotes.append(
                Quote(
                    symbol=symbol,
                    exchange=exchange,
                    last_price=decimal_or_zero(row.get("ltp")),
                    bid=_best(depth.get("buy")),
                    ask=_best(depth.get("sell")),
                    open=to_decimal(row.get("open")),
                    high=to_decimal(row.get("high")),
                    low=to_decimal(row.get("low")),
                    close=to_decimal(row.get("close")),
                    volume=to_decimal(row.get("tradeVolume")),
                )
            )
        return quotes

    def instrument_master(self) -> list[InstrumentRecord]:
        response = self._request(
            "GET",
            "",
            base_url=self.instrument_master_url(),
            category="instruments",
            headers={"Accept": "application/json"},
            timeout=(self.connect_timeout, 120),  # the real file is tens of megabytes
        )
        if response.status_code != 200:
            self._raise(response, write=False)
        return [_instrument(row) for row in self._json(response)]

    def instrument_master_url(self) -> str:
        """Angel's public file; on a simulator (any other base URL) the same path there."""
        if self.base_url == self.production_base_url.rstrip("/"):
            return self.production_instrument_master_url
        return self.base_url + SCRIP_MASTER_PATH

    # HTTP ------------------------------------------------------------------------------------

    def _headers(self, *, auth: bool = True) -> dict[str, str]:
        headers = {
            "Content-type": "application/json",
            "Accept": "application/json",
            "X-ClientLocalIP": self.client_local_ip,
            "X-ClientPublicIP": self.client_public_ip,
            "X-MACAddress": _mac_address(),
            "X-PrivateKey": self.credentials.get("api_key", ""),
            "X-UserType": "USER",
            "X-SourceID": "WEB",
        }
        if auth:
            if self.session is None or not self.session.access_token:
                raise errors.SessionExpired("Not logged in to Angel One.")
            headers["Authorization"] = f"Bearer {self.session.access_token}"
        return headers

    def _call(
        self,
        method: str,
        path: str,
        *,
        write: bool = False,
        category: str = "default",
        auth: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Send one SmartAPI request and return the envelope's ``data``, or raise."""
        response = self._request(
            method, path, write=write, category=category, headers=self._headers(auth=auth), **kwargs
        )
        body = _envelope(response)
        if body is None or not _succeeded(body):
            self._raise(response, write=write)
        return body.get("data")

    def _raise(self, response: requests.Response, *, write: bool) -> None:
        message, code = self._describe_error(response)
        if _envelope(response) is None and write:
            # No envelope to read (a proxy page, a cut body): the write may have happened.
            raise errors.OutcomeUnknown(message, http_status=response.status_code)
        error_class = ERROR_CODES.get(code or "")
        if error_class is None:
            if RATE_LIMIT_MESSAGE in message.lower():
                error_class = errors.RateLimited
            elif response.status_code == 401:
                error_class = errors.SessionExpired
            elif write:
                error_class = errors.OrderRejected
            else:
                error_class = errors.BrokerError
        raise error_class(
            message or f"Angel One refused the request (HTTP {response.status_code}).",
            broker_code=code,
            http_status=response.status_code,
        )

    def _describe_error(self, response: requests.Response) -> tuple[str, str | None]:
        body = _envelope(response)
        if body is None:
            return f"Angel One answered HTTP {response.status_code} without JSON.", None
        # Business errors say "errorcode", the token gateway says "errorCode".
        code = body.get("errorcode") or body.get("errorCode") or None
        return str(body.get("message") or ""), code

    # Lookups ---------------------------------------------------------------------------------

    def _details(self, broker_order_id: str) -> dict:
        unique_order_id = quote(broker_order_id, safe="")
        return self._call("GET", f"{SECURE}/order/v1/details/{unique_order_id}")

    def _order_rows(self) -> list[dict]:
        return self._call("GET", f"{SECURE}/order/v1/getOrderBook", category="order_book") or []

    def _symbol_tokens(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(exchange, symbol or broker symbol) -> (broker symbol, token), loaded once."""
        if self._tokens is None:
            tokens = {}
            for record in self.instrument_master():
                value = (record.broker_symbol, record.broker_token)
                tokens[(record.exchange, record.broker_symbol)] = value
                tokens.setdefault((record.exchange, record.symbol), value)
            self._tokens = tokens
        return self._tokens


def _envelope(response: requests.Response) -> dict | None:
    try:
        body = BrokerAdapter._json(response)
    except errors.BrokerError:
        return None
    return body if isinstance(body, dict) else None


def _succeeded(body: dict) -> bool:
    if "success" in body and body["success"] is not True:
        return False
    return body.get("status") is True or body.get("status") == "true"


def _session_from(data: Any) -> SessionData:
    if not isinstance(data, dict) or not data.get("jwtToken"):
        raise errors.BrokerError("Angel One sent no jwtToken.")
    issued_at = datetime.now(UTC)
    jwt = str(data["jwtToken"]).removeprefix("Bearer ")
    return SessionData(
        access_token=jwt,
        refresh_token=str(data.get("refreshToken") or ""),
        feed_token=str(data.get("feedToken") or ""),
        issued_at=issued_at,
        expires_at=session_expiry(jwt, issued_at),
    )


def session_expiry(jwt: str, issued_at: datetime) -> datetime:
    """When an Angel jwtToken stops working: its ``exp`` claim, else 24 hours after issue."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError):
        return issued_at + DEFAULT_SESSION_LIFETIME


def order_status(raw_status: str, filled: Decimal) -> OrderStatus:
    """Angel's status word -> normalized; an open order with fills is partially filled."""
    status = STATUSES.get(raw_status.strip().lower(), OrderStatus.PENDING)
    if status == OrderStatus.OPEN and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _order(row: dict) -> BrokerOrder:
    raw_status = str(row.get("orderstatus") or row.get("status") or "")
    filled = decimal_or_zero(row.get("filledshares"))
    average = to_decimal(row.get("averageprice"))
    return BrokerOrder(
        broker_order_id=row["uniqueorderid"],
        client_order_id=row.get("ordertag") or "",
        symbol=_common_symbol(row["tradingsymbol"]),
        exchange=row["exchange"],
        side=Side(row["transactiontype"]),
        order_type=ORDER_TYPES_FROM_ANGEL.get(row.get("ordertype"), OrderType.LIMIT),
        quantity=decimal_or_zero(row.get("quantity")),
        status=order_status(raw_status, filled),
        raw_status=raw_status,
        filled_quantity=filled,
        average_price=average if filled and average else None,
        price=_positive(row.get("price")),
        trigger_price=_positive(row.get("triggerprice")),
        message=row.get("text") or "",
        # The book has no creation time; updatetime ("16-Feb-2024 11:28:49", IST) is closest.
        placed_at=_book_time(row.get("updatetime", "")),
    )


def _instrument(row: dict) -> InstrumentRecord:
    strike = to_decimal(row.get("strike"))
    tick = to_decimal(row.get("tick_size"))
    return InstrumentRecord(
        symbol=_common_symbol(row["symbol"]),
        exchange=row["exch_seg"],
        broker_symbol=row["symbol"],
        broker_token=str(row["token"]),
        lot_size=to_decimal(row.get("lotsize")) or Decimal(1),
        tick_size=(tick / 100).normalize() if tick is not None else Decimal("0.05"),
        instrument_type=row.get("instrumenttype") or "EQ",
        name=row.get("name", ""),
        expiry=_expiry(row.get("expiry", "")),
        strike=(strike / 100).normalize() if strike is not None and strike > 0 else None,
    )


def _common_symbol(trading_symbol: str) -> str:
    """SBIN-EQ -> SBIN. Other series suffixes (-BE, -BL, ...) are different instruments."""
    return trading_symbol.removesuffix("-EQ")


def _expiry(value: str) -> str:
    """Scrip-master expiry "28OCT2025" -> "2025-10-28"."""
    if not value:
        return ""
    try:
        return datetime.strptime(value, "%d%b%Y").date().isoformat()
    except ValueError:
        return ""


def _book_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%d-%b-%Y %H:%M:%S").replace(tzinfo=IST)
    except ValueError:
        return None


def _fill_time(value: str, today: date) -> datetime | None:
    """The trade book gives only "HH:MM:SS" (IST) of today's session."""
    try:
        return datetime.combine(today, time.fromisoformat(value), IST)
    except ValueError:
        return None


def _positive(value: Any) -> Decimal | None:
    parsed = to_decimal(value)
    return parsed if parsed is not None and parsed > 0 else None


def _best(levels: Any) -> Decimal | None:
    return to_decimal(levels[0].get("price")) if levels else None


def _text(value: Decimal | None) -> str:
    """Angel wants every number as a string; "0" where a price does not apply."""
    if value is None:
        return "0"
    return format(value, "f")


def _mac_address() -> str:
    return ":".join(f"{uuid.getnode():012x}"[i : i + 2] for i in range(0, 12, 2))
