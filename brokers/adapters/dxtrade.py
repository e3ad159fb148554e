"""DXtrade REST API ("dxsca-web") adapter: a white-label CFD/FX platform, one host per broker.

Wire format from BROKERS.md and the DXtrade REST API spec. Points the docs leave open, and what
this module chose:

- Base URL: the account supplies its broker's host (``https://dx.example.com``); every path
  starts with ``/dxsca-web``. A base URL already ending in ``/dxsca-web`` is accepted too.
- Session: ``timeout`` in the login/ping answer is milliseconds (number or digits) or an ISO-8601
  duration ("PT30M"), depending on the deployment; ``parse_session_timeout`` accepts both. The
  timeout is an inactivity timeout (every call extends it), so ``expires_at`` = issue time +
  timeout is a lower bound. ``refresh()`` is ``POST /ping``, which returns a fresh token.
- Expiry mid-use: on HTTP 401 the adapter logs in again ONCE with the stored credentials, reports
  the new session through ``on_session_renewed`` and repeats the request. Repeating is safe even
  for writes: a 401 means the broker refused the request before acting on it. Placement is also
  idempotent by construction: ``orderCode`` is our client order id and DXtrade refuses a second
  order with the same code (409, errorCode 100); the adapter answers that 409 with the order
  already placed, so a resend never makes a second order.
- ``broker_order_id`` is the order's ``orderCode`` as we sent it (= ``client_order_id``), not the
  numeric ``orderId``: DXtrade cancels by orderCode and modifies by orderCode, and we know it
  before the broker answers. Orders placed elsewhere (no client code) use the server's orderCode.
- Cancel is idempotent: cancelling an order that is already CANCELED returns its ack; cancelling
  a COMPLETED/REJECTED order raises InputError (the broker's 400).
- Quantities are in units (OrderRequest.quantity, never lots); an instrument's ``lotSize`` is its
  contract size. Every instrument reports the exchange ``"FX"`` (EXCHANGE): DXtrade has no
  exchange segment, and symbols such as ``XAU/USD`` are unique on the platform.
- Quotes: ``POST /dxsca-web/marketdata`` with Quote events (bid/ask only; DXtrade has no last
  trade for OTC instruments), so ``last_price`` is the mid.
- Unknown instrument on place: 404 errorCode 2 ("entity not found") -> InvalidInstrument.
- Funds: total = ``balance``, available = ``availableFunds`` (equity minus margin: what new
  orders can use; ``availableBalance`` excludes open P/L), used_margin = ``margin``,
  equity = ``equity``; the currency is the account's ``baseCurrency`` from ``GET /users``.
- Orders beyond funds are accepted and then REJECTED; the reason is the last execution's
  ``rejectReason``.
- Positions are sent with ``positionEffect: OPEN``. On netting accounts an opposite order reduces
  the position; on hedging ("position based") accounts it opens an opposite position, and closing
  a specific position needs CLOSE + positionCode, which OrderRequest cannot express.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from . import errors
from .base import (
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
    Quote,
    SessionData,
    Side,
    Trade,
    Validity,
    decimal_or_zero,
    to_decimal,
)

PREFIX = "/dxsca-web"
EXCHANGE = "FX"
DEFAULT_DOMAIN = "default"

ORDER_TYPES = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.STOP: "STOP",
    OrderType.STOP_LIMIT: "STOP_LIMIT",
}
ORDER_TYPES_BACK = {wire: ours for ours, wire in ORDER_TYPES.items()}

VALIDITIES = {Validity.DAY: "DAY", Validity.GTC: "GTC", Validity.IOC: "IOC"}

#: DXtrade order status -> ours. WORKING with a filled quantity is PARTIALLY_FILLED.
STATUSES = {
    "ACCEPTED": OrderStatus.OPEN,
    "WORKING": OrderStatus.OPEN,
    "COMPLETED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELLED,
    "EXPIRED": OrderStatus.EXPIRED,
    "REJECTED": OrderStatus.REJECTED,
}

#: DXtrade errorCode -> typed error (the documented codes).
ERROR_CODES: dict[str, type[errors.BrokerError]] = {
    "2": errors.NotFound,  # entity not found (404)
    "3": errors.InvalidCredentials,  # incorrect username or password (401)
    "32": errors.InputError,  # incorrect request (400)
    "33": errors.InputError,  # incorrect request (400)
    "100": errors.OrderRejected,  # an order with this orderCode already exists (409)
}
#: HTTP status -> typed error, when the errorCode is missing or unknown.
ERROR_STATUSES: dict[int, type[errors.BrokerError]] = {
    400: errors.InputError,
    401: errors.SessionExpired,
    403: errors.AuthError,
    404: errors.NotFound,
    409: errors.OrderRejected,
}
DUPLICATE_ORDER_CODE = "100"


class DXtradeAdapter(BrokerAdapter):
    """DXtrade REST (dxsca-web) with session-token login, for any broker's DXtrade host."""

    code = "dxtrade"
    name = "DXtrade"
    auth_flow = AuthFlow.CREDENTIALS
    credential_fields = (
        CredentialField("username", "Username"),
        CredentialField(
            "domain",
            "Domain",
            required=False,
            help_text='The DXtrade login domain; "default" when empty.',
        ),
        CredentialField("password", "Password", secret=True),
        CredentialField(
            "account",
            "Account code",
            required=False,
            help_text='Like "default:1210008442"; the user\'s first account when empty.',
        ),
    )
    has = {
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
        "holdings": False,  # a CFD/FX platform: no demat holdings
        "funds": True,
        "quotes": True,
        "instrument_master": True,
    }
    order_types = frozenset(ORDER_TYPES)
    production_base_url = ""  # white label: each broker hosts its own DXtrade
    base_url_required = True
    # Deployment defaults from DXtrade's docs: login 1/s per IP, data 2/s and trading 1/s per
    # session.
    rate_limits = {
        "login": ("1/second",),
        "orders": ("1/second",),
        "quotes": ("2/second",),
        "default": ("2/second",),
    }
    # orderCode length limit is not documented (UNCONFIRMED); 32 is safe for the 24-character
    # hex codes new_client_order_id() makes.
    client_order_id_max_length = 32
    currency = "USD"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if self.base_url.endswith(PREFIX):
            self.base_url = self.base_url[: -len(PREFIX)]

    # Authentication --------------------------------------------------------------------------

    def login(self) -> SessionData:
        username = self.credentials.get("username", "")
        payload = {
            "username": username,
            "domain": self.credentials.get("domain") or DEFAULT_DOMAIN,
            "password": self.credentials.get("password", ""),
        }
        response = self._request("POST", PREFIX + "/login", category="login", json=payload)
        if response.status_code == 401:
            message, broker_code = self._describe_error(response)
            raise errors.InvalidCredentials(
                message or "DXtrade refused the username or password.",
                broker_code=broker_code,
                http_status=401,
            )
        body = self._checked(response)
        session = self._session_from(body)
        account, currency = self._resolve_account(session)
        session.extra.update(account=account, currency=currency)
        self.session = session
        return session

    def refresh(self) -> SessionData:
        """POST /ping: resets the inactivity timer and hands out a fresh token."""
        body = self._call("POST", "/ping")
        session = self._session_from(body)
        if self.session is not None:
            session.extra = {**self.session.extra, **session.extra}
        self.session = session
        return session

    def logout(self) -> None:
        if self.session is None:
            return
        response = self._send("POST", "/logout", category="default")
        if response.status_code not in (200, 204, 401):  # 401: the session was already gone
            self._checked(response)

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        if order.order_type not in ORDER_TYPES:
            raise errors.NotSupported(f"DXtrade has no {order.order_type} orders here.")
        payload: dict[str, Any] = {
            "orderCode": order.client_order_id,
            "type": ORDER_TYPES[order.order_type],
            "instrument": order.broker_symbol or order.symbol,
            "quantity": _number(order.quantity),
            "positionEffect": "OPEN",
            "side": order.side.value,
            "tif": VALIDITIES.get(order.validity, "GTC"),
        }
        if order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            payload["limitPrice"] = _number(order.price)
        if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            payload["stopPrice"] = _number(order.trigger_price)
        path = f"/accounts/{self._account_path()}/orders"
        response = self._send_renewing("POST", path, write=True, category="orders", json=payload)
        if response.status_code == 409 and self._error_code(response) == DUPLICATE_ORDER_CODE:
            # Our orderCode is already at the broker (an earlier attempt got through): that
            # order is the answer, never a second one.
            existing = self.find_order(order.client_order_id)
            if existing is not None:
                return OrderAck(
                    broker_order_id=existing.broker_order_id,
                    status=existing.status,
                    raw_status=existing.raw_status,
                    message="Already placed with this orderCode.",
                )
        if response.status_code == 404:
            message, broker_code = self._describe_error(response)
            raise errors.InvalidInstrument(
                message or f"DXtrade does not know {payload['instrument']}.",
                broker_code=broker_code,
                http_status=404,
            )
        self._checked(response)
        return OrderAck(broker_order_id=order.client_order_id, status=OrderStatus.PENDING)

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        """PUT the whole order request again with the changes applied (DXtrade's modify)."""
        current = self._raw_order(broker_order_id)
        leg = (current.get("legs") or [{}])[0]
        order_type = (
            ORDER_TYPES[changes.order_type] if changes.order_type else current.get("type", "")
        )
        limit_price = changes.price if changes.price is not None else _limit_price(current)
        stop_price = (
            changes.trigger_price if changes.trigger_price is not None else _stop_price(current)
        )
        payload: dict[str, Any] = {
            "orderCode": broker_order_id,
            "type": order_type,
            "instrument": current.get("instrument") or leg.get("instrument"),
            "quantity": _number(
                changes.quantity
                if changes.quantity is not None
                else to_decimal(leg.get("quantity"))
            ),
            "positionEffect": leg.get("positionEffect") or "OPEN",
            "side": current.get("side") or leg.get("side"),
            "tif": current.get("tif") or "GTC",
        }
        if payload["positionEffect"] == "CLOSE" and leg.get("positionCode"):
            payload["positionCode"] = leg["positionCode"]
        if "LIMIT" in order_type:
            payload["limitPrice"] = _number(limit_price)
        if "STOP" in order_type:
            payload["stopPrice"] = _number(stop_price)
        path = f"/accounts/{self._account_path()}/orders"
        self._call("PUT", path, write=True, category="orders", json=payload)
        return OrderAck(broker_order_id=broker_order_id, status=OrderStatus.PENDING)

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        path = f"/accounts/{self._account_path()}/orders/{quote(broker_order_id, safe='')}"
        response = self._send_renewing("DELETE", path, write=True, category="orders")
        if response.status_code == 400:
            # Not working any more: fine if it is already cancelled (a repeated cancel).
            order = self.order_status(broker_order_id)
            if order.status == OrderStatus.CANCELLED:
                return OrderAck(
                    broker_order_id, order.status, order.raw_status, "Already cancelled."
                )
        self._checked(response)
        return OrderAck(broker_order_id=broker_order_id, status=OrderStatus.CANCELLED)

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        return _order_from(self._raw_order(broker_order_id))

    def find_order(self, client_order_id: str) -> BrokerOrder | None:
        """DXtrade filters its order history by client order id (our orderCode) directly."""
        rows = self._history({"with-client-id": client_order_id})
        matching = [row for row in rows if row.get("clientOrderId") == client_order_id]
        return _order_from(matching[0]) if matching else None

    def order_book(self) -> list[BrokerOrder]:
        return [_order_from(row) for row in self._history({})]

    def trade_book(self) -> list[Trade]:
        """Fills, from the executions of the order history (DXtrade has no trade list)."""
        trades = []
        for row in self._history({}):
            order_id = _broker_order_id(row)
            side = Side(row.get("side") or (row.get("legs") or [{}])[0].get("side"))
            for execution in row.get("executions") or []:
                quantity = decimal_or_zero(execution.get("lastQuantity"))
                if quantity <= 0:
                    continue
                trades.append(
                    Trade(
                        trade_id=str(execution.get("executionCode", "")),
                        broker_order_id=order_id,
                        symbol=row.get("instrument", ""),
                        exchange=EXCHANGE,
                        side=side,
                        quantity=quantity,
                        price=decimal_or_zero(execution.get("lastPrice")),
                        traded_at=_parse_time(execution.get("transactionTime")),
                    )
                )
        return trades

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        body = self._call("GET", f"/accounts/{self._account_path()}/positions")
        positions = []
        for row in body.get("positions") or []:
            quantity = abs(decimal_or_zero(row.get("quantity")))
            if row.get("side") == "SELL":
                quantity = -quantity
            positions.append(
                Position(
                    symbol=row.get("symbol", ""),
                    exchange=EXCHANGE,
                    quantity=quantity,
                    average_price=decimal_or_zero(row.get("openPrice")),
                    position_id=str(row.get("positionCode", "")),
                )
            )
        return positions

    def holdings(self) -> list[Holding]:
        raise errors.NotSupported("DXtrade accounts hold positions, not delivery holdings.")

    def funds(self) -> Funds:
        body = self._call("GET", f"/accounts/{self._account_path()}/metrics")
        rows = body.get("metrics") or []
        if not rows:
            raise errors.BrokerError("DXtrade sent no metrics for the account.")
        metrics = rows[0]
        return Funds(
            total=decimal_or_zero(metrics.get("balance")),
            available=decimal_or_zero(metrics.get("availableFunds")),
            used_margin=decimal_or_zero(metrics.get("margin")),
            equity=to_decimal(metrics.get("equity")),
            currency=(self.session.extra.get("currency") if self.session else "") or self.currency,
        )

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        symbols = [symbol for _, symbol in instruments]
        payload = {
            "symbols": symbols,
            "eventTypes": [{"type": "Quote", "format": "COMPACT"}],
            "account": self._account_code(),
        }
        body = self._call("POST", "/marketdata", category="quotes", json=payload)
        by_symbol = {
            event.get("symbol"): event
            for event in body.get("events") or []
            if event.get("type", "Quote") == "Quote"
        }
        quotes = []
        for exchange, symbol in instruments:
            event = by_symbol.get(symbol)
            if event is None:
                raise errors.InvalidInstrument(f"DXtrade sent no quote for {symbol}.")
            bid, ask = to_decimal(event.get("bid")), to_decimal(event.get("ask"))
            if bid is None or ask is None:
                raise errors.BrokerError(f"DXtrade sent a one-sided quote for {symbol}.")
            quotes.append(
                Quote(
                    symbol=symbol, exchange=exchange, last_price=(bid + ask) / 2, bid=bid, ask=ask
                )
            )
        return quotes

    def instrument_master(self) -> list[InstrumentRecord]:
        """GET /instruments/query: every instrument the platform trades."""
        body = self._call("GET", "/instruments/query")
        records = []
        for row in body.get("instruments") or []:
            symbol = row.get("symbol", "")
            records.append(
                InstrumentRecord(
                    symbol=symbol,
                    exchange=EXCHANGE,
                    broker_symbol=symbol,
                    broker_token=symbol,
                    # Our quantities are units, so the tradable step is one unit; DXtrade's
                    # lotSize is the contract size of one lot, not a step.
                    lot_size=Decimal(1),
                    tick_size=to_decimal(row.get("priceIncrement")) or Decimal("0.00001"),
                    instrument_type=row.get("type", ""),
                    name=row.get("description", ""),
                )
            )
        return records

    # HTTP ------------------------------------------------------------------------------------

    def _describe_error(self, response) -> tuple[str, str | None]:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200], None
        if not isinstance(body, dict):
            return response.text[:200], None
        code = body.get("errorCode")
        return str(body.get("description") or ""), (str(code) if code is not None else None)

    def _send(self, method: str, path: str, *, write: bool = False, category: str, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        if self.session is not None:
            headers["Authorization"] = f"DXAPI {self.session.access_token}"
        return self._request(
            method, PREFIX + path, write=write, category=category, headers=headers, **kwargs
        )

    def _send_renewing(self, method: str, path: str, *, write: bool = False, category: str, **kw):
        """Send; on 401 (session expired) log in again once and send once more."""
        if self.session is None:
            self._renew_session()
        response = self._send(method, path, write=write, category=category, **kw)
        if response.status_code == 401:
            self._renew_session()
            response = self._send(method, path, write=write, category=category, **kw)
        return response

    def _call(
        self, method: str, path: str, *, write: bool = False, category: str = "default", **kw
    ) -> Any:
        return self._checked(
            self._send_renewing(method, path, write=write, category=category, **kw)
        )

    def _renew_session(self) -> None:
        session = self.login()
        if self.on_session_renewed is not None:
            self.on_session_renewed(session)

    def _checked(self, response) -> Any:
        """The JSON body of a 2xx answer; any other answer raised as its typed error."""
        if 200 <= response.status_code < 300:
            return self._json(response) if response.content else {}
        message, broker_code = self._describe_error(response)
        error_class = ERROR_CODES.get(broker_code or "") or ERROR_STATUSES.get(
            response.status_code, errors.BrokerError
        )
        if response.status_code == 401:  # still refused after a fresh login
            error_class = errors.SessionExpired
        raise error_class(
            message or f"DXtrade answered HTTP {response.status_code}.",
            broker_code=broker_code,
            http_status=response.status_code,
        )

    def _error_code(self, response) -> str | None:
        return self._describe_error(response)[1]

    # Sessions and accounts ---------------------------------------------------------------------

    def _session_from(self, body: dict) -> SessionData:
        token = body.get("sessionToken")
        if not token:
            raise errors.BrokerError("DXtrade sent no sessionToken.")
        timeout = parse_session_timeout(body.get("timeout"))
        issued_at = datetime.now(UTC)
        return SessionData(
            access_token=token,
            issued_at=issued_at,
            expires_at=issued_at + timeout,
            extra={"timeout_seconds": timeout.total_seconds()},
        )

    def _resolve_account(self, session: SessionData) -> tuple[str, str]:
        """(account code, base currency): the configured account, or the user's first."""
        username = self.credentials.get("username", "")
        response = self._request(
            "GET",
            f"{PREFIX}/users/{quote(username, safe='')}",
            headers={"Authorization": f"DXAPI {session.access_token}"},
        )
        body = self._checked(response)
        accounts = [
            account
            for details in body.get("userDetails") or []
            for account in details.get("accounts") or []
        ]
        wanted = (self.credentials.get("account") or "").strip()
        if wanted:
            account = next((a for a in accounts if a.get("account") == wanted), None)
            if account is None:
                raise errors.InputError(f"{wanted} is not one of this user's DXtrade accounts.")
        elif accounts:
            account = accounts[0]
        else:
            raise errors.NotFound("This DXtrade user has no accounts.")
        return account["account"], account.get("baseCurrency") or self.currency

    def _account_code(self) -> str:
        code = (self.credentials.get("account") or "").strip()
        if code:
            return code
        if self.session is None or not self.session.extra.get("account"):
            self._renew_session()
        return self.session.extra["account"]

    def _account_path(self) -> str:
        # "default:1210008442" -> "default%3A1210008442"
        return quote(self._account_code(), safe="")

    def _history(self, params: dict[str, str]) -> list[dict]:
        body = self._call("GET", f"/accounts/{self._account_path()}/orders/history", params=params)
        return body.get("orders") or []

    def _raw_order(self, broker_order_id: str) -> dict:
        rows = self._history({"with-client-id": broker_order_id})
        for row in rows:
            if row.get("clientOrderId") == broker_order_id:
                return row
        # An order placed outside this platform has no client code: match the server's code.
        for row in self._history({}):
            if str(row.get("orderCode")) == broker_order_id:
                return row
        raise errors.NotFound(f"DXtrade has no order {broker_order_id}.")


# --- Helpers ---------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_session_timeout(value: Any) -> timedelta:
    """DXtrade's session ``timeout``: milliseconds (a number or digits) or an ISO-8601 duration."""
    if isinstance(value, bool) or value is None:
        raise errors.BrokerError(f"DXtrade sent no usable session timeout: {value!r}")
    text = str(value).strip().upper()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        milliseconds = Decimal(text)
        if milliseconds <= 0:
            raise errors.BrokerError(f"DXtrade sent a zero session timeout: {value!r}")
        return timedelta(milliseconds=float(milliseconds))
    match = _DURATION.match(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise errors.BrokerError(f"DXtrade sent a malformed session timeout: {value!r}")
    parts = {name: float(number) for name, number in match.groupdict().items() if number}
    duration = timedelta(**parts)
    if duration <= timedelta(0):
        raise errors.BrokerError(f"DXtrade sent a zero session timeout: {value!r}")
    return duration


def _number(value: Decimal | None) -> int | float:
    """A Decimal for the JSON body: an int when whole, else the float with the same digits.

    requests' JSON encoder cannot write a Decimal. A float's repr is the shortest text that reads
    back as the same float, so for prices and quantities of up to 15 significant digits the JSON
    text is exactly the Decimal's digits; anything longer is refused rather than rounded.
    """
    if value is None:
        raise errors.InputError("A price is required for this order type.")
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise errors.InputError(f"{value} has more digits than DXtrade accepts.")
    return as_float


def _broker_order_id(row: dict) -> str:
    return str(row.get("clientOrderId") or row.get("orderCode") or row.get("orderId") or "")


def _limit_price(row: dict) -> Decimal | None:
    if row.get("type") in ("LIMIT", "STOP_LIMIT"):
        return to_decimal((row.get("legs") or [{}])[0].get("price"))
    return None


def _stop_price(row: dict) -> Decimal | None:
    if row.get("type") == "STOP":
        return to_decimal(row.get("stopPrice")) or to_decimal(
            (row.get("legs") or [{}])[0].get("price")
        )
    if row.get("type") == "STOP_LIMIT":
        return to_decimal(row.get("stopPrice"))
    return None


def _order_status(raw_status: str, filled: Decimal) -> OrderStatus:
    status = STATUSES.get(raw_status, OrderStatus.PENDING)
    if status == OrderStatus.OPEN and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _order_from(row: dict) -> BrokerOrder:
    legs = row.get("legs") or [{}]
    quantity = sum((decimal_or_zero(leg.get("quantity")) for leg in legs), Decimal(0))
    filled = sum((decimal_or_zero(leg.get("filledQuantity")) for leg in legs), Decimal(0))
    raw_status = str(row.get("status", ""))
    executions = row.get("executions") or []
    message = ""
    for execution in reversed(executions):
        if execution.get("rejectReason"):
            message = str(execution["rejectReason"])
            break
    return BrokerOrder(
        broker_order_id=_broker_order_id(row),
        client_order_id=str(row.get("clientOrderId") or ""),
        symbol=row.get("instrument") or legs[0].get("instrument", ""),
        exchange=EXCHANGE,
        side=Side(row.get("side") or legs[0].get("side")),
        order_type=ORDER_TYPES_BACK.get(row.get("type", ""), OrderType.MARKET),
        quantity=quantity,
        status=_order_status(raw_status, filled),
        raw_status=raw_status,
        filled_quantity=filled,
        average_price=to_decimal(legs[0].get("averagePrice")) if filled else None,
        price=_limit_price(row),
        trigger_price=_stop_price(row),
        message=message,
        placed_at=_parse_time(row.get("issueTime")),
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
