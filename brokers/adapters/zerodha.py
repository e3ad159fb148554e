"""Zerodha Kite Connect v3.

Wire format from Kite's documentation and the official SDK (pykiteconnect 5.x): form-encoded
POST/PUT bodies, GET/DELETE parameters in the query string, ``X-Kite-Version: 3`` and
``Authorization: token api_key:access_token`` on every call, ``{"status": "success", "data"}``
answers and ``{"status": "error", "message", "error_type"}`` errors.

Login is Kite's browser flow: the user signs in on kite.zerodha.com, Kite redirects to the app's
registered redirect URL with a one-time ``request_token``, and we exchange it (with a SHA-256
checksum made with the API secret) for an access token that lives until 06:00 IST the next
morning. Renewal without a login is for approved platforms only, so we do not offer it.
"""

from __future__ import annotations

import csv
import hashlib
import io
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

# IST has no daylight saving, so a fixed offset is exact and needs no tz database.
KITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Kite access tokens die at this time (IST) on the morning after login.
SESSION_ENDS_AT_IST = (6, 0)
#: We place only regular orders (not amo, co, iceberg or auction).
VARIETY = "regular"
#: Kite's /quote takes at most this many instruments per call.
QUOTE_BATCH = 500

ORDER_TYPES = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP_LIMIT: "SL",
    OrderType.STOP: "SL-M",
}
ORDER_TYPES_FROM_KITE = {kite: ours for ours, kite in ORDER_TYPES.items()}

PRODUCTS = {
    Product.DELIVERY: "CNC",
    Product.INTRADAY: "MIS",
    Product.MARGIN: "NRML",
}

VALIDITIES = {
    Validity.DAY: "DAY",
    Validity.IOC: "IOC",
    # Kite regular orders have no good-till-cancelled; GTT is a separate product.
}

# Every status Kite documents. Interim ones before the order reaches the exchange are PENDING;
# ones where the order is live at the exchange (including a modify or cancel in flight) are
# OPEN, and become PARTIALLY_FILLED when part of the quantity has traded.
STATUSES = {
    "PUT ORDER REQ RECEIVED": OrderStatus.PENDING,
    "VALIDATION PENDING": OrderStatus.PENDING,
    "OPEN PENDING": OrderStatus.PENDING,
    "AMO REQ RECEIVED": OrderStatus.PENDING,
    "OPEN": OrderStatus.OPEN,
    "TRIGGER PENDING": OrderStatus.OPEN,
    "MODIFY VALIDATION PENDING": OrderStatus.OPEN,
    "MODIFY PENDING": OrderStatus.OPEN,
    "CANCEL PENDING": OrderStatus.OPEN,
    "COMPLETE": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
}
#: A status Kite adds later is treated as not final, so the order keeps being watched.
UNKNOWN_STATUS = OrderStatus.PENDING

# Kite's error_type -> our error. The SDK raises the class named by error_type (falling back
# to GeneralException); we do the same with our classes.
ERROR_TYPES: dict[str, type[errors.BrokerError]] = {
    "TokenException": errors.SessionExpired,
    "UserException": errors.AccountLocked,
    "PermissionException": errors.AuthError,
    "InputException": errors.InputError,
    "OrderException": errors.OrderRejected,
    "MarginException": errors.InsufficientFunds,
    "HoldingException": errors.OrderRejected,
    "NetworkException": errors.BrokerUnavailable,
    "DataException": errors.BrokerUnavailable,
    "GeneralException": errors.BrokerError,
}
# When the body carries no error_type, the HTTP status decides (statuses from Kite's docs).
HTTP_STATUSES: dict[int, type[errors.BrokerError]] = {
    400: errors.InputError,
    403: errors.SessionExpired,
    404: errors.NotFound,
    405: errors.InputError,
    410: errors.SessionExpired,
}
# Kite has no error codes finer than error_type, so two cases are told apart by message:
# - an InputException naming `tradingsymbol` or an instrument is an unknown instrument
#   ("Invalid `tradingsymbol`.", "The instrument you are placing an order for ... does not exist");
# - "Couldn't find that `order_id`." (a GeneralException on the real API, per client code in the
#   wild; matched for any error_type) is an unknown order.
MESSAGE_RULES: tuple[tuple[str | None, str, type[errors.BrokerError]], ...] = (
    ("InputException", "tradingsymbol", errors.InvalidInstrument),
    ("InputException", "instrument", errors.InvalidInstrument),
    (None, "couldn't find that `order_id`", errors.NotFound),
)


