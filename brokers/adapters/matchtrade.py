"""Match-Trader platform API adapter (white-label: every broker runs its own platform URL).

Wire format from BROKERS.md and the public Platform API pages (app.theneo.io/match-trade
/platform-api). Choices where the docs are silent, each marked UNCONFIRMED in place:

- Quantities are lots: ``OrderRequest.quantity`` is sent as ``volume`` unchanged.
- The client order id rides in ``comment``. The platform API documents no client id field on
  position/open or pending-order/create; Match-Trader's newer Trader API documents ``comment``
  ("free-text note stored with the position"). Whether /mtr-api/ keeps it is UNCONFIRMED: where it
  does not, ``find_order`` cannot reconcile and returns None.
- Order state is read from active-orders (pending orders), an order history (``POST
  closed-orders``, UNCONFIRMED: not in the platform docs) and, where a deployment has no history
  (404), from the positions that orders opened (open-positions + closed-positions), taking a
  position's id as the id of the order that opened it (UNCONFIRMED).
- The co-auth token is a JWT; its ``exp`` claim gives the session expiry, else we assume the
  ~15 minutes that client code reports (UNCONFIRMED).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import requests

from . import errors
from .base import (
    AuthFlow,
    BrokerAdapter,
    BrokerOrder,
    CredentialField,
    Funds,
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
    decimal_or_zero,
    to_decimal,
)

#: Match-Trader has no exchanges; every instrument is reported under this one venue label.
EXCHANGE = "MTR"

LOGIN_PATHS = ("/manager/co-login", "/manager/mtr-login")  # older, newer deployments
REFRESH_PATH = "/manager/refresh-token"
REFRESH_COOKIE = "rt"
SESSION_COOKIE = "co-auth"
#: Used when the token carries no readable ``exp`` claim (UNCONFIRMED lifetime).
DEFAULT_SESSION_LIFETIME = timedelta(minutes=15)
#: How far back order and position history is read.
HISTORY_WINDOW = timedelta(days=30)

#: Our order types -> Match-Trader pending order ``type``; MARKET goes through position/open.
PENDING_ORDER_TYPES = {OrderType.LIMIT: "LIMIT", OrderType.STOP: "STOP"}
ORDER_TYPES = {"MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT, "STOP": OrderType.STOP}
SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}

#: Order history statuses (UNCONFIRMED vocabulary) -> ours. Active orders carry no status.
ORDER_STATUSES = {
    "ACTIVE": OrderStatus.OPEN,
    "PENDING": OrderStatus.OPEN,
    "FILLED": OrderStatus.FILLED,
    "EXECUTED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "CANCELED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
}

#: Operation ``nativeCode`` -> typed error (UNCONFIRMED codes; the message table backs it up).
NATIVE_CODE_ERRORS: dict[str, type[errors.BrokerError]] = {
    "NOT_ENOUGH_MONEY": errors.InsufficientFunds,
    "NO_MONEY": errors.InsufficientFunds,
    "INSTRUMENT_NOT_FOUND": errors.InvalidInstrument,
    "INVALID_SYMBOL": errors.InvalidInstrument,
    "INVALID_VOLUME": errors.InputError,
    "INVALID_PRICE": errors.InputError,
    "INVALID_ORDER_TYPE": errors.InputError,
    "INVALID_REQUEST": errors.InputError,
    "ORDER_NOT_FOUND": errors.NotFound,
    "POSITION_NOT_FOUND": errors.NotFound,
    "ORDER_NOT_ACTIVE": errors.OrderRejected,
    "MARKET_CLOSED": errors.OrderRejected,
}
#: Lower-case fragments of ``errorMessage`` -> typed error, for codes we have not seen.
MESSAGE_ERRORS: tuple[tuple[str, type[errors.BrokerError]], ...] = (
    ("not enough money", errors.InsufficientFunds),
    ("insufficient", errors.InsufficientFunds),
    ("instrument", errors.InvalidInstrument),
    ("symbol", errors.InvalidInstrument),
    ("not found", errors.NotFound),
)
#: HTTP status of a non-login call -> typed error.
HTTP_STATUS_ERRORS: dict[int, type[errors.BrokerError]] = {
    400: errors.InputError,
    401: errors.SessionExpired,
    403: errors.SessionExpired,
    404: errors.NotFound,
}


class MatchTraderAdapter(BrokerAdapter):
    """Match-Trader platform API: manager login with refresh cookie, trading via /mtr-api/."""

    code = "matchtrade"
    name = "Match-Trader"
    auth_flow = AuthFlow.CREDENTIALS
    credential_fields = (
        CredentialField("email", "Email"),
        CredentialField("password", "Password", secret=True),
        CredentialField("broker_id", "Broker ID", help_text="The brokerId your broker gave you."),
        CredentialField(
            "trading_account_id",
            "Trading account ID",
            required=False,
            help_text="Which trading account to use when you have several; default the first.",
        ),
    )
    has = {
        "oauth_login": False,
        "credentials_login": True,
        "refresh_session": True,
        "logout": False,  # the platform API documents no logout; the token lapses by itself
        "place_order": True,
        "modify_order": True,
        "cancel_order": True,
        "order_status": True,
        "order_book": True,
        "trade_book": True,
        "positions": True,
        "holdings": False,
        "funds": True,
        "quotes": True,
        "instrument_master": True,
    }
    order_types = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP})
    production_base_url = ""
    base_url_required = True
    # One documented budget for every endpoint, so every call uses the "default" category.
    rate_limits = {"default": ("500/minute",)}
    client_order_id_max_length = 20
    currency = "USD"

    # Authentication --------------------------------------------------------------------------

    def login(self) -> SessionData:
        body = {
            "email": self.credentials.get("email", ""),
            "password": self.credentials.get("password", ""),
            "brokerId": self.credentials.get("broker_id", ""),
        }
        for login_path in LOGIN_PATHS:
            response = self._request("POST", login_path, json=body, headers=_JSON_HEADERS)
            if response.status_code != 404:  # 404: this deployment has the other login path
                break
        if response.status_code in (400, 401, 403):
            message, broker_code = self._describe_error(response)
            raise errors.InvalidCredentials(
                message or "Match-Trader refused the email, password or broker id.",
                broker_code=broker_code,
                http_status=response.status_code,
            )
        data = self._checked(response)
        refresh_token = response.cookies.get(REFRESH_COOKIE) or ""
        self.http.cookies.clear()  # tokens travel only in the headers we set ourselves
        account = self._choose_account(data.get("accounts") or data.get("tradingAccounts") or [])
        offer = account.get("offer") or {}
        token = str(data.get("token") or "")
        if not token or not account.get("tradingApiToken"):
            raise errors.BrokerError("Match-Trader login answer has no token.")
        now = datetime.now(UTC)
        self.session = SessionData(
            access_token=token,
            refresh_token=refresh_token,
            issued_at=now,
            expires_at=session_expiry(token, now),
            extra={
                "trading_api_token": str(account["tradingApiToken"]),
                "system_uuid": str((offer.get("system") or {}).get("uuid") or ""),
                "trading_account_id": str(account.get("tradingAccountId") or ""),
                "currency": str(offer.get("currency") or self.currency),
                "login_path": login_path,
            },
        )
        if not self.session.extra["system_uuid"]:
            raise errors.BrokerError("Match-Trader login answer has no system uuid.")
        return self.session

    def refresh(self) -> SessionData:
        session = self._live_session()
        if not session.refresh_token:
            raise errors.SessionExpired("No refresh cookie was kept from the login; log in again.")
        response = self._request(
            "POST",
            REFRESH_PATH,
            headers={**_JSON_HEADERS, "Cookie": f"{REFRESH_COOKIE}={session.refresh_token}"},
        )
        if response.status_code in (400, 401, 403):
            message, broker_code = self._describe_error(response)
            raise errors.SessionExpired(
                message or "The refresh cookie was refused; log in again.",
                broker_code=broker_code,
                http_status=response.status_code,
            )
        data = self._checked(response)
        token = str(data.get("token") or "")
        if not token:
            raise errors.BrokerError("Match-Trader refresh answer has no token.")
        self.http.cookies.clear()
        now = datetime.now(UTC)
        renewed = SessionData(
            access_token=token,
            refresh_token=response.cookies.get(REFRESH_COOKIE) or session.refresh_token,
            issued_at=now,
            expires_at=session_expiry(token, now),
            extra=dict(session.extra),
        )
        self.session = renewed  # the caller stores it: no on_session_renewed for an asked refresh
        return renewed

    def logout(self) -> None:
        raise errors.NotSupported("Match-Trader's platform API has no logout; the token lapses.")

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        instrument = order.broker_symbol or order.symbol
        body: dict[str, Any] = {
            "instrument": instrument,
            "orderSide": order.side.value,
            "volume": order.quantity,  # lots
            "slPrice": 0,
            "tpPrice": 0,
            "isMobile": False,
            "comment": order.client_order_id,  # UNCONFIRMED on /mtr-api/; see module docstring
        }
        if order.order_type == OrderType.MARKET:
            path = "position/open"
        elif order.order_type in PENDING_ORDER_TYPES:
            # A pending order has one activation price: the limit price, or the stop trigger.
            if order.order_type == OrderType.LIMIT:
                activation = order.price
            else:
                activation = order.trigger_price or order.price
            if activation is None:
                raise errors.InputError(f"A {order.order_type.value} order needs a price.")
            body.update(type=PENDING_ORDER_TYPES[order.order_type], price=activation)
            path = "pending-order/create"
        else:
            raise errors.InputError(f"Match-Trader does not take {order.order_type.value} orders.")
        data = self._operation(path, body)
        if order.order_type == OrderType.MARKET:  # a market order fills or is refused at once
            return OrderAck(str(data["orderId"]), OrderStatus.FILLED, str(data.get("status")))
        return OrderAck(str(data["orderId"]), OrderStatus.OPEN, str(data.get("status")))

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        current = self._active_order(broker_order_id)
        kind = ORDER_TYPES.get(str(current.get("type")))
        if changes.order_type is not None and changes.order_type != kind:
            raise errors.InputError("Match-Trader cannot change a pending order's type.")
        new_price = changes.price if kind == OrderType.LIMIT else changes.trigger_price
        new_price = new_price or changes.price or changes.trigger_price
        body = {
            "id": broker_order_id,
            "instrument": current.get("symbol"),
            "orderSide": current.get("side"),
            "type": current.get("type"),
            "volume": changes.quantity or to_decimal(current.get("volume")),
            "priceOrder": new_price or to_decimal(current.get("activationPrice")),
            "slPrice": current.get("slPrice") or 0,
            "tpPrice": current.get("tpPrice") or 0,
            "isMobile": False,
        }
        data = self._operation("pending-order/edit", body)
        return OrderAck(str(data.get("orderId") or broker_order_id), OrderStatus.OPEN, "OK")

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        current = self._active_order(broker_order_id)
        body = {
            "id": broker_order_id,
            "instrument": current.get("symbol"),
            "orderSide": current.get("side"),
            "type": current.get("type"),
            "isMobile": False,
        }
        data = self._operation("pending-order/cancel", body)
        return OrderAck(str(data.get("orderId") or broker_order_id), OrderStatus.CANCELLED, "OK")

    def close_position(
        self,
        position_id: str,
        *,
        instrument: str = "",
        side: Side | None = None,
        volume=None,
    ) -> OrderAck:
        """Close an open position (all of it, or ``volume`` lots) with position/close.

        Match-Trader accounts hedge: each fill is its own position, closed by id rather than by
        an opposite order. ``side`` is the position's own side, as the platform expects.
        """
        if not (instrument and side and volume):
            position = next((p for p in self.positions() if p.position_id == position_id), None)
            if position is None:
                raise errors.NotFound(f"Position {position_id} is not open.")
            instrument = instrument or position.symbol
            side = side or (Side.BUY if position.quantity > 0 else Side.SELL)
            volume = volume or abs(position.quantity)
        body = {
            "positionId": position_id,
            "instrument": instrument,
            "orderSide": Side(side).value,
            "volume": volume,
        }
        data = self._operation("position/close", body)
        return OrderAck(str(data.get("orderId") or ""), OrderStatus.FILLED, str(data.get("status")))

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        for order in self.order_book():
            if order.broker_order_id == broker_order_id:
                return order
        raise errors.NotFound(f"Match-Trader has no order {broker_order_id}.")

    def order_book(self) -> list[BrokerOrder]:
        active = [
            _active_order(row) for row in self._trading_get("active-orders").get("orders", [])
        ]
        history = self._order_history()
        seen = {order.broker_order_id for order in active}
        return active + [order for order in history if order.broker_order_id not in seen]

    def trade_book(self) -> list[Trade]:
        """Fills as positions show them: each position's opening fill, then each closing fill."""
        open_rows, closed_rows = self._open_position_rows(), self._closed_position_rows()
        opened: dict[str, dict] = {}  # position id -> its row, with the volume it opened with
        for row in open_rows + closed_rows:
            entry = opened.setdefault(str(row["id"]), {**row, "volume": Decimal(0)})
            entry["volume"] += decimal_or_zero(row.get("volume"))
        trades = [
            Trade(
                trade_id=position_id,
                broker_order_id=position_id,  # a position's id is its opening order's id
                symbol=str(row["symbol"]),
                exchange=EXCHANGE,
                side=SIDES[str(row["side"])],
                quantity=row["volume"],
                price=decimal_or_zero(row.get("openPrice")),
                traded_at=_parse_time(row.get("openTime")),
            )
            for position_id, row in opened.items()
        ]
        for row in closed_rows:
            trades.append(
                Trade(
                    trade_id=str(row.get("uid") or row.get("closingOrderID") or row["id"]),
                    broker_order_id=str(row.get("closingOrderID") or ""),
                    symbol=str(row["symbol"]),
                    exchange=EXCHANGE,
                    side=Side.SELL if SIDES[str(row["side"])] == Side.BUY else Side.BUY,
                    quantity=decimal_or_zero(row.get("volume")),
                    price=decimal_or_zero(row.get("closePrice")),
                    traded_at=_parse_time(row.get("time")),
                )
            )
        return trades

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        positions = []
        for row in self._open_position_rows():
            volume = decimal_or_zero(row.get("volume"))
            positions.append(
                Position(
                    symbol=str(row["symbol"]),
                    exchange=EXCHANGE,
                    quantity=volume if SIDES[str(row["side"])] == Side.BUY else -volume,
                    average_price=decimal_or_zero(row.get("openPrice")),
                    last_price=to_decimal(row.get("currentPrice")),
                    pnl=to_decimal(row.get("profit")),
                    position_id=str(row["id"]),
                )
            )
        return positions

    def holdings(self):
        raise errors.NotSupported("Match-Trader accounts hold CFD positions, not holdings.")

    def funds(self) -> Funds:
        data = self._trading_get("balance")
        return Funds(
            total=decimal_or_zero(data.get("balance")),
            available=decimal_or_zero(data.get("freeMargin")),
            used_margin=decimal_or_zero(data.get("margin")),
            currency=str(data.get("currency") or self._session_currency()),
            equity=to_decimal(data.get("equity")),
        )

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        symbols = ",".join(symbol for _, symbol in instruments)
        rows = self._trading_get("quotations", params={"symbols": symbols})
        quotes = []
        for row in rows if isinstance(rows, list) else rows.get("quotations", []):
            bid, ask = to_decimal(row.get("bid")), to_decimal(row.get("ask"))
            # Quotes carry bid and ask only; the mid stands in for a last traded price.
            last = (bid + ask) / 2 if bid is not None and ask is not None else bid or ask
            if last is None:
                continue
            quotes.append(Quote(str(row["symbol"]), EXCHANGE, last_price=last, bid=bid, ask=ask))
        return quotes

    def instrument_master(self) -> list[InstrumentRecord]:
        data = self._trading_get("effective-instruments")
        rows = data if isinstance(data, list) else data.get("instruments", [])
        return [parse_instrument(row) for row in rows]

    # HTTP helpers ----------------------------------------------------------------------------

    def _describe_error(self, response: requests.Response) -> tuple[str, str | None]:
        try:
            data = response.json()
        except ValueError:
            return response.text[:200], None
        if not isinstance(data, dict):
            return response.text[:200], None
        message = str(data.get("errorMessage") or data.get("message") or data.get("error") or "")
        code = data.get("nativeCode") or data.get("status")
        return message, str(code) if code not in (None, "") else None

    def _checked(self, response: requests.Response) -> Any:
        """The JSON body of a 2xx answer; 4xx answers become typed errors."""
        if response.status_code >= 400:
            message, broker_code = self._describe_error(response)
            error_class = HTTP_STATUS_ERRORS.get(response.status_code, errors.BrokerError)
            raise error_class(
                message or f"Match-Trader answered HTTP {response.status_code}.",
                broker_code=broker_code,
                http_status=response.status_code,
            )
        return self._json(response)

    def _trading_headers(self) -> dict[str, str]:
        session = self._live_session()
        return {
            **_JSON_HEADERS,
            "Auth-trading-api": session.extra["trading_api_token"],
            "Cookie": f"{SESSION_COOKIE}={session.access_token}",
        }

    def _trading_path(self, endpoint: str) -> str:
        return f"/mtr-api/{self._live_session().extra['system_uuid']}/{endpoint}"

    def _trading_get(self, endpoint: str, **kwargs: Any) -> Any:
        response = self._request(
            "GET", self._trading_path(endpoint), headers=self._trading_headers(), **kwargs
        )
        return self._checked(response)

    def _trading_post(self, endpoint: str, body: dict, *, write: bool) -> requests.Response:
        return self._request(
            "POST",
            self._trading_path(endpoint),
            write=write,
            headers=self._trading_headers(),
            data=_dumps(body),
        )

    def _operation(self, endpoint: str, body: dict) -> dict:
        """POST a trading operation; anything but status OK/PARTIAL_SUCCESS raises."""
        data = self._checked(self._trading_post(endpoint, body, write=True))
        if str(data.get("status") or "") not in ("OK", "PARTIAL_SUCCESS"):
            raise operation_error(data)
        if endpoint in ("position/open", "pending-order/create") and not data.get("orderId"):
            # Accepted, but we cannot name the order: reconcile by client id, never resend.
            raise errors.OutcomeUnknown("Match-Trader accepted the order but sent no orderId.")
        return data

    def _active_order(self, broker_order_id: str) -> dict:
        """The pending order as active-orders shows it; a final or unknown order raises."""
        for row in self._trading_get("active-orders").get("orders", []):
            if str(row.get("id")) == broker_order_id:
                return row
        order = self.order_status(broker_order_id)  # raises NotFound for an unknown order
        raise errors.OrderRejected(
            f"Order {broker_order_id} is {order.status.value.lower()}; only pending orders change.",
            broker_code=order.raw_status,
        )

    def _order_history(self) -> list[BrokerOrder]:
        response = self._trading_post("closed-orders", _history_window(), write=False)
        if response.status_code == 404:  # no order history here: orders as positions show them
            return self._orders_from_positions()
        rows = self._checked(response).get("orders", [])
        return [_history_order(row) for row in rows]

    def _orders_from_positions(self) -> list[BrokerOrder]:
        orders: dict[str, BrokerOrder] = {}
        for row in self._closed_position_rows() + self._open_position_rows():
            order = _filled_order_from_position(row)
            orders.setdefault(order.broker_order_id, order)
        return list(orders.values())

    def _open_position_rows(self) -> list[dict]:
        return self._trading_get("open-positions").get("positions", [])

    def _closed_position_rows(self) -> list[dict]:
        response = self._trading_post("closed-positions", _history_window(), write=False)
        return self._checked(response).get("operations", [])

    def _live_session(self) -> SessionData:
        if self.session is None or not self.session.access_token:
            raise errors.SessionExpired("Not logged in to Match-Trader.")
        return self.session

    def _session_currency(self) -> str:
        return (self.session.extra.get("currency") if self.session else "") or self.currency

    def _choose_account(self, accounts: list[dict]) -> dict:
        if not accounts:
            raise errors.InvalidCredentials("This Match-Trader login has no trading account.")
        wanted = str(self.credentials.get("trading_account_id") or "").strip()
        if not wanted:
            return accounts[0]
        for account in accounts:
            if str(account.get("tradingAccountId")) == wanted:
                return account
        raise errors.InvalidCredentials(
            f"Trading account {wanted} is not among this login's accounts."
        )


