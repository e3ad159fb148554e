"""Zerodha Kite Connect v3, simulated: the login page, the token exchange and the REST API.

Written from Kite's documentation and the official SDK (pykiteconnect 5.x), never from our
adapter. Served at the host root like ``https://api.kite.trade``; the browser login page
(``https://kite.zerodha.com/connect/login`` in production) is served by the same server.

Wire facts kept here:
- every API call needs ``X-Kite-Version: 3`` and ``Authorization: token api_key:access_token``;
- POST/PUT bodies are form-encoded, GET/DELETE parameters are in the query string;
- success ``{"status": "success", "data": ...}``; errors
  ``{"status": "error", "message": ..., "error_type": ..., "data": null}``;
- access tokens die at 06:00 IST the next morning (or on ``/__sim__/expire-sessions``);
- a margin shortfall does not fail the place call: the order is accepted and ends REJECTED with
  an ``RMS:Margin Exceeds`` status message, as on the real platform.

Test helpers for in-process use: ``clock`` (replace to move time), ``fill_partially()`` and
``fail_next()``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import itertools
import secrets
import struct
import time
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import engine
from .base import IST, Request, Response, Simulator, route

KITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Kite rejects order tags longer than this.
TAG_MAX_LENGTH = 20
#: How long a request_token from the login redirect can be exchanged (UNCONFIRMED; Kite says
#: "a few minutes"), and it works once.
REQUEST_TOKEN_TTL = timedelta(minutes=5)
VARIETIES = ("regular",)  # amo, co, iceberg and auction are not simulated

ORDER_TYPES = {  # Kite -> engine
    "MARKET": engine.MARKET,
    "LIMIT": engine.LIMIT,
    "SL": engine.STOP_LIMIT,
    "SL-M": engine.STOP,
}
ENGINE_ORDER_TYPES = {value: key for key, value in ORDER_TYPES.items()}
PRODUCTS = ("CNC", "NRML", "MIS", "MTF")
VALIDITIES = ("DAY", "IOC")
EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX")

# Engine history markers -> the Kite statuses an order passes through.
HISTORY_STATUSES = {
    "RECEIVED": ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING"],
    engine.OPEN: ["OPEN PENDING", "OPEN"],
    engine.TRIGGER_PENDING: ["OPEN PENDING", "TRIGGER PENDING"],
    "TRIGGERED": ["OPEN"],
    "PARTIAL": ["OPEN"],
    "MODIFIED": ["MODIFY VALIDATION PENDING", "MODIFY PENDING"],
    engine.FILLED: ["COMPLETE"],
    engine.CANCELLED: ["CANCEL PENDING", "CANCELLED"],
    engine.REJECTED: ["REJECTED"],
}

CSV_COLUMNS = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)


class KiteError(Exception):
    """An error answered in Kite's envelope."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def kite_error(status: int, error_type: str, message: str) -> Response:
    body = {"status": "error", "message": message, "error_type": error_type, "data": None}
    return Response(status, body)


def ok(data: Any) -> Response:
    return Response(200, {"status": "success", "data": data})