class ZerodhaAdapter(BrokerAdapter):
    """Zerodha through Kite Connect v3: browser login, orders, portfolio, quotes, instruments."""

    code = "zerodha"
    name = "Zerodha (Kite Connect)"
    auth_flow = AuthFlow.OAUTH_REDIRECT
    credential_fields = (
        CredentialField(
            "api_key", "API key", help_text="From your app on developers.kite.trade (shown)."
        ),
        CredentialField("api_secret", "API secret", secret=True),
    )
    has = {
        "oauth_login": True,
        "credentials_login": False,
        "refresh_session": False,  # renew_access_token is for approved platforms only
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
    production_base_url = "https://api.kite.trade"
    #: Where the browser signs in. When an account overrides base_url (a simulator), that host
    #: serves the login page too.
    production_login_url = "https://kite.zerodha.com"
    rate_limits = {
        "orders": ("10/second", "400/minute", "5000/day"),
        "quotes": ("1/second",),
        "historical": ("3/second",),
        "default": ("10/second",),
    }
    client_order_id_max_length = 20  # Kite rejects tags over 20 characters
    currency = "INR"

    # Authentication --------------------------------------------------------------------------

    def login_url(self, *, state: str, redirect_url: str) -> str:
        """Kite's login page for this app.

        The redirect URL is fixed in the app's settings on developers.kite.trade, so
        ``redirect_url`` is not sent; ``state`` travels in ``redirect_params``, which Kite appends
        to its redirect.
        """
        query = urlencode(
            {"api_key": self._api_key, "v": "3", "redirect_params": urlencode({"state": state})}
        )
        return f"{self._login_base}/connect/login?{query}"

    def complete_login(self, params: Mapping[str, str], *, redirect_url: str = "") -> SessionData:
        """Exchange the redirect's request_token for an access token."""
        status = params.get("status", "")
        request_token = params.get("request_token", "")
        if status != "success" or not request_token:
            raise errors.InvalidCredentials(
                f"Kite login did not succeed (status={status or 'missing'})."
            )
        api_key = self._api_key
        checksum = hashlib.sha256(
            (api_key + request_token + self.credentials.get("api_secret", "")).encode()
        ).hexdigest()
        try:
            data = self._call(
                "POST",
                "/session/token",
                data={"api_key": api_key, "request_token": request_token, "checksum": checksum},
                authenticated=False,
            )
        except (errors.AuthError, errors.InputError) as exc:
            # A wrong API secret fails the checksum; a stale or reused token is a TokenException.
            raise errors.InvalidCredentials(
                exc.message, broker_code=exc.broker_code, http_status=exc.http_status
            ) from exc
        issued_at = _parse_time(data.get("login_time")) or datetime.now(IST).replace(microsecond=0)
        self.session = SessionData(
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token") or "",
            issued_at=issued_at,
            expires_at=session_expiry(issued_at),
            extra={"user_id": data.get("user_id", ""), "user_name": data.get("user_name", "")},
        )
        return self.session

    def logout(self) -> None:
        if self.session is None:
            return
        self._call(
            "DELETE",
            "/session/token",
            params={"api_key": self._api_key, "access_token": self.session.access_token},
        )

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        form = {
            "variety": VARIETY,  # the SDK sends it in the body as well as the path
            "exchange": order.exchange,
            "tradingsymbol": order.broker_symbol or order.symbol,
            "transaction_type": order.side.value,
            "quantity": _whole(order.quantity),
            "product": _lookup(PRODUCTS, order.product, "product"),
            "order_type": _lookup(ORDER_TYPES, order.order_type, "order type"),
            "validity": _lookup(VALIDITIES, order.validity, "validity"),
            "tag": order.client_order_id,
        }
        if order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            form["price"] = _number(order.price, "price")
        if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            form["trigger_price"] = _number(order.trigger_price, "trigger price")
        data = self._call("POST", f"/orders/{VARIETY}", data=form, write=True, category="orders")
        return OrderAck(broker_order_id=str(data["order_id"]))

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        form: dict[str, str] = {"variety": VARIETY, "order_id": broker_order_id}
        if changes.quantity is not None:
            form["quantity"] = _whole(changes.quantity)
        if changes.price is not None:
            form["price"] = _number(changes.price, "price")
        if changes.trigger_price is not None:
            form["trigger_price"] = _number(changes.trigger_price, "trigger price")
        if changes.order_type is not None:
            form["order_type"] = _lookup(ORDER_TYPES, changes.order_type, "order type")
        data = self._call(
            "PUT",
            f"/orders/{VARIETY}/{broker_order_id}",
            data=form,
            write=True,
            category="orders",
        )
        return OrderAck(broker_order_id=str(data["order_id"]))

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        data = self._call(
            "DELETE", f"/orders/{VARIETY}/{broker_order_id}", write=True, category="orders"
        )
        return OrderAck(broker_order_id=str(data["order_id"]))

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        # GET /orders/{id} is the order's history, oldest first; the last entry is its state now.
        history = self._call("GET", f"/orders/{broker_order_id}")
        if not history:
            raise errors.NotFound(f"Kite returned no history for order {broker_order_id}.")
        return _order_from_kite(history[-1])

    # find_order is the base class's scan of the order book: Kite cannot look an order up by
    # tag, and tags need not be unique, so the first order of the day carrying the tag wins.

    def order_book(self) -> list[BrokerOrder]:
        return [_order_from_kite(row) for row in self._call("GET", "/orders")]

    def trade_book(self) -> list[Trade]:
        return [_trade_from_kite(row) for row in self._call("GET", "/trades")]

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        # "net" is the account's position per instrument and product; "day" is today's part.
        # Closed positions stay in "net" with quantity 0 and their realised P&L.
        data = self._call("GET", "/portfolio/positions")
        return [
            Position(
                symbol=row["tradingsymbol"],
                exchange=row["exchange"],
                quantity=decimal_or_zero(row.get("quantity")),
                average_price=decimal_or_zero(row.get("average_price")),
                product=row.get("product", ""),
                last_price=to_decimal(row.get("last_price")),
                pnl=to_decimal(row.get("pnl")),
            )
            for row in data.get("net", [])
        ]

    def holdings(self) -> list[Holding]:
        return [
            Holding(
                symbol=row["tradingsymbol"],
                exchange=row["exchange"],
                # t1_quantity is bought but not yet settled into the demat account.
                quantity=decimal_or_zero(row.get("quantity"))
                + decimal_or_zero(row.get("t1_quantity")),
                average_price=decimal_or_zero(row.get("average_price")),
                last_price=to_decimal(row.get("last_price")),
                pnl=to_decimal(row.get("pnl")),
            )
            for row in self._call("GET", "/portfolio/holdings")
        ]

    def funds(self) -> Funds:
        """The equity segment's margins.

        available = ``available.live_balance`` (cash usable now, after today's fills and the
        margin blocked by open orders; older answers without it fall back to ``net``);
        used_margin = ``utilised.debits`` (everything utilised today);
        total = available + used, i.e. what the account started the day with plus pay-ins.
        """
        equity = self._call("GET", "/user/margins/equity")
        available_block = equity.get("available") or {}
        available = to_decimal(available_block.get("live_balance"))
        if available is None:
            available = decimal_or_zero(equity.get("net"))
        used = decimal_or_zero((equity.get("utilised") or {}).get("debits"))
        return Funds(
            total=available + used,
            available=available,
            used_margin=used,
            currency=self.currency,
            equity=to_decimal(equity.get("net")),
        )

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        """Full quotes; instruments Kite does not know are left out, as Kite leaves them out."""
        keys = [f"{exchange}:{symbol}" for exchange, symbol in instruments]
        quotes = []
        for start in range(0, len(keys), QUOTE_BATCH):
            batch = keys[start : start + QUOTE_BATCH]
            data = self._call("GET", "/quote", params={"i": batch}, category="quotes")
            for key in batch:
                if key in data:
                    quotes.append(_quote_from_kite(key, data[key]))
        return quotes

    def instrument_master(self) -> list[InstrumentRecord]:
        """Kite's full instrument list: a CSV dump, refreshed once a day around 08:30 IST."""
        response = self._send("GET", "/instruments", authenticated=bool(self.session))
        if "csv" not in response.headers.get("Content-Type", ""):
            self._raise_for_envelope(response, self._json(response))
            raise errors.BrokerError(
                "Kite did not send the instrument CSV.", http_status=response.status_code
            )
        reader = csv.DictReader(io.StringIO(response.content.decode("utf-8")))
        return [_instrument_from_kite(row) for row in reader]

    # HTTP ------------------------------------------------------------------------------------

    @property
    def _api_key(self) -> str:
        return self.credentials.get("api_key", "")

    @property
    def _login_base(self) -> str:
        if self.base_url == self.production_base_url:
            return self.production_login_url
        return self.base_url

    def _headers(self, authenticated: bool) -> dict[str, str]:
        headers = {"X-Kite-Version": "3"}
        if authenticated:
            if self.session is None:
                raise errors.SessionExpired("No Kite session: log in first.")
            headers["Authorization"] = f"token {self._api_key}:{self.session.access_token}"
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        authenticated: bool = True,
        write: bool = False,
        category: str = "default",
        **kwargs: Any,
    ) -> requests.Response:
        return self._request(
            method,
            path,
            write=write,
            category=category,
            headers=self._headers(authenticated),
            **kwargs,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the envelope's ``data``, raising typed errors on failure."""
        response = self._send(method, path, **kwargs)
        body = self._json(response)
        self._raise_for_envelope(response, body)
        if response.status_code >= 400:
            raise _error_for(None, "", response.status_code)
        return body.get("data") if isinstance(body, dict) else body

    def _raise_for_envelope(self, response: requests.Response, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if body.get("status") == "error" or body.get("error_type"):
            raise _error_for(
                body.get("error_type"), str(body.get("message") or ""), response.status_code
            )

    def _describe_error(self, response: requests.Response) -> tuple[str, str | None]:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200], None
        if isinstance(body, dict):
            return str(body.get("message") or ""), body.get("error_type")
        return "", None


# Private helpers ------------------------------------------------------------------------------


def session_expiry(login_time: datetime) -> datetime:
    """The next 06:00 IST strictly after ``login_time`` (naive times are taken as IST)."""
    local = login_time.replace(tzinfo=IST) if login_time.tzinfo is None else login_time
    local = local.astimezone(IST)
    hour, minute = SESSION_ENDS_AT_IST
    end = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return end if local < end else end + timedelta(days=1)


def normalize_status(raw_status: str, quantity: Decimal, filled: Decimal) -> OrderStatus:
    status = STATUSES.get(raw_status.upper().strip(), UNKNOWN_STATUS)
    if status == OrderStatus.OPEN and 0 < filled < quantity:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _error_for(error_type: str | None, message: str, http_status: int) -> errors.BrokerError:
    lowered = message.lower()
    error_class: type[errors.BrokerError] | None = None
    for rule_type, fragment, rule_class in MESSAGE_RULES:
        if (rule_type is None or rule_type == error_type) and fragment in lowered:
            error_class = rule_class
            break
    if error_class is None and error_type:
        error_class = ERROR_TYPES.get(error_type)
    if error_class is None:
        error_class = HTTP_STATUSES.get(http_status, errors.BrokerError)
    return error_class(
        message or f"Kite answered HTTP {http_status}.",
        broker_code=error_type,
        http_status=http_status,
    )


def _order_from_kite(row: dict) -> BrokerOrder:
    quantity = decimal_or_zero(row.get("quantity"))
    filled = decimal_or_zero(row.get("filled_quantity"))
    raw_status = str(row.get("status") or "")
    average = to_decimal(row.get("average_price"))
    return BrokerOrder(
        broker_order_id=str(row["order_id"]),
        client_order_id=row.get("tag") or "",
        symbol=row["tradingsymbol"],
        exchange=row["exchange"],
        side=Side(row["transaction_type"]),
        order_type=ORDER_TYPES_FROM_KITE.get(row.get("order_type", ""), OrderType.MARKET),
        quantity=quantity,
        status=normalize_status(raw_status, quantity, filled),
        raw_status=raw_status,
        filled_quantity=filled,
        average_price=average if filled and average else None,
        price=_nonzero(row.get("price")),
        trigger_price=_nonzero(row.get("trigger_price")),
        message=row.get("status_message") or "",
        placed_at=_parse_time(row.get("order_timestamp")),
    )


def _trade_from_kite(row: dict) -> Trade:
    return Trade(
        trade_id=str(row["trade_id"]),
        broker_order_id=str(row["order_id"]),
        symbol=row["tradingsymbol"],
        exchange=row["exchange"],
        side=Side(row["transaction_type"]),
        quantity=decimal_or_zero(row.get("quantity")),
        price=decimal_or_zero(row.get("average_price")),
        traded_at=_parse_time(row.get("fill_timestamp") or row.get("exchange_timestamp")),
    )


def _quote_from_kite(key: str, row: dict) -> Quote:
    exchange, _, symbol = key.partition(":")
    ohlc = row.get("ohlc") or {}
    depth = row.get("depth") or {}
    bids = depth.get("buy") or []
    asks = depth.get("sell") or []
    return Quote(
        symbol=symbol,
        exchange=exchange,
        last_price=decimal_or_zero(row.get("last_price")),
        bid=_nonzero(bids[0].get("price")) if bids else None,
        ask=_nonzero(asks[0].get("price")) if asks else None,
        open=to_decimal(ohlc.get("open")),
        high=to_decimal(ohlc.get("high")),
        low=to_decimal(ohlc.get("low")),
        close=to_decimal(ohlc.get("close")),
        volume=to_decimal(row.get("volume")),
    )


def _instrument_from_kite(row: dict[str, str]) -> InstrumentRecord:
    instrument_type = row.get("instrument_type") or "EQ"
    strike = to_decimal(row.get("strike"))
    return InstrumentRecord(
        symbol=row["tradingsymbol"],
        exchange=row["exchange"],
        broker_symbol=row["tradingsymbol"],
        broker_token=row["instrument_token"],
        lot_size=to_decimal(row.get("lot_size")) or Decimal(1),
        tick_size=to_decimal(row.get("tick_size")) or Decimal("0.05"),
        instrument_type=instrument_type,
        name=row.get("name") or "",
        expiry=row.get("expiry") or "",  # already ISO (YYYY-MM-DD) or empty
        strike=strike if instrument_type in ("CE", "PE") else None,
    )


def _parse_time(value: Any) -> datetime | None:
    """Kite times are IST wall-clock strings, "YYYY-MM-DD HH:MM:SS"."""
    if not value:
        return None
    try:
        return datetime.strptime(str(value), KITE_TIME_FORMAT).replace(tzinfo=IST)
    except ValueError:
        return None


def _nonzero(value: Any) -> Decimal | None:
    number = to_decimal(value)
    return number if number else None


def _whole(quantity: Decimal) -> str:
    if quantity != quantity.to_integral_value():
        raise errors.InputError(f"Kite takes whole-number quantities, not {quantity}.")
    return str(int(quantity))


def _number(value: Decimal | None, label: str) -> str:
    if value is None:
        raise errors.InputError(f"A {label} is required for this order type.")
    return format(value, "f")


def _lookup(table: Mapping, key: Any, label: str) -> str:
    try:
        return table[key]
    except KeyError:
        raise errors.NotSupported(f"Kite has no {label} {key}.") from None
