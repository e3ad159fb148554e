"""Fyers API v3, simulated: login page, token exchange, orders, portfolio, quotes, symbol master.

Written from Fyers' v3 documentation (myapi.fyers.in/docsv3) and the official SDKs, never from
the adapter. One host serves everything, as ``api-t1.fyers.in`` does: the trading API under
``/api/v3/``, market data under ``/data/``, and (for tests) the public symbol master under
``/sym_details/`` that Fyers really publishes on ``public.fyers.in``.

Wire facts followed here:
- Every authenticated call carries ``Authorization: <app_id>:<access_token>`` (no "Bearer").
- Success: ``{"s": "ok", "code": 200, "message": "", <key>: ...}``; orders answer with codes
  1101 (placed), 1102 (modified), 1103 (cancelled) and the order ``id``.
- Errors: ``{"s": "error", "code": <negative>, "message": ...}`` with the HTTP status from the
  docs' table: 400 bad request, 401 could not authenticate, 403 no permission, 429 rate limited
  (``Retry-After`` in seconds), 500 server error. -8 token expired, -15 invalid token, -16 could
  not authenticate, -50 invalid parameters, -51 invalid order id, -99 order rejected, -300 invalid
  symbol, -352 invalid app id, -429 rate limited; login: -441 auth code missing, -442 bad
  grant_type, -437 invalid auth code, -371 bad appIdHash, -501 refresh token refused.
- Order status numbers: 1 cancelled, 2 traded, 4 transit, 5 rejected, 6 pending, 7 expired.
- Order tags: alphanumeric, 1-30 characters, not "Untagged"; the order book shows a user tag as
  ``1:<tag>`` (``2:Untagged`` when none was sent) and ``?order_tag=1:<tag>`` filters on it.

Simulator choices the docs leave open (each marked where it happens): the login page asks for the
Fyers id and PIN only; the access token lives until the next midnight IST; a wrong PIN on
refresh answers -501 with a message naming the PIN; requests without ``version: 3`` are refused
so an adapter that forgets the header fails here rather than in production.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import itertools
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from . import engine
from .base import IST, Request, Response, Simulator, route

REFRESH_TOKEN_LIFETIME = timedelta(days=15)
AUTH_CODE_LIFETIME = timedelta(minutes=10)

ORDER_TYPES = {1: engine.LIMIT, 2: engine.MARKET, 3: engine.STOP, 4: engine.STOP_LIMIT}
ORDER_TYPE_NUMBERS = {value: key for key, value in ORDER_TYPES.items()}
SIDES = {1: engine.BUY, -1: engine.SELL}
PRODUCTS = frozenset({"CNC", "INTRADAY", "MARGIN", "CO", "BO", "MTF"})
VALIDITIES = frozenset({"DAY", "IOC"})
STATUS_NUMBERS = {
    engine.OPEN: 6,
    engine.TRIGGER_PENDING: 6,  # Fyers shows a waiting stop order as pending
    engine.FILLED: 2,
    engine.CANCELLED: 1,
    engine.REJECTED: 5,
}
EXCHANGE_CODES = {"NSE": 10, "MCX": 11, "BSE": 12}
CAPITAL_MARKET = 10
ORDER_TAG_MAX_LENGTH = 30

# The 21 columns of Fyers' headerless symbol master CSVs, in order.
SYMBOL_MASTER_COLUMNS = (
    "Fytoken",
    "Symbol Details",
    "Exchange Instrument type",
    "Minimum lot size",
    "Tick size",
    "ISIN",
    "Trading Session",
    "Last update date",
    "Expiry date",
    "Symbol ticker",
    "Exchange",
    "Segment",
    "Scrip code",
    "Underlying symbol",
    "Underlying scrip code",
    "Strike price",
    "Option type",
    "Underlying FyToken",
    "Reserved column 1",
    "Reserved column 2",
    "Reserved column 3",
)

REDIRECT_URI = "http://127.0.0.1:8000/brokers/callback/fyers/"


@dataclass
class Token:
    value: str
    client_id: str
    fyers_id: str
    expires_at: datetime


class FyersError(Exception):
    """An error answer in Fyers' envelope."""

    def __init__(self, status: int, code: int, message: str, **extra):
        super().__init__(message)
        self.response = Response(status, {"s": "error", "code": code, "message": message, **extra})


def _now() -> datetime:
    return datetime.now(UTC)


def _next_midnight_ist(moment: datetime) -> datetime:
    local = moment.astimezone(IST)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=IST)


def _app_id_hash(client_id: str, secret_key: str) -> str:
    return hashlib.sha256(f"{client_id}:{secret_key}".encode()).hexdigest()