class KiteSimulator(Simulator):
    """Kite Connect v3 on loopback: login page, sessions, orders, portfolio, quotes, instruments."""

    name = "kite"
    default_seed = {
        "apps": [
            {
                "api_key": "kitesimapikey01",
                "api_secret": "kitesimapisecret0123456789",
                "redirect_url": "http://127.0.0.1:8000/brokers/callback/zerodha/",
            }
        ],
        "users": [
            {
                "user_id": "ZS1234",
                "password": "sim-pass-1234",
                "user_name": "Asha Rao",
                "email": "asha@example.com",
                "totp_secret": "",
                "funds": "1000000",
                "holdings": [
                    {"instrument": "NSE:SBIN", "quantity": 50, "average_price": "600"},
                    {"instrument": "NSE:TCS", "quantity": 5, "average_price": "3400"},
                ],
            },
            {
                "user_id": "ZT5678",
                "password": "sim-pass-5678",
                "user_name": "Vikram Iyer",
                "email": "vikram@example.com",
                "totp_secret": "JBSWY3DPEHPK3PXP",
                "funds": "250000",
                "holdings": [],
            },
        ],
        "instruments": [
            {
                "exchange": "NSE",
                "tradingsymbol": "INFY",
                "name": "INFOSYS",
                "instrument_token": 408065,
                "exchange_token": 1594,
                "last_price": "1500",
                "tick_size": "0.05",
                "lot_size": 1,
            },
            {
                "exchange": "NSE",
                "tradingsymbol": "SBIN",
                "name": "STATE BANK OF INDIA",
                "instrument_token": 779521,
                "exchange_token": 3045,
                "last_price": "800",
                "tick_size": "0.05",
                "lot_size": 1,
            },
            {
                "exchange": "NSE",
                "tradingsymbol": "RELIANCE",
                "name": "RELIANCE INDUSTRIES",
                "instrument_token": 738561,
                "exchange_token": 2885,
                "last_price": "2900",
                "tick_size": "0.10",
                "lot_size": 1,
            },
            {
                "exchange": "NSE",
                "tradingsymbol": "TCS",
                "name": "TATA CONSULTANCY SERV LT",
                "instrument_token": 2953217,
                "exchange_token": 11536,
                "last_price": "3500",
                "tick_size": "0.05",
                "lot_size": 1,
            },
            {
                "exchange": "BSE",
                "tradingsymbol": "INFY",
                "name": "INFOSYS",
                "instrument_token": 128053508,
                "exchange_token": 500209,
                "last_price": "1500.5",
                "tick_size": "0.05",
                "lot_size": 1,
            },
            {
                "exchange": "NFO",
                "tradingsymbol": "NIFTY25DEC24000CE",
                "name": "NIFTY",
                "instrument_token": 12345602,
                "exchange_token": 48225,
                "last_price": "210.5",
                "tick_size": "0.05",
                "lot_size": 75,
                "instrument_type": "CE",
                "segment": "NFO-OPT",
                "expiry": "2025-12-30",
                "strike": "24000",
            },
            {
                "exchange": "NFO",
                "tradingsymbol": "NIFTY25DECFUT",
                "name": "NIFTY",
                "instrument_token": 12345858,
                "exchange_token": 48226,
                "last_price": "24150",
                "tick_size": "0.10",
                "lot_size": 75,
                "instrument_type": "FUT",
                "segment": "NFO-FUT",
                "expiry": "2025-12-30",
            },
        ],
    }

    # Each test may replace this to move the simulator's idea of "now" (IST-aware).
    clock = staticmethod(lambda: datetime.now(IST))

    # Seed and state ------------------------------------------------------------------------

    def load_seed(self, seed: dict) -> None:
        self.apps = {app["api_key"]: dict(app) for app in seed["apps"]}
        self.users = {user["user_id"]: dict(user) for user in seed["users"]}
        self.instruments: dict[str, dict] = {}
        for item in seed["instruments"]:
            key = f"{item['exchange']}:{item['tradingsymbol']}"
            price = Decimal(str(item["last_price"]))
            self.instruments[key] = {
                "instrument_type": "EQ",
                "segment": item["exchange"],
                "expiry": "",
                "strike": "0",
                **item,
                "open": price,
                "high": price,
                "low": price,
                "close": Decimal(str(item.get("close", price))),
            }
        self.exchange = engine.Exchange(
            prices={key: Decimal(str(item["last_price"])) for key, item in self.instruments.items()}
        )
        for user in self.users.values():
            account = self.exchange.open_account(user["user_id"], Decimal(str(user["funds"])))
            for holding in user.get("holdings", []):
                account.holdings[holding["instrument"]] = (
                    Decimal(str(holding["quantity"])),
                    Decimal(str(holding["average_price"])),
                )
        self.request_tokens: dict[str, dict] = {}
        self.access_tokens: dict[str, dict] = {}
        self.trade_ids = itertools.count(10_000_001)
        self.exchange_order_ids = itertools.count(1_100_000_000_000_001)
        self.pending_failures: list[KiteError] = []

    def expire_sessions(self) -> None:
        with self.lock:
            for session in self.access_tokens.values():
                session["expired"] = True
            self.request_tokens.clear()

    def set_prices(self, prices: dict[str, Decimal]) -> None:
        with self.lock:
            for key, price in prices.items():
                if key not in self.instruments:
                    raise LookupError(f"Unknown instrument {key}")
                item = self.instruments[key]
                item["high"] = max(item["high"], price)
                item["low"] = min(item["low"], price)
                self.exchange.set_price(key, price)

    # Test helpers (in process) ---------------------------------------------------------------

    def fill_partially(self, order_id: str, quantity: Decimal, price: Decimal | None = None):
        """Fill part of an open order, as an exchange does when the book is thin."""
        with self.lock, self.exchange.lock:
            order = self._order_anywhere(order_id)
            self._sync_fills(order)
            if order.status != engine.OPEN or not 0 < quantity < order.pending_quantity:
                raise ValueError("Only part of an open order's pending quantity can be filled")
            account = self.exchange.account(order.account_id)
            price = price if price is not None else self.exchange.prices[order.instrument]
            full_quantity = order.quantity
            # The engine fills whole orders; shrink the order for one fill, then restore it.
            order.quantity = order.filled_quantity + quantity
            self.exchange._fill(account, order, price)
            order.quantity = full_quantity
            order.status = engine.OPEN
            order.history[-1] = "PARTIAL"
            self._record_fill(order, quantity, price)

    def fail_next(self, status: int, error_type: str, message: str) -> None:
        """The next API call (after authentication) answers with this Kite error."""
        with self.lock:
            self.pending_failures.append(KiteError(status, error_type, message))

    # Error bodies used by the fault injector and the router -------------------------------

    def rate_limited_response(self, retry_after: int) -> Response:
        response = kite_error(429, "NetworkException", "Too many requests")
        response.headers["Retry-After"] = str(retry_after)
        return response

    def server_error_response(self, status: int) -> Response:
        error_type, message = {
            502: ("DataException", "Bad gateway: invalid response from the OMS"),
            503: ("NetworkException", "Service unavailable: the OMS could not be reached"),
            504: ("NetworkException", "Gateway timeout"),
        }.get(status, ("GeneralException", "Internal server error"))
        return kite_error(status, error_type, message)

    def not_found_response(self, request: Request) -> Response:
        return kite_error(404, "GeneralException", "Route not found")

    # Login page (kite.zerodha.com) -------------------------------------------------------------

    @route("GET", "/connect/login")
    def login_page(self, request: Request) -> Response:
        api_key = request.arg("api_key", "")
        if api_key not in self.apps:
            return self._error_page("Invalid `api_key`.")
        return self._login_form(
            api_key=api_key,
            redirect_params=request.arg("redirect_params", "") or "",
            user_id="",
            error="",
        )

    @route("POST", "/connect/login")
    def login_submit(self, request: Request) -> Response:
        form = request.form()
        api_key = form.get("api_key", "")
        redirect_params = form.get("redirect_params", "")
        user_id = form.get("user_id", "").strip().upper()
        with self.lock:
            app = self.apps.get(api_key)
            if app is None:
                return self._error_page("Invalid `api_key`.")
            user = self.users.get(user_id)
            error = ""
            if user is None or not hmac.compare_digest(user["password"], form.get("password", "")):
                error = "Invalid `user_id` or `password`."
            elif user.get("totp_secret") and not _totp_ok(
                user["totp_secret"], form.get("twofa", ""), self.clock()
            ):
                error = "Invalid TOTP."
            if error:
                return self._login_form(
                    api_key=api_key, redirect_params=redirect_params, user_id=user_id, error=error
                )
            request_token = secrets.token_urlsafe(24)
            self.request_tokens[request_token] = {
                "api_key": api_key,
                "user_id": user_id,
                "created_at": self.clock(),
            }
        # Kite appends the login URL's redirect_params to the redirect; its own keys win.
        extra = [
            (k, v)
            for k, v in parse_qsl(redirect_params, keep_blank_values=True)
            if k not in ("request_token", "action", "status", "type")
        ]
        params = [
            ("action", "login"),
            ("type", "login"),
            ("status", "success"),
            ("request_token", request_token),
            *extra,
        ]
        location = _add_query(app["redirect_url"], params)
        return Response(302, "", {"Location": location})

    def _login_form(self, *, api_key: str, redirect_params: str, user_id: str, error: str):
        esc = html.escape
        error_html = f'<p class="error">{esc(error)}</p>' if error else ""
        page = f"""<!doctype html>
<html><head><title>Kite - Login</title></head>
<body>
<h1>Login to Kite</h1>
{error_html}
<form method="post" action="/connect/login">
  <input type="hidden" name="api_key" value="{esc(api_key)}">
  <input type="hidden" name="redirect_params" value="{esc(redirect_params)}">
  <label>User ID <input type="text" name="user_id" value="{esc(user_id)}"></label>
  <label>Password <input type="password" name="password" value=""></label>
  <label>TOTP (if enabled) <input type="text" name="twofa" value=""></label>
  <button type="submit">Login</button>
</form>
</body></html>"""
        return Response(200, page)

    def _error_page(self, message: str) -> Response:
        page = (
            "<!doctype html><html><head><title>Kite - Error</title></head>"
            f'<body><h1>Error</h1><p class="error">{html.escape(message)}</p></body></html>'
        )
        return Response(400, page)

    # Session ----------------------------------------------------------------------------------

    @route("POST", "/session/token")
    def session_token(self, request: Request) -> Response:
        if (error := self._version_error(request)) is not None:
            return error
        form = request.form()
        api_key = form.get("api_key", "")
        request_token = form.get("request_token", "")
        with self.lock:
            app = self.apps.get(api_key)
            if app is None:
                return kite_error(400, "InputException", "Invalid `api_key`.")
            expected = hashlib.sha256(
                (api_key + request_token + app["api_secret"]).encode()
            ).hexdigest()
            if not hmac.compare_digest(expected, form.get("checksum", "")):
                return kite_error(400, "InputException", "Invalid `checksum`.")
            grant = self.request_tokens.pop(request_token, None)
            now = self.clock()
            if (
                grant is None
                or grant["api_key"] != api_key
                or now - grant["created_at"] > REQUEST_TOKEN_TTL
            ):
                return kite_error(403, "TokenException", "Token is invalid or has expired.")
            user = self.users[grant["user_id"]]
            access_token = secrets.token_urlsafe(24)
            login_time = now.astimezone(IST).replace(microsecond=0)
            self.access_tokens[access_token] = {
                "api_key": api_key,
                "user_id": user["user_id"],
                "login_time": login_time,
                "expires_at": _next_six_am(login_time),
                "expired": False,
            }
        return ok(
            {
                "user_type": "individual",
                "email": user["email"],
                "user_name": user["user_name"],
                "user_shortname": user["user_name"].split()[0],
                "broker": "ZERODHA",
                "exchanges": list(EXCHANGES),
                "products": list(PRODUCTS),
                "order_types": list(ORDER_TYPES),
                "avatar_url": None,
                "user_id": user["user_id"],
                "api_key": api_key,
                "access_token": access_token,
                "public_token": secrets.token_hex(16),
                "refresh_token": "",
                "login_time": login_time.strftime(KITE_TIME_FORMAT),
                "meta": {"demat_consent": "physical"},
            }
        )

    @route("DELETE", "/session/token")
    def session_logout(self, request: Request) -> Response:
        if (error := self._version_error(request)) is not None:
            return error
        api_key = request.arg("api_key", "")
        access_token = request.arg("access_token", "")
        with self.lock:
            session = self.access_tokens.get(access_token)
            if session is None or session["api_key"] != api_key:
                return kite_error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
            del self.access_tokens[access_token]
        return ok(True)

    @route("GET", "/user/profile")
    def profile(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        user = self.users[user_id]
        return ok(
            {
                "user_id": user_id,
                "user_type": "individual",
                "email": user["email"],
                "user_name": user["user_name"],
                "user_shortname": user["user_name"].split()[0],
                "broker": "ZERODHA",
                "exchanges": list(EXCHANGES),
                "products": list(PRODUCTS),
                "order_types": list(ORDER_TYPES),
                "avatar_url": None,
                "meta": {"demat_consent": "physical"},
            }
        )

    # Funds -----------------------------------------------------------------------------------

    @route("GET", "/user/margins")
    def margins(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        with self.lock:
            return ok({"equity": self._equity_margins(user_id), "commodity": _empty_segment()})

    @route("GET", "/user/margins/{segment}")
    def segment_margins(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        segment = request.params["segment"]
        if segment not in ("equity", "commodity"):
            return kite_error(400, "InputException", "Invalid segment.")
        with self.lock:
            data = self._equity_margins(user_id) if segment == "equity" else _empty_segment()
            return ok(data)

    def _equity_margins(self, user_id: str) -> dict:
        account = self.exchange.account(user_id)
        opening = Decimal(str(self.users[user_id]["funds"]))
        live_balance = account.available(self.exchange.prices)
        realised = sum((p.realised for p in account.positions.values()), Decimal(0))
        unrealised = sum(
            (self.exchange.unrealised(p) for p in account.positions.values()), Decimal(0)
        )
        return {
            "enabled": True,
            "net": live_balance,
            "available": {
                "adhoc_margin": 0,
                "cash": opening,
                "opening_balance": opening,
                "live_balance": live_balance,
                "collateral": 0,
                "intraday_payin": 0,
            },
            "utilised": {
                "debits": opening - live_balance,
                "exposure": 0,
                "m2m_realised": realised,
                "m2m_unrealised": unrealised,
                "option_premium": 0,
                "payout": 0,
                "span": 0,
                "holding_sales": 0,
                "turnover": 0,
                "liquid_collateral": 0,
                "stock_collateral": 0,
                "delivery": 0,
            },
        }

    # Orders ----------------------------------------------------------------------------------

    @route("POST", "/orders/{variety}")
    def place_order(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        form = request.form()
        try:
            with self.lock:
                order = self._place(user_id, request.params["variety"], form)
                self.record_order(
                    client_tag=order.tag,
                    broker_order_id=order.order_id,
                    user_id=user_id,
                    instrument=order.instrument,
                    side=order.side,
                    quantity=order.quantity,
                    order_type=form.get("order_type", ""),
                    status=order.status,
                )
        except KiteError as exc:
            return kite_error(exc.status, exc.error_type, exc.message)
        self.hang_if_asked()
        return ok({"order_id": order.order_id})

    def _place(self, user_id: str, variety: str, form: dict[str, str]) -> engine.SimOrder:
        if variety not in VARIETIES:
            raise KiteError(400, "InputException", "Invalid `variety`.")
        for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "product"):
            if not form.get(name):
                raise KiteError(400, "InputException", f"Missing `{name}`.")
        exchange_name = form["exchange"]
        if exchange_name not in EXCHANGES:
            raise KiteError(400, "InputException", "Invalid `exchange`.")
        key = f"{exchange_name}:{form['tradingsymbol']}"
        instrument = self.instruments.get(key)
        if instrument is None:
            raise KiteError(400, "InputException", "Invalid `tradingsymbol`.")
        side = form["transaction_type"]
        if side not in (engine.BUY, engine.SELL):
            raise KiteError(400, "InputException", "Invalid `transaction_type`.")
        kite_type = form.get("order_type", "")
        if kite_type not in ORDER_TYPES:
            raise KiteError(400, "InputException", "Invalid `order_type`.")
        if form["product"] not in PRODUCTS:
            raise KiteError(400, "InputException", "Invalid `product`.")
        validity = form.get("validity") or "DAY"
        if validity not in VALIDITIES:
            raise KiteError(400, "InputException", "Invalid `validity`.")
        tag = form.get("tag", "")
        if len(tag) > TAG_MAX_LENGTH or (tag and not tag.isalnum()):
            raise KiteError(
                400, "InputException", "Invalid `tag`: alphanumeric, 20 characters at most."
            )
        quantity = _whole_number(form["quantity"], "quantity")
        lot_size = int(instrument["lot_size"])
        if quantity <= 0 or quantity % lot_size:
            raise KiteError(
                400, "InputException", f"Quantity should be a multiple of lot size {lot_size}."
            )
        tick = Decimal(str(instrument["tick_size"]))
        price = _price(form.get("price"), "price", tick)
        trigger_price = _price(form.get("trigger_price"), "trigger_price", tick)
        if kite_type in ("LIMIT", "SL") and not price:
            raise KiteError(400, "InputException", "Invalid `price`.")
        if kite_type in ("SL", "SL-M") and not trigger_price:
            raise KiteError(400, "InputException", "Invalid `trigger_price`.")
        if kite_type in ("MARKET", "SL-M"):
            price = None
        if kite_type in ("MARKET", "LIMIT"):
            trigger_price = None

        account = self.exchange.account(user_id)
        available = account.available(self.exchange.prices)
        required = quantity * (price or trigger_price or self.exchange.prices[key])
        try:
            order = self.exchange.place(
                user_id,
                instrument=key,
                side=side,
                quantity=quantity,
                order_type=ORDER_TYPES[kite_type],
                price=price,
                trigger_price=trigger_price,
                product=form["product"],
                tag=tag,
                extra={"variety": variety, "validity": validity},
            )
        except engine.EngineError as exc:
            raise KiteError(400, "InputException", exc.message) from None
        if order.status == engine.REJECTED:
            # Kite's RMS rejects after accepting the order; the reason is the status message.
            order.message = (
                f"RMS:Margin Exceeds, Required:{required:.2f}, Available:{available:.2f} "
                f"for entity account-{user_id} across exchange across segment across product"
            )
        else:
            order.extra["exchange_order_id"] = str(next(self.exchange_order_ids))
            if validity == "IOC" and order.status not in engine.FINAL:
                self.exchange.cancel(user_id, order.order_id)
        self._sync_fills(order)
        return order

    @route("PUT", "/orders/{variety}/{order_id}")
    def modify_order(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        form = request.form()
        try:
            with self.lock:
                order = self._own_order(user_id, request.params["order_id"])
                self._check_variety(request, order)
                self._check_modifiable(order, "modified")
                tick = Decimal(str(self.instruments[order.instrument]["tick_size"]))
                kite_type = form.get("order_type") or None
                if kite_type is not None and kite_type not in ORDER_TYPES:
                    raise KiteError(400, "InputException", "Invalid `order_type`.")
                quantity = (
                    _whole_number(form["quantity"], "quantity") if form.get("quantity") else None
                )
                self._sync_fills(order)
                try:
                    self.exchange.modify(
                        user_id,
                        order.order_id,
                        quantity=quantity,
                        price=_price(form.get("price"), "price", tick),
                        trigger_price=_price(form.get("trigger_price"), "trigger_price", tick),
                        order_type=ORDER_TYPES[kite_type] if kite_type else None,
                    )
                except engine.EngineError as exc:
                    raise KiteError(400, "InputException", exc.message) from None
                order.extra["modified"] = True
                self._sync_fills(order)
        except KiteError as exc:
            return kite_error(exc.status, exc.error_type, exc.message)
        return ok({"order_id": order.order_id})

    @route("DELETE", "/orders/{variety}/{order_id}")
    def cancel_order(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        try:
            with self.lock:
                order = self._own_order(user_id, request.params["order_id"])
                self._check_variety(request, order)
                self._check_modifiable(order, "cancelled")
                self._sync_fills(order)
                self.exchange.cancel(user_id, order.order_id)
        except KiteError as exc:
            return kite_error(exc.status, exc.error_type, exc.message)
        return ok({"order_id": order.order_id})

    @route("GET", "/orders")
    def orders(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        with self.lock:
            account = self.exchange.account(user_id)
            return ok([self._history(order)[-1] for order in account.orders.values()])

    @route("GET", "/orders/{order_id}")
    def order_history(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        try:
            with self.lock:
                return ok(self._history(self._own_order(user_id, request.params["order_id"])))
        except KiteError as exc:
            return kite_error(exc.status, exc.error_type, exc.message)

    @route("GET", "/orders/{order_id}/trades")
    def order_trades(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        try:
            with self.lock:
                order = self._own_order(user_id, request.params["order_id"])
                return ok(self._trades(order))
        except KiteError as exc:
            return kite_error(exc.status, exc.error_type, exc.message)

    @route("GET", "/trades")
    def trades(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        with self.lock:
            account = self.exchange.account(user_id)
            return ok([t for order in account.orders.values() for t in self._trades(order)])

    def _own_order(self, user_id: str, order_id: str) -> engine.SimOrder:
        order = self.exchange.account(user_id).orders.get(order_id)
        if order is None:
            # The real API answers an unknown id with this GeneralException (seen in client code).
            raise KiteError(400, "GeneralException", "Couldn't find that `order_id`.")
        return order

    def _order_anywhere(self, order_id: str) -> engine.SimOrder:
        for account in self.exchange.accounts.values():
            if order_id in account.orders:
                return account.orders[order_id]
        raise LookupError(order_id)

    def _check_variety(self, request: Request, order: engine.SimOrder) -> None:
        if request.params["variety"] != order.extra.get("variety"):
            raise KiteError(400, "InputException", "Invalid `variety`.")

    def _check_modifiable(self, order: engine.SimOrder, verb: str) -> None:
        if order.status in engine.FINAL:
            status = _kite_status(order.status)
            raise KiteError(
                400, "OrderException", f"Order cannot be {verb} as it is {status.lower()}."
            )

    # Fills: the engine keeps one average per order; Kite reports each fill as a trade.

    def _sync_fills(self, order: engine.SimOrder) -> None:
        fills = order.extra.setdefault("fills", [])
        done = sum((fill["quantity"] for fill in fills), Decimal(0))
        if order.filled_quantity > done:
            # The engine filled the rest at its last fill price.
            self._record_fill(order, order.filled_quantity - done, order.average_price)

    def _record_fill(self, order: engine.SimOrder, quantity: Decimal, price: Decimal) -> None:
        order.extra.setdefault("fills", []).append(
            {
                "trade_id": str(next(self.trade_ids)),
                "quantity": quantity,
                "price": price,
                "at": order.updated_at,
            }
        )

    def _history(self, order: engine.SimOrder) -> list[dict]:
        """The order's state transitions, oldest first, as GET /orders/{order_id} returns them."""
        self._sync_fills(order)
        fills = order.extra["fills"]
        entries: list[dict] = []
        filled_so_far: list[dict] = []
        working = "OPEN"
        opened = False
        for marker in order.history:
            statuses = list(HISTORY_STATUSES.get(marker, []))
            if marker in (engine.OPEN, engine.TRIGGER_PENDING):
                if opened:
                    statuses = statuses[1:]
                opened = True
                working = statuses[-1]
            elif marker == "TRIGGERED":
                working = "OPEN"
            elif marker == "MODIFIED":
                statuses.append(working)
            if marker in ("PARTIAL", engine.FILLED) and len(filled_so_far) < len(fills):
                filled_so_far.append(fills[len(filled_so_far)])
            for status in statuses:
                entries.append(self._order_dict(order, status, filled_so_far))
        if not entries or entries[-1]["status"] != _kite_status(order.status):
            entries.append(self._order_dict(order, _kite_status(order.status), fills))
        return entries

    def _order_dict(self, order: engine.SimOrder, status: str, fills: list[dict]) -> dict:
        instrument = self.instruments[order.instrument]
        filled = sum((fill["quantity"] for fill in fills), Decimal(0))
        value = sum((fill["quantity"] * fill["price"] for fill in fills), Decimal(0))
        final = status in ("COMPLETE", "CANCELLED", "REJECTED")
        cancelled = order.quantity - filled if status == "CANCELLED" else Decimal(0)
        pending = Decimal(0) if final else order.quantity - filled
        at = order.updated_at if final or fills else order.created_at
        exchange_order_id = order.extra.get("exchange_order_id")
        reached_exchange = exchange_order_id and status not in (
            "PUT ORDER REQ RECEIVED",
            "VALIDATION PENDING",
            "OPEN PENDING",
        )
        return {
            "placed_by": order.account_id,
            "order_id": order.order_id,
            "exchange_order_id": exchange_order_id if reached_exchange else None,
            "parent_order_id": None,
            "status": status,
            "status_message": order.message or None if status == "REJECTED" else None,
            "status_message_raw": order.message or None if status == "REJECTED" else None,
            "order_timestamp": _kite_time(at),
            "exchange_update_timestamp": _kite_time(at) if reached_exchange else None,
            "exchange_timestamp": _kite_time(order.created_at) if reached_exchange else None,
            "variety": order.extra.get("variety", "regular"),
            "modified": bool(order.extra.get("modified")),
            "exchange": instrument["exchange"],
            "tradingsymbol": instrument["tradingsymbol"],
            "instrument_token": instrument["instrument_token"],
            "order_type": ENGINE_ORDER_TYPES[order.order_type],
            "transaction_type": order.side,
            "validity": order.extra.get("validity", "DAY"),
            "validity_ttl": 0,
            "product": order.product,
            "quantity": int(order.quantity),
            "disclosed_quantity": 0,
            "price": order.price or 0,
            "trigger_price": order.trigger_price or 0,
            "average_price": (value / filled) if filled else 0,
            "filled_quantity": int(filled),
            "pending_quantity": int(pending),
            "cancelled_quantity": int(cancelled),
            "market_protection": 0,
            "meta": {},
            "tag": order.tag or None,
            "tags": [order.tag] if order.tag else None,
            "guid": order.extra.setdefault("guid", secrets.token_hex(8)),
        }

    def _trades(self, order: engine.SimOrder) -> list[dict]:
        self._sync_fills(order)
        instrument = self.instruments[order.instrument]
        return [
            {
                "trade_id": fill["trade_id"],
                "order_id": order.order_id,
                "exchange_order_id": order.extra.get("exchange_order_id"),
                "tradingsymbol": instrument["tradingsymbol"],
                "exchange": instrument["exchange"],
                "instrument_token": instrument["instrument_token"],
                "transaction_type": order.side,
                "product": order.product,
                "average_price": fill["price"],
                "quantity": int(fill["quantity"]),
                "fill_timestamp": _kite_time(fill["at"]),
                "order_timestamp": _kite_time(order.created_at),
                "exchange_timestamp": _kite_time(fill["at"]),
            }
            for fill in order.extra["fills"]
        ]

    # Portfolio ---------------------------------------------------------------------------

    @route("GET", "/portfolio/positions")
    def positions(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        with self.lock:
            account = self.exchange.account(user_id)
            rows = [self._position_dict(account, p) for p in account.positions.values()]
            # Every simulated position was opened today, so "day" equals "net".
            return ok({"net": rows, "day": [dict(row) for row in rows]})

    def _position_dict(self, account: engine.SimAccount, position: engine.SimPosition) -> dict:
        instrument = self.instruments[position.instrument]
        buy_quantity = sell_quantity = buy_value = sell_value = Decimal(0)
        for order in account.orders.values():
            if order.instrument != position.instrument or order.product != position.product:
                continue
            self._sync_fills(order)
            for fill in order.extra["fills"]:
                if order.side == engine.BUY:
                    buy_quantity += fill["quantity"]
                    buy_value += fill["quantity"] * fill["price"]
                else:
                    sell_quantity += fill["quantity"]
                    sell_value += fill["quantity"] * fill["price"]
        last = self.exchange.prices[position.instrument]
        unrealised = self.exchange.unrealised(position)
        buy_price = buy_value / buy_quantity if buy_quantity else Decimal(0)
        sell_price = sell_value / sell_quantity if sell_quantity else Decimal(0)
        return {
            "tradingsymbol": instrument["tradingsymbol"],
            "exchange": instrument["exchange"],
            "instrument_token": instrument["instrument_token"],
            "product": position.product,
            "quantity": int(position.quantity),
            "overnight_quantity": 0,
            "multiplier": 1,
            "average_price": position.average_price,
            "close_price": instrument["close"],
            "last_price": last,
            "value": sell_value - buy_value,
            "pnl": position.realised + unrealised,
            "m2m": position.realised + unrealised,
            "unrealised": unrealised,
            "realised": position.realised,
            "buy_quantity": int(buy_quantity),
            "buy_price": buy_price,
            "buy_value": buy_value,
            "buy_m2m_value": buy_value,
            "sell_quantity": int(sell_quantity),
            "sell_price": sell_price,
            "sell_value": sell_value,
            "sell_m2m_value": sell_value,
            "day_buy_quantity": int(buy_quantity),
            "day_buy_price": buy_price,
            "day_buy_value": buy_value,
            "day_sell_quantity": int(sell_quantity),
            "day_sell_price": sell_price,
            "day_sell_value": sell_value,
        }

    @route("GET", "/portfolio/holdings")
    def holdings(self, request: Request) -> Response:
        user_id, error = self._authenticate(request)
        if error:
            return error
        with self.lock:
            account = self.exchange.account(user_id)
            rows = []
            for key, (quantity, average) in account.holdings.items():
                instrument = self.instruments[key]
                last = self.exchange.prices[key]
                rows.append(
                    {
                        "tradingsymbol": instrument["tradingsymbol"],
                        "exchange": instrument["exchange"],
                        "instrument_token": instrument["instrument_token"],
                        "isin": "",
                        "product": "CNC",
                        "price": 0,
                        "quantity": int(quantity),
                        "used_quantity": 0,
                        "t1_quantity": 0,
                        "realised_quantity": int(quantity),
                        "authorised_quantity": 0,
                        "collateral_quantity": 0,
                        "collateral_type": "",
                        "average_price": average,
                        "last_price": last,
                        "close_price": instrument["close"],
                        "pnl": (last - average) * quantity,
                        "day_change": last - instrument["close"],
                        "day_change_percentage": (
                            (last - instrument["close"]) * 100 / instrument["close"]
                        ),
                    }
                )
            return ok(rows)

    # Market data -------------------------------------------------------------------------------

    @route("GET", "/quote")
    def quote(self, request: Request) -> Response:
        return self._quotes(request, "full")

    @route("GET", "/quote/ohlc")
    def quote_ohlc(self, request: Request) -> Response:
        return self._quotes(request, "ohlc")

    @route("GET", "/quote/ltp")
    def quote_ltp(self, request: Request) -> Response:
        return self._quotes(request, "ltp")

    def _quotes(self, request: Request, mode: str) -> Response:
        _, error = self._authenticate(request)
        if error:
            return error
        keys = request.query.get("i", [])
        if not keys:
            return kite_error(400, "InputException", "No instruments specified.")
        data = {}
        with self.lock:
            for key in keys:
                if key in self.instruments:  # unknown instruments are left out, as Kite does
                    data[key] = self._quote(key, mode)
        return ok(data)

    def _quote(self, key: str, mode: str) -> dict:
        instrument = self.instruments[key]
        last = self.exchange.prices[key]
        quote: dict[str, Any] = {
            "instrument_token": instrument["instrument_token"],
            "last_price": last,
        }
        if mode == "ltp":
            return quote
        ohlc = {
            "open": instrument["open"],
            "high": instrument["high"],
            "low": instrument["low"],
            "close": instrument["close"],
        }
        quote["ohlc"] = ohlc
        if mode == "ohlc":
            return quote
        tick = Decimal(str(instrument["tick_size"]))
        volume = sum(
            (
                order.filled_quantity
                for account in self.exchange.accounts.values()
                for order in account.orders.values()
                if order.instrument == key
            ),
            Decimal(0),
        )
        now = self.clock().astimezone(IST).strftime(KITE_TIME_FORMAT)
        quote.update(
            {
                "timestamp": now,
                "last_trade_time": now,
                "last_quantity": 1,
                "buy_quantity": 500,
                "sell_quantity": 500,
                "volume": int(volume),
                "average_price": last,
                "oi": 0,
                "oi_day_high": 0,
                "oi_day_low": 0,
                "net_change": last - instrument["close"],
                "lower_circuit_limit": (instrument["close"] * Decimal("0.8")).quantize(tick),
                "upper_circuit_limit": (instrument["close"] * Decimal("1.2")).quantize(tick),
                "depth": {
                    "buy": [
                        {"price": last - tick * (n + 1), "quantity": 100, "orders": 2}
                        for n in range(5)
                    ],
                    "sell": [
                        {"price": last + tick * (n + 1), "quantity": 100, "orders": 2}
                        for n in range(5)
                    ],
                },
            }
        )
        return quote

    # The instrument list is a public CSV dump: Kite serves it without an access token.
    @route("GET", "/instruments")
    def instruments_dump(self, request: Request) -> Response:
        return self._instruments_csv(None)

    @route("GET", "/instruments/{exchange}")
    def exchange_instruments(self, request: Request) -> Response:
        return self._instruments_csv(request.params["exchange"])

    def _instruments_csv(self, exchange: str | None) -> Response:
        lines = [",".join(CSV_COLUMNS)]
        with self.lock:
            for key, item in self.instruments.items():
                if exchange and item["exchange"] != exchange:
                    continue
                row = {
                    **item,
                    "last_price": self.exchange.prices[key],
                    "strike": Decimal(str(item["strike"])),
                }
                lines.append(",".join(_csv_cell(row[column]) for column in CSV_COLUMNS))
        return Response(200, ("\n".join(lines) + "\n").encode(), content_type="text/csv")

    # Authentication --------------------------------------------------------------------------

    def _version_error(self, request: Request) -> Response | None:
        # UNCONFIRMED how Kite answers a missing version header; we refuse it as a token error.
        if request.header("x-kite-version") != "3":
            return kite_error(403, "TokenException", "Missing or invalid `X-Kite-Version` header.")
        return None

    def _authenticate(self, request: Request) -> tuple[str, Response | None]:
        """(user_id, None) for a valid session, else ("", the Kite error response)."""
        if (error := self._version_error(request)) is not None:
            return "", error
        scheme, _, credentials = request.header("authorization").partition(" ")
        api_key, _, access_token = credentials.partition(":")
        with self.lock:
            session = self.access_tokens.get(access_token)
            if scheme != "token" or session is None or session["api_key"] != api_key:
                return "", kite_error(
                    403, "TokenException", "Incorrect `api_key` or `access_token`."
                )
            if session["expired"] or self.clock() >= session["expires_at"]:
                return "", kite_error(403, "TokenException", "Token is invalid or has expired.")
            if self.pending_failures:
                failure = self.pending_failures.pop(0)
                return "", kite_error(failure.status, failure.error_type, failure.message)
            return session["user_id"], None


# Helpers ----------------------------------------------------------------------------------------


def _next_six_am(moment: datetime) -> datetime:
    """Kite access tokens expire at 06:00 IST on the morning after login."""
    local = moment.astimezone(IST)
    six = local.replace(hour=6, minute=0, second=0, microsecond=0)
    return six if local < six else six + timedelta(days=1)


def _kite_status(engine_status: str) -> str:
    return {
        engine.OPEN: "OPEN",
        engine.TRIGGER_PENDING: "TRIGGER PENDING",
        engine.FILLED: "COMPLETE",
        engine.CANCELLED: "CANCELLED",
        engine.REJECTED: "REJECTED",
    }[engine_status]


def _kite_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, IST).strftime(KITE_TIME_FORMAT)


def _whole_number(value: str, name: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise KiteError(400, "InputException", f"Invalid `{name}`.") from None
    if number != number.to_integral_value():
        raise KiteError(400, "InputException", f"Invalid `{name}`.")
    return number


def _price(value: str | None, name: str, tick: Decimal) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise KiteError(400, "InputException", f"Invalid `{name}`.") from None
    if price < 0:
        raise KiteError(400, "InputException", f"Invalid `{name}`.")
    if price and price % tick:
        message = f"Tick size for this script is {tick}. Kindly enter valid {name}."
        raise KiteError(400, "InputException", message)
    return price or None


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return str(float(value))  # Kite writes prices like 1500.0 and 0.05
    return str(value).replace(",", " ")


def _empty_segment() -> dict:
    return {"enabled": False, "net": 0, "available": {}, "utilised": {}}


def _add_query(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + params
    return urlunsplit(parts._replace(query=urlencode(query)))


def _totp_ok(secret: str, code: str, now: datetime, window: int = 1) -> bool:
    """RFC 6238: six digits, 30-second steps, one step of clock drift either way."""
    step = int(now.timestamp()) // 30
    return any(
        hmac.compare_digest(_totp_code(secret, counter), code.strip())
        for counter in range(step - window, step + window + 1)
    )


def totp_now(secret: str, at: float | None = None) -> str:
    """The current TOTP code for ``secret`` (what an authenticator app would show)."""
    return _totp_code(secret, int(at if at is not None else time.time()) // 30)


def _totp_code(secret: str, counter: int) -> str:
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{value:06d}"