# Parsing helpers -------------------------------------------------------------------------------

_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


def session_expiry(token: str, issued_at: datetime) -> datetime:
    """When the co-auth token lapses: its JWT ``exp`` claim, else issued_at + 15 minutes."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error, OverflowError):
        return issued_at + DEFAULT_SESSION_LIFETIME


def operation_error(data: dict) -> errors.BrokerError:
    """The typed error for a refused trading operation ``{status, nativeCode, errorMessage}``."""
    native_code = str(data.get("nativeCode") or "")
    message = str(data.get("errorMessage") or "") or f"Match-Trader refused: {data.get('status')}"
    error_class = NATIVE_CODE_ERRORS.get(native_code)
    if error_class is None:
        lowered = message.lower()
        error_class = next(
            (cls for fragment, cls in MESSAGE_ERRORS if fragment in lowered), errors.OrderRejected
        )
    return error_class(message, broker_code=native_code or str(data.get("status") or "") or None)


def parse_instrument(row: dict) -> InstrumentRecord:
    precision = row.get("pricePrecision")
    tick = to_decimal(f"1E-{int(precision)}") if precision not in (None, "") else None
    symbol = str(row["symbol"])
    return InstrumentRecord(
        symbol=symbol,
        exchange=EXCHANGE,
        broker_symbol=symbol,
        broker_token=symbol,  # Match-Trader names instruments by symbol only
        lot_size=to_decimal(row.get("volumeStep")) or to_decimal("0.01"),
        tick_size=tick or to_decimal("0.00001"),
        instrument_type=str(row.get("type") or ""),
        name=str(row.get("description") or ""),
    )


def _active_order(row: dict) -> BrokerOrder:
    kind = ORDER_TYPES.get(str(row.get("type")), OrderType.LIMIT)
    activation = to_decimal(row.get("activationPrice"))
    return BrokerOrder(
        broker_order_id=str(row["id"]),
        client_order_id=str(row.get("comment") or ""),
        symbol=str(row["symbol"]),
        exchange=EXCHANGE,
        side=SIDES[str(row["side"])],
        order_type=kind,
        quantity=decimal_or_zero(row.get("volume")),
        status=OrderStatus.OPEN,
        raw_status="ACTIVE",
        price=activation if kind == OrderType.LIMIT else None,
        trigger_price=activation if kind == OrderType.STOP else None,
        placed_at=_parse_time(row.get("creationTime")),
    )


def _history_order(row: dict) -> BrokerOrder:
    kind = ORDER_TYPES.get(str(row.get("type")), OrderType.MARKET)
    raw_status = str(row.get("status") or "")
    status = ORDER_STATUSES.get(raw_status.upper(), OrderStatus.PENDING)
    activation = to_decimal(row.get("activationPrice"))
    filled = to_decimal(row.get("filledVolume"))
    if filled is None:
        filled = decimal_or_zero(row.get("volume")) if status == OrderStatus.FILLED else 0
    return BrokerOrder(
        broker_order_id=str(row["id"]),
        client_order_id=str(row.get("comment") or ""),
        symbol=str(row["symbol"]),
        exchange=EXCHANGE,
        side=SIDES[str(row["side"])],
        order_type=kind,
        quantity=decimal_or_zero(row.get("volume")),
        status=status,
        raw_status=raw_status,
        filled_quantity=decimal_or_zero(filled),
        average_price=to_decimal(row.get("executionPrice")),
        price=activation if kind == OrderType.LIMIT else None,
        trigger_price=activation if kind == OrderType.STOP else None,
        message=str(row.get("errorMessage") or ""),
        placed_at=_parse_time(row.get("creationTime")),
    )


def _filled_order_from_position(row: dict) -> BrokerOrder:
    """The filled order that opened a position (UNCONFIRMED: position id == order id)."""
    volume = decimal_or_zero(row.get("volume"))
    return BrokerOrder(
        broker_order_id=str(row["id"]),
        client_order_id=str(row.get("comment") or ""),
        symbol=str(row["symbol"]),
        exchange=EXCHANGE,
        side=SIDES[str(row["side"])],
        order_type=OrderType.MARKET,
        quantity=volume,
        status=OrderStatus.FILLED,
        raw_status="POSITION",
        filled_quantity=volume,
        average_price=to_decimal(row.get("openPrice")),
        placed_at=_parse_time(row.get("openTime")),
    )


def _history_window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "from": (now - HISTORY_WINDOW).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
    }


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)) or str(value).isdigit():
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None


def _dumps(body: dict) -> str:
    """JSON with each Decimal written as a JSON number with its exact digits (never a float)."""
    numbers: dict[str, str] = {}

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            placeholder = f"@decimal{len(numbers)}@"
            numbers[placeholder] = format(value, "f")
            return placeholder
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    text = json.dumps(plain(body))
    for placeholder, digits in numbers.items():
        text = text.replace(f'"{placeholder}"', digits)
    return text