def _ok(**payload) -> Response:
    return Response(200, {"s": "ok", "code": 200, "message": "", **payload})


def _fyers_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, IST).strftime("%d-%b-%Y %H:%M:%S")


class FyersSimulator(Simulator):
    """Fyers API v3 on loopback: OAuth login page, sessions, a real order lifecycle."""

    name = "fyers"
    default_seed = {
        "apps": [
            {
                "client_id": "SIMAPP1234-100",
                "secret_key": "SIMSECRET9",
                "redirect_uri": REDIRECT_URI,
            }
        ],
        "users": [
            {
                "fyers_id": "XS12345",
                "pin": "4321",
                "name": "SIM TRADER",
                "email": "sim.trader@example.com",
                "funds": "1000000",
                "holdings": [{"symbol": "NSE:SBIN-EQ", "quantity": 10, "cost_price": "600"}],
            }
        ],
        "instruments": [
            {
                "symbol": "NSE:INFY-EQ",
                "price": "1500",
                "fytoken": "101000000001594",
                "description": "INFOSYS LIMITED",
                "isin": "INE009A01021",
                "scrip_code": 1594,
                "lot_size": 1,
                "tick_size": "0.05",
            },
            {
                "symbol": "NSE:SBIN-EQ",
                "price": "800",
                "fytoken": "10100000003045",
                "description": "STATE BANK OF INDIA",
                "isin": "INE062A01020",
                "scrip_code": 3045,
                "lot_size": 1,
                "tick_size": "0.05",
            },
            {
                "symbol": "NSE:RELIANCE-EQ",
                "price": "2900",
                "fytoken": "10100000002885",
                "description": "RELIANCE INDUSTRIES LTD",
                "isin": "INE002A01018",
                "scrip_code": 2885,
                "lot_size": 1,
                "tick_size": "0.05",
            },
        ],
    }

    # State -----------------------------------------------------------------------------------

    def load_seed(self, seed: dict) -> None:
        self.apps = {app["client_id"]: app for app in seed.get("apps", [])}
        self.users = {user["fyers_id"]: user for user in seed.get("users", [])}
        self.instruments = {item["symbol"]: item for item in seed.get("instruments", [])}
        self.auth_codes: dict[str, Token] = {}
        self.access_tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.order_numbers = itertools.count(1)
        self.exchange = engine.Exchange(
            prices={
                symbol: Decimal(str(item["price"])) for symbol, item in self.instruments.items()
            }
        )
        for fyers_id, user in self.users.items():
            account = self.exchange.open_account(fyers_id, Decimal(str(user.get("funds", "0"))))
            for holding in user.get("holdings", []):
                account.holdings[holding["symbol"]] = (
                    Decimal(str(holding["quantity"])),
                    Decimal(str(holding["cost_price"])),
                )

    def expire_sessions(self) -> None:
        # Access tokens lapse; refresh tokens (15 days) survive, as they do at Fyers overnight.
        past = _now() - timedelta(seconds=1)
        for token in self.access_tokens.values():
            token.expires_at = past

    def set_prices(self, prices: dict[str, Decimal]) -> None:
        for symbol, price in prices.items():
            self.exchange.set_price(symbol, price)

    # Error bodies used by the fault injector -------------------------------------------------

    def rate_limited_response(self, retry_after: int) -> Response:
        return Response(
            429,
            {"s": "error", "code": -429, "message": "request limit reached"},
            {"Retry-After": str(retry_after), "X-Retry-After-Ms": str(retry_after * 1000)},
        )

    def server_error_response(self, status: int) -> Response:
        return Response(status, {"s": "error", "code": -500, "message": "Internal server error"})

    def not_found_response(self, request: Request) -> Response:
        # Not a documented Fyers body; the same envelope keeps clients' parsing uniform.
        return Response(
            404,
            {"s": "error", "code": -404, "message": f"No route {request.method} {request.path}"},
        )

    # Login page (what a browser sees) ---------------------------------------------------------

    @route("GET", "/api/v3/generate-authcode")
    def login_page(self, request: Request) -> Response:
        try:
            client_id, redirect_uri, state = self._check_login_request(
                request.arg("client_id", ""),
                request.arg("redirect_uri", ""),
                request.arg("response_type", ""),
                request.arg("state", ""),
            )
        except FyersError as exc:
            return exc.response
        return Response(200, self._login_form(client_id, redirect_uri, state, error=""))

    @route("POST", "/api/v3/generate-authcode")
    def login_submit(self, request: Request) -> Response:
        form = request.form()
        try:
            client_id, redirect_uri, state = self._check_login_request(
                form.get("client_id", ""),
                form.get("redirect_uri", ""),
                form.get("response_type", "code"),
                form.get("state", ""),
            )
        except FyersError as exc:
            return exc.response
        fyers_id = form.get("fyers_id", "").strip().upper()
        with self.lock:
            user = self.users.get(fyers_id)
            if user is None or not secrets.compare_digest(str(user["pin"]), form.get("pin", "")):
                page = self._login_form(
                    client_id, redirect_uri, state, error="Invalid Fyers ID or PIN"
                )
                return Response(401, page)
            code = secrets.token_urlsafe(32)
            self.auth_codes[code] = Token(code, client_id, fyers_id, _now() + AUTH_CODE_LIFETIME)
        separator = "&" if "?" in redirect_uri else "?"
        query = urlencode({"s": "ok", "code": "200", "auth_code": code, "state": state})
        return Response(302, "", {"Location": f"{redirect_uri}{separator}{query}"})

    def _check_login_request(
        self, client_id: str, redirect_uri: str, response_type: str, state: str
    ) -> tuple[str, str, str]:
        app = self.apps.get(client_id)
        if app is None:
            raise FyersError(400, -352, "Invalid App ID")
        if redirect_uri != app["redirect_uri"]:
            # Fyers only redirects to the URL registered with the app.
            raise FyersError(400, -50, "redirect_uri does not match the app's redirect URL")
        if response_type != "code":
            raise FyersError(400, -50, "response_type must be code")
        return client_id, redirect_uri, state

    @staticmethod
    def _login_form(client_id: str, redirect_uri: str, state: str, *, error: str) -> str:
        def hidden(name: str, value: str) -> str:
            return f'<input type="hidden" name="{name}" value="{html.escape(value)}">'

        notice = f'<p class="error">{html.escape(error)}</p>' if error else ""
        return (
            "<!doctype html><html><head><title>FYERS Login (simulator)</title></head><body>"
            f"<h1>Login to FYERS</h1>{notice}"
            '<form method="post" action="/api/v3/generate-authcode">'
            f"{hidden('client_id', client_id)}{hidden('redirect_uri', redirect_uri)}"
            f"{hidden('response_type', 'code')}{hidden('state', state)}"
            '<label>Fyers ID <input name="fyers_id" autocomplete="username"></label>'
            '<label>PIN <input name="pin" type="password" inputmode="numeric"></label>'
            '<button type="submit">Continue</button></form></body></html>'
        )

    # Token exchange ------------------------------------------------------------------------------

    @route("POST", "/api/v3/validate-authcode")
    def validate_authcode(self, request: Request) -> Response:
        try:
            body = self._json_body(request)
            code = str(body.get("code") or "")
            if not code:
                raise FyersError(400, -441, "auth code is required")
            if body.get("grant_type") != "authorization_code":
                raise FyersError(400, -442, "Please provide valid grant_type")
            if not body.get("appIdHash"):
                raise FyersError(400, -371, "Please provide sha256 hash of appId and app secret")
            with self.lock:
                auth = self.auth_codes.pop(code, None)  # single use
                if auth is None or auth.expires_at <= _now():
                    raise FyersError(400, -437, "invalid auth code")
                app = self.apps[auth.client_id]
                if body["appIdHash"] != _app_id_hash(app["client_id"], app["secret_key"]):
                    raise FyersError(400, -371, "Please provide valid appIdHash")
                access = self._issue_access_token(auth.client_id, auth.fyers_id)
                refresh = Token(
                    secrets.token_urlsafe(40),
                    auth.client_id,
                    auth.fyers_id,
                    _now() + REFRESH_TOKEN_LIFETIME,
                )
                self.refresh_tokens[refresh.value] = refresh
        except FyersError as exc:
            return exc.response
        return _ok(access_token=access.value, refresh_token=refresh.value)

    @route("POST", "/api/v3/validate-refresh-token")
    def validate_refresh_token(self, request: Request) -> Response:
        try:
            body = self._json_body(request)
            if body.get("grant_type") != "refresh_token":
                raise FyersError(400, -442, "Please provide valid grant_type")
            with self.lock:
                refresh = self.refresh_tokens.get(str(body.get("refresh_token") or ""))
                if refresh is None or refresh.expires_at <= _now():
                    raise FyersError(400, -501, "Invalid refresh token")
                app = self.apps[refresh.client_id]
                if body.get("appIdHash") != _app_id_hash(app["client_id"], app["secret_key"]):
                    raise FyersError(400, -371, "Please provide valid appIdHash")
                user = self.users[refresh.fyers_id]
                # Simulator choice: Fyers' code for a wrong PIN is undocumented.
                if not secrets.compare_digest(str(user["pin"]), str(body.get("pin") or "")):
                    raise FyersError(400, -501, "Invalid pin")
                access = self._issue_access_token(refresh.client_id, refresh.fyers_id)
        except FyersError as exc:
            return exc.response
        return _ok(access_token=access.value)

    def _issue_access_token(self, client_id: str, fyers_id: str) -> Token:
        issued = _now()
        token = Token(secrets.token_urlsafe(40), client_id, fyers_id, _next_midnight_ist(issued))
        self.access_tokens[token.value] = token
        return token

    # Authenticated routes --------------------------------------------------------------------

    def _authenticate(self, request: Request) -> Token:
        header = request.header("authorization").strip()
        if not header:
            raise FyersError(401, -16, "Could not authenticate the user")
        client_id, _, access_token = header.partition(":")
        if client_id not in self.apps:
            raise FyersError(401, -352, "Invalid App ID")
        with self.lock:
            token = self.access_tokens.get(access_token.strip())
        if token is None or token.client_id != client_id:
            raise FyersError(401, -15, "Invalid token")
        if token.expires_at <= _now():
            raise FyersError(401, -8, "Your token has expired")
        if request.header("version").strip() != "3":
            # Simulator strictness: the v3 SDKs always send it; answers differ without it.
            raise FyersError(400, -50, "Please provide the version header: 3")
        return token

    @staticmethod
    def _json_body(request: Request) -> dict:
        try:
            body = request.json()
        except ValueError:
            raise FyersError(400, -50, "Invalid input: the body must be JSON") from None
        if not isinstance(body, dict):
            raise FyersError(400, -50, "Invalid input: the body must be a JSON object")
        return body

    def _secured(self, request: Request, handler) -> Response:
        try:
            token = self._authenticate(request)
            return handler(token)
        except FyersError as exc:
            return exc.response

    @route("GET", "/api/v3/profile")
    def profile(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            user = self.users[token.fyers_id]
            data = {
                "fy_id": token.fyers_id,
                "name": user.get("name", ""),
                "display_name": user.get("name", ""),
                "email_id": user.get("email", ""),
                "mobile_number": "99xxxxxx99",
                "PAN": "XXXXX0000X",
                "totp": False,
                "ddpi_enabled": False,
                "mtf_enabled": False,
            }
            return _ok(data=data)

        return self._secured(request, answer)

    @route("POST", "/api/v3/logout")
    def logout(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            with self.lock:
                self.access_tokens.pop(token.value, None)
            return Response(
                200, {"s": "ok", "code": 200, "message": "you are successfully logged out"}
            )

        return self._secured(request, answer)

    @route("GET", "/api/v3/funds")
    def funds(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            user = self.users[token.fyers_id]
            with self.exchange.lock:
                account = self.exchange.account(token.fyers_id)
                start = Decimal(str(user.get("funds", "0")))
                available = account.available(self.exchange.prices)
                realised = sum((p.realised for p in account.positions.values()), Decimal(0))
                total = start + realised
                rows = [
                    (1, "Total Balance", total),
                    (2, "Utilized Amount", total - available),
                    (3, "Clear Balance", account.cash),
                    (4, "Realized Profit and Loss", realised),
                    (5, "Collaterals", Decimal(0)),
                    (6, "Fund Transfer", Decimal(0)),
                    (7, "Receivables", Decimal(0)),
                    (8, "Adhoc Limit", Decimal(0)),
                    (9, "Limit at start of the day", start),
                    (10, "Available Balance", available),
                ]
            fund_limit = [
                {"id": i, "title": title, "equityAmount": amount, "commodityAmount": 0}
                for i, title, amount in rows
            ]
            return _ok(fund_limit=fund_limit)

        return self._secured(request, answer)

    @route("GET", "/api/v3/orders")
    def orders(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            order_id = request.arg("id")
            order_tag = request.arg("order_tag")
            with self.exchange.lock:
                account = self.exchange.account(token.fyers_id)
                if order_id is not None:
                    order = account.orders.get(order_id)
                    if order is None:
                        raise FyersError(400, -51, "Invalid order id")
                    found = [order]
                else:
                    found = list(account.orders.values())
                rows = [self._order_row(o, token.fyers_id) for o in found]
            if order_tag is not None:
                rows = [row for row in rows if row["orderTag"] == order_tag]
            return _ok(orderBook=rows)

        return self._secured(request, answer)

    @route("POST", "/api/v3/orders/sync")
    def place_order(self, request: Request) -> Response:
        try:
            token = self._authenticate(request)
            body = self._json_body(request)
            fields = self._validate_new_order(body, token.fyers_id)
        except FyersError as exc:
            return exc.response
        order_id = self._next_order_id()
        try:
            order = self.exchange.place(
                token.fyers_id,
                order_id=order_id,
                extra={"validity": fields.pop("validity"), "disclosed": fields.pop("disclosed")},
                **fields,
            )
        except engine.EngineError as exc:
            return self._engine_error(exc).response
        if order.status == engine.REJECTED:
            order.message = self._margin_shortfall_message(token.fyers_id, order)
        if order.extra["validity"] == "IOC" and order.status not in engine.FINAL:
            order = self.exchange.cancel(token.fyers_id, order.order_id)
            order.message = "IOC order cancelled: not filled immediately"
        self.record_order(
            client_tag=fields["tag"],
            broker_order_id=order_id,
            account=token.fyers_id,
            symbol=fields["instrument"],
            side=fields["side"],
            quantity=fields["quantity"],
            status=order.status,
        )
        self.hang_if_asked()
        if order.status == engine.REJECTED:
            return Response(
                400, {"s": "error", "code": -99, "message": order.message, "id": order_id}
            )
        return Response(
            200, {"s": "ok", "code": 1101, "message": "Successfully placed order", "id": order_id}
        )

    @route("PATCH", "/api/v3/orders/sync")
    def modify_order(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            body = self._json_body(request)
            order_id = str(body.get("id") or "")
            changes = {}
            if "qty" in body:
                changes["quantity"] = self._quantity(body["qty"])
            if "type" in body:
                order_type = self._int(body["type"], "type")
                if order_type not in ORDER_TYPES:
                    raise FyersError(400, -50, "Invalid input: type")
                changes["order_type"] = ORDER_TYPES[order_type]
            instrument = self._order_or_error(token.fyers_id, order_id).instrument
            tick = Decimal(str(self.instruments[instrument]["tick_size"]))
            if self._price(body.get("limitPrice"), tick):
                changes["price"] = self._price(body["limitPrice"], tick)
            if self._price(body.get("stopPrice"), tick):
                changes["trigger_price"] = self._price(body["stopPrice"], tick)
            try:
                self.exchange.modify(token.fyers_id, order_id, **changes)
            except engine.EngineError as exc:
                raise self._engine_error(exc) from None
            return Response(
                200,
                {"s": "ok", "code": 1102, "message": "Successfully modified order", "id": order_id},
            )

        return self._secured(request, answer)

    @route("DELETE", "/api/v3/orders/sync")
    def cancel_order(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            body = self._json_body(request)
            order_id = str(body.get("id") or "")
            self._order_or_error(token.fyers_id, order_id)
            try:
                self.exchange.cancel(token.fyers_id, order_id)
            except engine.EngineError as exc:
                raise self._engine_error(exc) from None
            return Response(
                200,
                {
                    "s": "ok",
                    "code": 1103,
                    "message": "Successfully cancelled order",
                    "id": order_id,
                },
            )

        return self._secured(request, answer)

    @route("GET", "/api/v3/tradebook")
    def tradebook(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            with self.exchange.lock:
                account = self.exchange.account(token.fyers_id)
                trades = [
                    self._trade_row(order, token.fyers_id)
                    for order in account.orders.values()
                    if order.filled_quantity > 0
                ]
            order_tag = request.arg("order_tag")
            if order_tag is not None:
                trades = [trade for trade in trades if trade["orderTag"] == order_tag]
            return _ok(tradeBook=trades)

        return self._secured(request, answer)

    @route("GET", "/api/v3/positions")
    def positions(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            rows = []
            with self.exchange.lock:
                account = self.exchange.account(token.fyers_id)
                for position in account.positions.values():
                    rows.append(self._position_row(account, position))
            overall = {
                "count_total": len(rows),
                "count_open": sum(1 for row in rows if row["netQty"] != 0),
                "pl_total": sum((row["pl"] for row in rows), Decimal(0)),
                "pl_realized": sum((row["realized_profit"] for row in rows), Decimal(0)),
                "pl_unrealized": sum((row["unrealized_profit"] for row in rows), Decimal(0)),
            }
            return _ok(netPositions=rows, overall=overall)

        return self._secured(request, answer)

    @route("GET", "/api/v3/holdings")
    def holdings(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            rows = []
            with self.exchange.lock:
                account = self.exchange.account(token.fyers_id)
                for number, (symbol, (quantity, cost)) in enumerate(account.holdings.items(), 1):
                    item = self.instruments[symbol]
                    ltp = self.exchange.prices[symbol]
                    rows.append(
                        {
                            "holdingType": "HLD",
                            "quantity": quantity,
                            "costPrice": cost,
                            "marketVal": quantity * ltp,
                            "remainingQuantity": quantity,
                            "pl": (ltp - cost) * quantity,
                            "ltp": ltp,
                            "id": number,
                            "fyToken": item["fytoken"],
                            "exchange": EXCHANGE_CODES[symbol.split(":")[0]],
                            "symbol": symbol,
                            "segment": CAPITAL_MARKET,
                            "isin": item.get("isin", ""),
                            "qty_t1": 0,
                            "remainingPledgeQuantity": 0,
                            "collateralQuantity": 0,
                        }
                    )
            invested = sum((row["costPrice"] * row["quantity"] for row in rows), Decimal(0))
            current = sum((row["marketVal"] for row in rows), Decimal(0))
            overall = {
                "count_total": len(rows),
                "total_investment": invested,
                "total_current_value": current,
                "total_pl": current - invested,
                "pnl_perc": ((current - invested) / invested * 100).quantize(Decimal("0.01"))
                if invested
                else Decimal(0),
            }
            return _ok(holdings=rows, overall=overall)

        return self._secured(request, answer)

    @route("GET", "/data/quotes")
    def quotes(self, request: Request) -> Response:
        def answer(token: Token) -> Response:
            symbols = [s for s in (request.arg("symbols") or "").split(",") if s]
            if not symbols:
                raise FyersError(400, -50, "Invalid input: symbols")
            rows = []
            for symbol in symbols:
                item = self.instruments.get(symbol)
                if item is None:
                    rows.append({"n": symbol, "s": "error", "v": {"errmsg": "invalid symbol"}})
                    continue
                last = self.exchange.prices[symbol]
                tick = Decimal(str(item["tick_size"]))
                exchange, ticker = symbol.split(":", 1)
                rows.append(
                    {
                        "n": symbol,
                        "s": "ok",
                        "v": {
                            "ch": Decimal(0),
                            "chp": Decimal(0),
                            "lp": last,
                            "spread": tick * 2,
                            "ask": last + tick,
                            "bid": last - tick,
                            "open_price": last,
                            "high_price": last,
                            "low_price": last,
                            "prev_close_price": last,
                            "volume": 0,
                            "short_name": ticker,
                            "exchange": exchange,
                            "description": symbol,
                            "original_name": symbol,
                            "symbol": symbol,
                            "fyToken": item["fytoken"],
                            "tt": int(time.time()),
                        },
                    }
                )
            if all(row["s"] == "error" for row in rows):
                raise FyersError(400, -300, "Invalid symbol provided")
            return _ok(d=rows)

        return self._secured(request, answer)

    # Public symbol master --------------------------------------------------------------------

    @route("GET", "/sym_details/NSE_CM.csv")
    def symbol_master(self, request: Request) -> Response:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        today = datetime.now(IST).date().isoformat()
        for symbol, item in self.instruments.items():
            if not symbol.startswith("NSE:"):
                continue
            ticker = symbol.split(":", 1)[1]
            underlying = ticker.rsplit("-", 1)[0]
            writer.writerow(
                [
                    item["fytoken"],
                    item.get("description", ""),
                    0,  # exchange instrument type: 0 = equity
                    item.get("lot_size", 1),
                    item.get("tick_size", "0.05"),
                    item.get("isin", ""),
                    "0915-1530|1815-1915:",
                    today,
                    "",  # expiry: none for cash equities
                    symbol,
                    EXCHANGE_CODES["NSE"],
                    CAPITAL_MARKET,
                    item.get("scrip_code", 0),
                    underlying,
                    item.get("scrip_code", 0),
                    "-1.0",
                    "XX",
                    item["fytoken"],
                    "None",
                    "0",
                    "0.0",
                ]
            )
        return Response(200, out.getvalue().encode(), content_type="text/csv")

    # Helpers -----------------------------------------------------------------------------------

    def _next_order_id(self) -> str:
        with self.lock:
            number = next(self.order_numbers)
        return f"{datetime.now(IST):%y%m%d}{number:08d}"

    def _validate_new_order(self, body: dict, fyers_id: str) -> dict:
        for name in ("symbol", "qty", "type", "side", "productType"):
            if name not in body:
                raise FyersError(400, -50, f"Invalid input: {name} is required")
        symbol = str(body["symbol"])
        item = self.instruments.get(symbol)
        if item is None:
            raise FyersError(400, -300, "Invalid symbol provided")
        order_type = self._int(body["type"], "type")
        if order_type not in ORDER_TYPES:
            raise FyersError(400, -50, "Invalid input: type")
        side = self._int(body["side"], "side")
        if side not in SIDES:
            raise FyersError(400, -50, "Invalid input: side")
        product = str(body["productType"])
        if product not in PRODUCTS:
            raise FyersError(400, -50, "Invalid input: productType")
        validity = str(body.get("validity") or "DAY")
        if validity not in VALIDITIES:
            raise FyersError(400, -50, "Invalid input: validity")
        quantity = self._quantity(body["qty"])
        lot = int(item.get("lot_size", 1))
        if quantity % lot:
            raise FyersError(400, -50, "Quantity should be multiple of min lot size.")
        tick = Decimal(str(item["tick_size"]))
        price = self._price(body.get("limitPrice"), tick)
        trigger = self._price(body.get("stopPrice"), tick)
        kind = ORDER_TYPES[order_type]
        uses_price = kind in (engine.LIMIT, engine.STOP_LIMIT)
        uses_trigger = kind in (engine.STOP, engine.STOP_LIMIT)
        if uses_price and not price:
            raise FyersError(400, -50, "Please provide a valid limitPrice")
        if uses_trigger and not trigger:
            raise FyersError(400, -50, "Please provide a valid stop price")
        tag = str(body.get("orderTag") or "")
        if tag:
            valid = tag.isascii() and tag.isalnum() and len(tag) <= ORDER_TAG_MAX_LENGTH
            if not valid or tag == "Untagged" or tag.upper() == fyers_id:
                raise FyersError(400, -50, "Invalid input: orderTag")
            if product in ("CO", "BO"):
                raise FyersError(400, -50, "Ordertag is not supported for CO and BO orders")
        return {
            "instrument": symbol,
            "side": SIDES[side],
            "quantity": quantity,
            "order_type": kind,
            "price": price if uses_price else None,  # keep only the prices this type uses
            "trigger_price": trigger if uses_trigger else None,
            "product": product,
            "tag": tag,
            "validity": validity,
            "disclosed": self._int(body.get("disclosedQty") or 0, "disclosedQty"),
        }

    @staticmethod
    def _int(value, name: str) -> int:
        if isinstance(value, bool):
            raise FyersError(400, -50, f"Invalid input: {name}")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise FyersError(400, -50, f"Invalid input: {name}") from None
        if number != number.to_integral_value():
            raise FyersError(400, -50, f"Invalid input: {name}")
        return int(number)

    def _quantity(self, value) -> Decimal:
        quantity = self._int(value, "qty")
        if quantity <= 0:
            raise FyersError(400, -50, "Please provide a valid order quantity")
        return Decimal(quantity)

    @staticmethod
    def _price(value, tick: Decimal) -> Decimal | None:
        if value in (None, "", 0):
            return None
        try:
            price = Decimal(str(value))
        except InvalidOperation:
            raise FyersError(400, -50, "Invalid input: price") from None
        if price < 0:
            raise FyersError(400, -50, "Invalid input: price")
        if price == 0:
            return None
        if price % tick:
            raise FyersError(400, -50, f"Price not a multiple of tick size {tick:.4f}")
        return price

    def _margin_shortfall_message(self, fyers_id: str, order: engine.SimOrder) -> str:
        # The shape of Fyers' risk-system rejection text (RED:Margin Shortfall:...).
        with self.exchange.lock:
            available = self.exchange.account(fyers_id).available(self.exchange.prices)
            reference = order.price or order.trigger_price or self.exchange.prices[order.instrument]
        required = order.quantity * reference
        return (
            f"RED:Margin Shortfall:INR {required - available:,.2f} Available:INR "
            f"{available:,.2f} for C-{fyers_id} [FYERS_RISK_CUG]"
        )

    def _order_or_error(self, fyers_id: str, order_id: str) -> engine.SimOrder:
        try:
            return self.exchange.get(fyers_id, order_id)
        except engine.EngineError:
            raise FyersError(400, -51, "Invalid order id") from None

    @staticmethod
    def _engine_error(exc: engine.EngineError) -> FyersError:
        if exc.kind == "not_found":
            return FyersError(400, -51, "Invalid order id")
        if exc.kind == "not_open":
            return FyersError(400, -99, f"Order cannot be changed: {exc.message}")
        if exc.kind == "invalid_instrument":
            return FyersError(400, -300, "Invalid symbol provided")
        return FyersError(400, -50, exc.message)

    def _order_row(self, order: engine.SimOrder, fyers_id: str) -> dict:
        item = self.instruments[order.instrument]
        status = STATUS_NUMBERS[order.status]
        return {
            "clientId": fyers_id,
            "id": order.order_id,
            "exchOrdId": f"1100000{order.order_id[-9:]}" if status != 5 else "",
            "qty": order.quantity,
            "remainingQuantity": order.pending_quantity if status in (4, 6) else 0,
            "filledQty": order.filled_quantity,
            "discloseQty": order.extra.get("disclosed", 0),
            "disclosedQty": order.extra.get("disclosed", 0),
            "limitPrice": order.price or 0,
            "stopPrice": order.trigger_price or 0,
            "tradedPrice": order.average_price if order.filled_quantity else 0,
            "type": ORDER_TYPE_NUMBERS[order.order_type],
            "fyToken": item["fytoken"],
            "exchange": EXCHANGE_CODES[order.instrument.split(":")[0]],
            "segment": CAPITAL_MARKET,
            "symbol": order.instrument,
            "instrument": 0,
            "message": order.message,
            "offlineOrder": False,
            "orderDateTime": _fyers_time(order.created_at),
            "orderValidity": order.extra.get("validity", "DAY"),
            "pan": "",
            "productType": order.product,
            "side": 1 if order.side == engine.BUY else -1,
            "status": status,
            "source": "API",
            "ex_sym": order.instrument.split(":", 1)[1].rsplit("-", 1)[0],
            "description": item.get("description", ""),
            "lp": self.exchange.prices[order.instrument],
            "slNo": int(order.order_id[-8:]),
            "orderNumStatus": f"{order.order_id}:{status}",
            "orderTag": f"1:{order.tag}" if order.tag else "2:Untagged",
            "takeProfit": 0,
            "stopLoss": 0,
        }

    def _trade_row(self, order: engine.SimOrder, fyers_id: str) -> dict:
        item = self.instruments[order.instrument]
        return {
            "clientId": fyers_id,
            "orderDateTime": _fyers_time(order.updated_at),
            "orderNumber": order.order_id,
            "exchangeOrderNo": f"1100000{order.order_id[-9:]}",
            "exchange": EXCHANGE_CODES[order.instrument.split(":")[0]],
            "side": 1 if order.side == engine.BUY else -1,
            "segment": CAPITAL_MARKET,
            "orderType": ORDER_TYPE_NUMBERS[order.order_type],
            "fyToken": item["fytoken"],
            "productType": order.product,
            "tradedQty": order.filled_quantity,
            "tradePrice": order.average_price,
            "tradeValue": order.filled_quantity * order.average_price,
            "tradeNumber": f"5{order.order_id[-9:]}",
            "row": int(order.order_id[-8:]),
            "symbol": order.instrument,
            "orderTag": f"1:{order.tag}" if order.tag else "2:Untagged",
        }

    def _position_row(self, account: engine.SimAccount, position: engine.SimPosition) -> dict:
        item = self.instruments[position.instrument]
        filled = [
            o
            for o in account.orders.values()
            if o.instrument == position.instrument
            and o.product == position.product
            and o.filled_quantity > 0
        ]
        buys = [o for o in filled if o.side == engine.BUY]
        sells = [o for o in filled if o.side == engine.SELL]
        buy_qty = sum((o.filled_quantity for o in buys), Decimal(0))
        sell_qty = sum((o.filled_quantity for o in sells), Decimal(0))
        buy_val = sum((o.filled_quantity * o.average_price for o in buys), Decimal(0))
        sell_val = sum((o.filled_quantity * o.average_price for o in sells), Decimal(0))
        unrealised = self.exchange.unrealised(position)
        net = position.quantity
        return {
            "symbol": position.instrument,
            "id": f"{position.instrument}-{position.product}",
            "netQty": net,
            "qty": abs(net),
            "avgPrice": position.average_price,
            "netAvg": position.average_price,
            "side": 1 if net > 0 else (-1 if net < 0 else 0),
            "productType": position.product,
            "realized_profit": position.realised,
            "unrealized_profit": unrealised,
            "pl": position.realised + unrealised,
            "ltp": self.exchange.prices[position.instrument],
            "buyQty": buy_qty,
            "buyAvg": (buy_val / buy_qty) if buy_qty else Decimal(0),
            "buyVal": buy_val,
            "sellQty": sell_qty,
            "sellAvg": (sell_val / sell_qty) if sell_qty else Decimal(0),
            "sellVal": sell_val,
            "slNo": 0,
            "fyToken": item["fytoken"],
            "crossCurrency": "N",
            "rbiRefRate": 1,
            "qtyMulti_com": 1,
            "segment": CAPITAL_MARKET,
            "exchange": EXCHANGE_CODES[position.instrument.split(":")[0]],
            "cfBuyQty": 0,
            "cfSellQty": 0,
            "dayBuyQty": buy_qty,
            "daySellQty": sell_qty,
        }
