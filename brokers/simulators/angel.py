"""Angel One SmartAPI, simulated: written from Angel's docs and the smartapi-python SDK.

Served at the host root with Angel's paths. What it checks and answers, and the choices made where
the public material is silent:

- Every ``/rest/`` call needs Angel's headers: ``X-PrivateKey`` (a known api key, else AB1053),
  ``X-UserType: USER`` (else AB1005), ``X-SourceID: WEB``, ``X-ClientLocalIP``,
  ``X-ClientPublicIP``, ``X-MACAddress`` and ``Accept: application/json``; POSTs also need a JSON
  ``Content-type``. A missing or wrong one gets a business envelope with HTTP 400.
- ``/rest/secure/`` calls need ``Authorization: Bearer <jwtToken>``. Token failures come from
  Angel's gateway in its own casing, ``{"success":false,"message":..,"errorCode":..,"data":""}``:
  AG8003 missing, AG8001 unknown or revoked, AG8002 expired. Their HTTP status is not documented;
  users report HTTP 200 (two independent public reports), so that is what we send.
- Business errors are ``{"status":false,"message":..,"errorcode":..,"data":null}`` with HTTP 200,
  as observed for e.g. AB1050 "Invalid totp".
- Login checks the MPIN and a standard 30-second, 6-digit TOTP (computed here by hand from
  RFC 6238, not with the library the adapter uses), accepting one step either side for clock
  skew. jwtTokens are JWT-shaped and carry ``exp``: Angel's staff say a fresh token lives 24-28
  hours; the seed's ``session_seconds`` (default 24 h) sets it.
- generateTokens takes ``refreshToken`` (the SDK also sends the current jwt as Bearer; it is not
  required here, since the point of refreshing is that the jwt may be dying). It returns a new
  jwt, feed token and refresh token, each valid ``session_seconds`` from now; older refresh tokens
  stay usable until their own expiry (the SDK keeps using the first one).
- GETs tolerate the SDK's habit of sending JSON as the raw query string (``getOrderBook?%7B%7D``).
- Orders: all values arrive as strings; ``symboltoken`` must match ``tradingsymbol`` and
  ``exchange`` in the scrip master (else AB1009); stop orders need variety STOPLOSS (else AB1008);
  ``ordertag`` must be under 20 characters. An order beyond funds is accepted and shows up in the
  order book as ``rejected`` with Angel's reason in ``text``, as Angel's RMS does. Modify or
  cancel of an order that is no longer open answers AB2000 with the reason.
- The scrip master is served at Angel's path ``/OpenAPI_File/files/OpenAPIScripMaster.json``,
  rows in Angel's string formats (``tick_size`` in paise, ``strike`` times 100).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
import time
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from . import engine
from .base import IST, Request, Response, Simulator, route

SECURE = "/rest/secure/angelbroking"
AUTH = "/rest/auth/angelbroking"

ORDER_TYPES = {
    "MARKET": engine.MARKET,
    "LIMIT": engine.LIMIT,
    "STOPLOSS_LIMIT": engine.STOP_LIMIT,
    "STOPLOSS_MARKET": engine.STOP,
}
ORDER_TYPE_NAMES = {value: key for key, value in ORDER_TYPES.items()}
VARIETIES = {"NORMAL", "STOPLOSS", "AMO", "ROBO"}
PRODUCTS = {"DELIVERY", "CARRYFORWARD", "MARGIN", "INTRADAY", "BO"}
DURATIONS = {"DAY", "IOC"}
STATUS_WORDS = {
    engine.OPEN: "open",
    engine.TRIGGER_PENDING: "trigger pending",
    engine.FILLED: "complete",
    engine.CANCELLED: "cancelled",
    engine.REJECTED: "rejected",
}
REQUIRED_HEADERS = ("x-clientlocalip", "x-clientpublicip", "x-macaddress")


class AngelSimulator(Simulator):
    """Angel One SmartAPI on loopback: MPIN + TOTP login, orders, books, quotes, scrip master."""

    name = "angel"
    default_seed: dict = {
        "apps": [{"api_key": "angelsimkey01"}],
        "session_seconds": 86400,
        "users": [
            {
                "client_code": "S1234567",
                "name": "Sim Trader",
                "mpin": "4321",
                "totp_secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                "funds": "1000000.00",
                "holdings": [
                    {"exchange": "NSE", "symbol": "SBIN-EQ", "quantity": "10", "price": "600.50"}
                ],
            }
        ],
        "instruments": [
            {
                "token": "3045",
                "symbol": "SBIN-EQ",
                "name": "SBIN",
                "exch_seg": "NSE",
                "lotsize": "1",
                "tick_size": "5.000000",
                "price": "812.35",
            },
            {
                "token": "1594",
                "symbol": "INFY-EQ",
                "name": "INFY",
                "exch_seg": "NSE",
                "lotsize": "1",
                "tick_size": "5.000000",
                "price": "1500",
            },
            {
                "token": "2885",
                "symbol": "RELIANCE-EQ",
                "name": "RELIANCE",
                "exch_seg": "NSE",
                "lotsize": "1",
                "tick_size": "5.000000",
                "price": "2900.10",
            },
            # A listed option with no market here: shows the master's strike and expiry formats.
            {
                "token": "58784",
                "symbol": "NIFTY28OCT2524400CE",
                "name": "NIFTY",
                "exch_seg": "NFO",
                "expiry": "28OCT2025",
                "strike": "2440000.000000",
                "lotsize": "75",
                "instrumenttype": "OPTIDX",
                "tick_size": "5.000000",
            },
        ],
    }

    # State -----------------------------------------------------------------------------------

    def load_seed(self, seed: dict) -> None:
        self.signing_key = secrets.token_bytes(32)
        self.session_seconds = int(seed.get("session_seconds", 86400))
        self.api_keys = {app["api_key"] for app in seed.get("apps", [])}
        self.users = {user["client_code"]: user for user in seed.get("users", [])}
        self.instruments = [self._master_row(row) for row in seed.get("instruments", [])]
        self.by_token = {(row["exch_seg"], row["token"]): row for row in self.instruments}
        self.exchange = engine.Exchange(
            prices={
                self._key(row["exch_seg"], row["symbol"]): Decimal(row["price"])
                for row in seed.get("instruments", [])
                if row.get("price")
            }
        )
        for user in self.users.values():
            account = self.exchange.open_account(user["client_code"], Decimal(user["funds"]))
            for holding in user.get("holdings", []):
                key = self._key(holding["exchange"], holding["symbol"])
                account.holdings[key] = (Decimal(holding["quantity"]), Decimal(holding["price"]))
        self.sessions: dict[str, dict] = {}  # jwtToken -> client_code, api_key, expires_at
        self.refresh_tokens: dict[str, dict] = {}
        self.master_downloads = 0

    def expire_sessions(self) -> None:
        for session in (*self.sessions.values(), *self.refresh_tokens.values()):
            session["expires_at"] = 0.0

    def set_prices(self, prices: dict[str, Decimal]) -> None:
        for key, price in prices.items():
            self.exchange.set_price(key, price)

    # Error bodies ------------------------------------------------------------------------------

    def rate_limited_response(self, retry_after: int) -> Response:
        body = _error("Access denied because of exceeding access rate", "")
        return Response(429, body, {"Retry-After": str(retry_after)})

    def server_error_response(self, status: int) -> Response:
        return Response(status, _error("Something Went Wrong, Please Try After Sometime", "AB1004"))

    def not_found_response(self, request: Request) -> Response:
        return Response(404, _error(f"No such resource: {request.method} {request.path}", ""))

    # Authentication ----------------------------------------------------------------------------

    @route("POST", f"{AUTH}/user/v1/loginByPassword")
    def login(self, request: Request) -> Response:
        refused = self._check_headers(request)
        if refused:
            return refused
        body = request.json()
        with self.lock:
            user = self.users.get(str(body.get("clientcode", "")))
            if user is None or not hmac.compare_digest(str(body.get("password", "")), user["mpin"]):
                return Response(200, _error("Invalid Client Code or MPIN", "AB1000"))
            if not _totp_matches(user["totp_secret"], str(body.get("totp", ""))):
                return Response(200, _error("Invalid totp", "AB1050"))
            tokens = self._issue(user["client_code"], request.header("x-privatekey"))
        return Response(200, _ok(tokens))

    @route("POST", f"{AUTH}/jwt/v1/generateTokens")
    def generate_tokens(self, request: Request) -> Response:
        refused = self._check_headers(request)
        if refused:
            return refused
        refresh_token = str(request.json().get("refreshToken", ""))
        with self.lock:
            grant = self.refresh_tokens.get(refresh_token)
            if grant is None or grant["api_key"] != request.header("x-privatekey"):
                return Response(200, _error("Invalid Refresh Token", "AB8050"))
            if grant["expires_at"] <= time.time():
                return Response(200, _error("Refresh Token Expired", "AB8051"))
            tokens = self._issue(grant["client_code"], grant["api_key"])
        return Response(200, _ok(tokens))

    @route("GET", f"{SECURE}/user/v1/getProfile")
    def profile(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        user = self.users[client_code]
        return Response(
            200,
            _ok(
                {
                    "clientcode": client_code,
                    "name": user.get("name", ""),
                    "email": "",
                    "mobileno": "",
                    "exchanges": ["nse_cm", "bse_cm", "nse_fo"],
                    "products": ["MARGIN", "MIS", "NRML", "CNC", "CO", "BO"],
                    "lastlogintime": "",
                    "broker": "",
                }
            ),
        )

    @route("POST", f"{SECURE}/user/v1/logout")
    def logout(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        token = _bearer(request)
        with self.lock:
            self.sessions.pop(token, None)
            for key in [k for k, v in self.refresh_tokens.items() if v.get("jwt") == token]:
                del self.refresh_tokens[key]
        return Response(200, _ok(""))

    # Orders ------------------------------------------------------------------------------------

    @route("POST", f"{SECURE}/order/v1/placeOrder")
    def place_order(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        body = request.json()
        with self.lock:
            problem = self._validate_order(body)
            if problem:
                return problem
            instrument = self._key(body["exchange"], body["tradingsymbol"])
            order_type = ORDER_TYPES[body["ordertype"]]
            try:
                order = self.exchange.place(
                    client_code,
                    instrument=instrument,
                    side=body["transactiontype"],
                    quantity=Decimal(body["quantity"]),
                    order_type=order_type,
                    price=_positive(body.get("price")) if order_type in _PRICED else None,
                    trigger_price=_positive(body.get("triggerprice"))
                    if order_type in _TRIGGERED
                    else None,
                    product=body["producttype"],
                    tag=body.get("ordertag", ""),
                    extra={
                        "variety": body["variety"],
                        "duration": body.get("duration", "DAY"),
                        "symboltoken": body["symboltoken"],
                        "uniqueorderid": self._unique_order_id(),
                    },
                )
            except engine.EngineError as exc:
                return Response(200, _error(exc.message, "AB2000"))
            self._after_change(order)
            unique_id = order.extra["uniqueorderid"]
            self.record_order(
                client_tag=body.get("ordertag", ""),
                broker_order_id=unique_id,
                orderid=order.order_id,
                body=body,
            )
        self.hang_if_asked()
        return Response(
            200,
            _ok(
                {
                    "script": body["tradingsymbol"],
                    "orderid": order.order_id,
                    "uniqueorderid": unique_id,
                }
            ),
        )

    @route("POST", f"{SECURE}/order/v1/modifyOrder")
    def modify_order(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        body = request.json()
        with self.lock:
            order = self.exchange.accounts[client_code].orders.get(str(body.get("orderid", "")))
            if order is None:
                return Response(200, _error("Order not found", "AB1013"))
            problem = self._validate_order(body, modifying=order)
            if problem:
                return problem
            order_type = ORDER_TYPES[body["ordertype"]]
            try:
                self.exchange.modify(
                    client_code,
                    order.order_id,
                    quantity=Decimal(body["quantity"]),
                    price=_positive(body.get("price")) if order_type in _PRICED else None,
                    trigger_price=_positive(body.get("triggerprice"))
                    if order_type in _TRIGGERED
                    else None,
                    order_type=order_type,
                )
            except engine.EngineError as exc:
                return Response(200, _error(_refusal(exc), "AB2000"))
            order.extra["duration"] = body.get("duration", order.extra["duration"])
            self._after_change(order)
        return Response(
            200, _ok({"orderid": order.order_id, "uniqueorderid": order.extra["uniqueorderid"]})
        )

    @route("POST", f"{SECURE}/order/v1/cancelOrder")
    def cancel_order(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        body = request.json()
        with self.lock:
            order = self.exchange.accounts[client_code].orders.get(str(body.get("orderid", "")))
            if order is None:
                return Response(200, _error("Order not found", "AB1013"))
            if body.get("variety") != order.extra["variety"]:
                return Response(200, _error("Invalid Order Variety", "AB1008"))
            try:
                self.exchange.cancel(client_code, order.order_id)
            except engine.EngineError as exc:
                return Response(200, _error(_refusal(exc), "AB2000"))
        return Response(
            200, _ok({"orderid": order.order_id, "uniqueorderid": order.extra["uniqueorderid"]})
        )

    @route("GET", f"{SECURE}/order/v1/getOrderBook")
    def order_book(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        with self.lock:
            orders = list(self.exchange.accounts[client_code].orders.values())
            rows = [self._order_row(order) for order in orders]
        # Angel answers an empty book with data null, not [].
        return Response(200, _ok(rows or None))

    @route("GET", f"{SECURE}/order/v1/details/{{unique_order_id}}")
    def order_details(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        wanted = request.params["unique_order_id"]
        with self.lock:
            for order in self.exchange.accounts[client_code].orders.values():
                if order.extra["uniqueorderid"] == wanted:
                    return Response(200, _ok(self._order_row(order)))
        return Response(200, _error("Order not found", "AB1013"))

    @route("GET", f"{SECURE}/order/v1/getTradeBook")
    def trade_book(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        with self.lock:
            rows = [
                self._trade_row(order)
                for order in self.exchange.accounts[client_code].orders.values()
                if order.filled_quantity > 0
            ]
        return Response(200, _ok(rows or None))

    # Portfolio, funds, market data ---------------------------------------------------------------

    @route("GET", f"{SECURE}/order/v1/getPosition")
    def positions(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        with self.lock:
            account = self.exchange.accounts[client_code]
            rows = [self._position_row(account, p) for p in account.positions.values()]
        return Response(200, _ok(rows or None))

    @route("GET", f"{SECURE}/portfolio/v1/getHolding")
    def holdings(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        with self.lock:
            account = self.exchange.accounts[client_code]
            rows = [
                self._holding_row(instrument, quantity, average)
                for instrument, (quantity, average) in account.holdings.items()
            ]
        return Response(200, _ok(rows))

    @route("GET", f"{SECURE}/user/v1/getRMS")
    def rms(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        with self.lock:
            account = self.exchange.accounts[client_code]
            blocked = account.blocked_margin(self.exchange.prices)
            unrealised = sum(
                (self.exchange.unrealised(p) for p in account.positions.values()), Decimal(0)
            )
            realised = sum((p.realised for p in account.positions.values()), Decimal(0))
            data = {
                "net": _money(account.cash - blocked),
                "availablecash": _money(account.cash),
                "availableintradaypayin": "0.0000",
                "availablelimitmargin": "0.0000",
                "collateral": "0.0000",
                "m2munrealized": _money(unrealised),
                "m2mrealized": _money(realised),
                "utiliseddebits": _money(blocked),
                "utilisedspan": "0.0000",
                "utilisedoptionpremium": "0.0000",
                "utilisedholdingsales": "0.0000",
                "utilisedexposure": "0.0000",
                "utilisedturnover": "0.0000",
                "utilisedpayout": "0.0000",
            }
        return Response(200, _ok(data))

    @route("POST", f"{SECURE}/market/v1/quote")
    def quote(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        body = request.json()
        mode = body.get("mode")
        if mode not in ("LTP", "OHLC", "FULL"):
            return Response(200, _error("Invalid mode", "AB2000"))
        fetched, unfetched = [], []
        with self.lock:
            for exchange, tokens in (body.get("exchangeTokens") or {}).items():
                for token in tokens:
                    row = self.by_token.get((exchange, str(token)))
                    key = row and self._key(exchange, row["symbol"])
                    if not row or key not in self.exchange.prices:
                        unfetched.append(
                            {
                                "exchange": exchange,
                                "symbolToken": str(token),
                                "message": "Symbol not found",
                                "errorCode": "AB1009",
                            }
                        )
                        continue
                    fetched.append(self._quote_row(row, self.exchange.prices[key], mode))
        return Response(200, _ok({"fetched": fetched, "unfetched": unfetched}))

    @route("POST", f"{SECURE}/order/v1/getLtpData")
    def ltp_data(self, request: Request) -> Response:
        client_code, refused = self._authenticate(request)
        if refused:
            return refused
        body = request.json()
        with self.lock:
            row = self.by_token.get((body.get("exchange"), str(body.get("symboltoken"))))
            if row is None or row["symbol"] != body.get("tradingsymbol"):
                return Response(200, _error("Symbol Not Found", "AB1009"))
            last = self.exchange.prices.get(self._key(row["exch_seg"], row["symbol"]))
            if last is None:
                return Response(200, _error("Symbol Not Found", "AB1009"))
            return Response(
                200,
                _ok(
                    {
                        "exchange": row["exch_seg"],
                        "tradingsymbol": row["symbol"],
                        "symboltoken": row["token"],
                        "open": last,
                        "high": last,
                        "low": last,
                        "close": last,
                        "ltp": last,
                    }
                ),
            )

    @route("GET", "/OpenAPI_File/files/OpenAPIScripMaster.json")
    def scrip_master(self, request: Request) -> Response:
        with self.lock:
            self.master_downloads += 1
            return Response(200, list(self.instruments))

    # Helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _key(exchange: str, trading_symbol: str) -> str:
        return f"{exchange}:{trading_symbol}"

    @staticmethod
    def _master_row(row: dict) -> dict:
        return {
            "token": row["token"],
            "symbol": row["symbol"],
            "name": row.get("name", ""),
            "expiry": row.get("expiry", ""),
            "strike": row.get("strike", "-1.000000"),
            "lotsize": row.get("lotsize", "1"),
            "instrumenttype": row.get("instrumenttype", ""),
            "exch_seg": row["exch_seg"],
            "tick_size": row.get("tick_size", "5.000000"),
        }

    def _issue(self, client_code: str, api_key: str) -> dict:
        now = time.time()
        expires_at = now + self.session_seconds
        jwt = self._jwt(
            {
                "username": client_code,
                "roles": 0,
                "usertype": "USER",
                "token": secrets.token_urlsafe(24),
                "iat": int(now),
                "exp": int(expires_at),
            }
        )
        refresh_token = self._jwt(
            {"token": "REFRESH-TOKEN", "RESET": secrets.token_urlsafe(24), "iat": int(now)}
        )
        grant = {"client_code": client_code, "api_key": api_key, "expires_at": expires_at}
        self.sessions[jwt] = dict(grant)
        self.refresh_tokens[refresh_token] = {**grant, "jwt": jwt}
        return {
            "jwtToken": jwt,
            "refreshToken": refresh_token,
            "feedToken": secrets.token_urlsafe(32),
        }

    def _unique_order_id(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def _jwt(self, claims: dict) -> str:
        header = _b64(json.dumps({"alg": "HS512"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = hmac.new(self.signing_key, f"{header}.{payload}".encode(), "sha512").digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def _check_headers(self, request: Request) -> Response | None:
        """Angel's mandatory request headers; None when they are all there."""
        if request.header("x-privatekey") not in self.api_keys:
            return Response(400, _error("Invalid API Key", "AB1053"))
        if request.header("x-usertype") != "USER":
            return Response(400, _error("User Type Must Be USER", "AB1005"))
        if request.header("x-sourceid") != "WEB":
            return Response(400, _error("Invalid Source ID: X-SourceID must be WEB", "AB2000"))
        for name in REQUIRED_HEADERS:
            if not request.header(name):
                return Response(400, _error(f"Missing header {name}", "AB2000"))
        if "application/json" not in request.header("accept"):
            return Response(400, _error("Accept must be application/json", "AB2000"))
        if request.method == "POST" and "json" not in request.header("content-type"):
            return Response(400, _error("Content-type must be application/json", "AB2000"))
        return None

    def _authenticate(self, request: Request) -> tuple[str, Response | None]:
        """(client_code, None) for a good Bearer token, else ("", the gateway's answer)."""
        refused = self._check_headers(request)
        if refused:
            return "", refused
        if not request.header("authorization"):
            return "", Response(200, _gateway_error("Token missing", "AG8003"))
        token = _bearer(request)
        with self.lock:
            session = self.sessions.get(token)
            if session is None or session["api_key"] != request.header("x-privatekey"):
                return "", Response(200, _gateway_error("Invalid Token", "AG8001"))
            if session["expires_at"] <= time.time():
                return "", Response(200, _gateway_error("Token Expired", "AG8002"))
            return session["client_code"], None

    def _validate_order(self, body: dict, modifying: engine.SimOrder | None = None):
        """Angel's checks on place/modify fields; None when the order is well formed."""
        fields = (
            "variety",
            "tradingsymbol",
            "symboltoken",
            "exchange",
            "ordertype",
            "producttype",
            "duration",
            "quantity",
        )
        if modifying is None:
            fields += ("transactiontype",)
        for name in fields:
            if not isinstance(body.get(name), str) or not body[name]:
                return Response(200, _error(f"Invalid {name}", "AB2000"))
        for name in ("price", "triggerprice", "squareoff", "stoploss"):
            if name in body and not isinstance(body[name], str):
                return Response(200, _error(f"Invalid {name}: send a string", "AB2000"))
        if body["variety"] not in VARIETIES:
            return Response(200, _error("Invalid Order Variety", "AB1008"))
        if body["producttype"] not in PRODUCTS:
            return Response(200, _error("Invalid Product Type", "AB1012"))
        if body["ordertype"] not in ORDER_TYPES:
            return Response(200, _error("Invalid Order Type", "AB2000"))
        if (ORDER_TYPES[body["ordertype"]] in _TRIGGERED) != (body["variety"] == "STOPLOSS"):
            return Response(200, _error("Invalid Order Variety", "AB1008"))
        if body["duration"] not in DURATIONS:
            return Response(200, _error("Invalid Duration", "AB2000"))
        if modifying is None and body["transactiontype"] not in (engine.BUY, engine.SELL):
            return Response(200, _error("Invalid Transaction Type", "AB2000"))
        if len(body.get("ordertag", "")) >= 20:
            return Response(200, _error("Ordertag must be less than 20 characters", "AB2000"))
        try:
            if Decimal(body["quantity"]) <= 0 or any(
                Decimal(body.get(name) or "0") < 0 for name in ("price", "triggerprice")
            ):
                raise InvalidOperation
        except InvalidOperation:
            return Response(200, _error("Invalid quantity or price", "AB2000"))
        row = self.by_token.get((body["exchange"], body["symboltoken"]))
        if row is None or row["symbol"] != body["tradingsymbol"]:
            return Response(200, _error("Symbol Not Found", "AB1009"))
        if self._key(body["exchange"], body["tradingsymbol"]) not in self.exchange.prices:
            return Response(200, _error("Symbol Not Found", "AB1009"))
        if modifying is not None and (
            self._key(body["exchange"], body["tradingsymbol"]) != modifying.instrument
            or body["variety"] != modifying.extra["variety"]
        ):
            return Response(200, _error("Order details do not match the order", "AB2000"))
        return None

    def _after_change(self, order: engine.SimOrder) -> None:
        """IOC orders that found no fill at once are cancelled, as the exchange does."""
        if order.extra["duration"] == "IOC" and order.status not in engine.FINAL:
            self.exchange.cancel(order.account_id, order.order_id)

    def _order_row(self, order: engine.SimOrder) -> dict:
        exchange, trading_symbol = order.instrument.split(":", 1)
        status = STATUS_WORDS[order.status]
        text = ""
        if order.status == engine.REJECTED:
            required = order.quantity * (order.price or self.exchange.prices[order.instrument])
            available = self.exchange.accounts[order.account_id].available(self.exchange.prices)
            text = (
                "Your order has been rejected due to Insufficient Funds. "
                f"Available funds - Rs. {_money(available)} . "
                f"You require Rs. {_money(required)} funds to execute this order."
            )
        updated = datetime.fromtimestamp(order.updated_at, IST).strftime("%d-%b-%Y %H:%M:%S")
        return {
            "variety": order.extra["variety"],
            "ordertype": ORDER_TYPE_NAMES[order.order_type],
            "producttype": order.product,
            "duration": order.extra["duration"],
            "price": order.price or Decimal("0.0"),
            "triggerprice": order.trigger_price or Decimal("0.0"),
            "quantity": str(order.quantity),
            "disclosedquantity": "0",
            "squareoff": Decimal("0.0"),
            "stoploss": Decimal("0.0"),
            "trailingstoploss": Decimal("0.0"),
            "tradingsymbol": trading_symbol,
            "transactiontype": order.side,
            "exchange": exchange,
            "symboltoken": order.extra["symboltoken"],
            "ordertag": order.tag,
            "instrumenttype": "",
            "strikeprice": Decimal("-1.0"),
            "optiontype": "",
            "expirydate": "",
            "lotsize": "1",
            "cancelsize": str(order.pending_quantity if order.status == engine.CANCELLED else 0),
            "averageprice": order.average_price,
            "filledshares": str(order.filled_quantity),
            "unfilledshares": str(order.pending_quantity),
            "orderid": order.order_id,
            "text": text,
            "status": status,
            "orderstatus": status,
            "updatetime": updated,
            "exchtime": updated if order.status != engine.REJECTED else "",
            "exchorderupdatetime": updated if order.status != engine.REJECTED else "",
            "fillid": _fill_id(order) if order.filled_quantity else "",
            "filltime": _fill_time(order) if order.filled_quantity else "",
            "parentorderid": "",
            "uniqueorderid": order.extra["uniqueorderid"],
        }

    def _trade_row(self, order: engine.SimOrder) -> dict:
        exchange, trading_symbol = order.instrument.split(":", 1)
        return {
            "exchange": exchange,
            "producttype": order.product,
            "tradingsymbol": trading_symbol,
            "instrumenttype": "",
            "symbolgroup": "EQ",
            "strikeprice": "-1",
            "optiontype": "",
            "expirydate": "",
            "marketlot": "1",
            "precision": "2",
            "multiplier": "-1",
            "tradevalue": _money(order.filled_quantity * order.average_price, places="0.01"),
            "transactiontype": order.side,
            "fillprice": _money(order.average_price, places="0.01"),
            "fillsize": str(order.filled_quantity),
            "orderid": order.order_id,
            "fillid": _fill_id(order),
            "filltime": _fill_time(order),
        }

    def _position_row(self, account: engine.SimAccount, position: engine.SimPosition) -> dict:
        exchange, trading_symbol = position.instrument.split(":", 1)
        row = self._row_for(exchange, trading_symbol)
        fills = [
            o
            for o in account.orders.values()
            if o.instrument == position.instrument
            and o.product == position.product
            and o.filled_quantity > 0
        ]
        bought = [o for o in fills if o.side == engine.BUY]
        sold = [o for o in fills if o.side == engine.SELL]
        buy_qty = sum((o.filled_quantity for o in bought), Decimal(0))
        sell_qty = sum((o.filled_quantity for o in sold), Decimal(0))
        buy_amount = sum((o.filled_quantity * o.average_price for o in bought), Decimal(0))
        sell_amount = sum((o.filled_quantity * o.average_price for o in sold), Decimal(0))
        last = self.exchange.prices[position.instrument]
        unrealised = self.exchange.unrealised(position)
        return {
            "exchange": exchange,
            "symboltoken": row["token"],
            "producttype": position.product,
            "tradingsymbol": trading_symbol,
            "symbolname": row["name"],
            "instrumenttype": "",
            "priceden": "1.00",
            "pricenum": "1.00",
            "genden": "1.00",
            "gennum": "1.00",
            "precision": "2",
            "multiplier": "-1",
            "boardlotsize": "1",
            "buyqty": str(buy_qty),
            "sellqty": str(sell_qty),
            "buyamount": _money(buy_amount, places="0.01"),
            "sellamount": _money(sell_amount, places="0.01"),
            "symbolgroup": "EQ",
            "strikeprice": "-1",
            "optiontype": "",
            "expirydate": "",
            "lotsize": "1",
            "cfbuyqty": "0",
            "cfsellqty": "0",
            "cfbuyamount": "0.00",
            "cfsellamount": "0.00",
            "buyavgprice": _money(buy_amount / buy_qty if buy_qty else 0, places="0.01"),
            "sellavgprice": _money(sell_amount / sell_qty if sell_qty else 0, places="0.01"),
            "avgnetprice": _money(position.average_price, places="0.01"),
            "netvalue": _money(sell_amount - buy_amount, places="0.01"),
            "netqty": str(position.quantity),
            "totalbuyvalue": _money(buy_amount, places="0.01"),
            "totalsellvalue": _money(sell_amount, places="0.01"),
            "netprice": _money(position.average_price, places="0.01"),
            "ltp": _money(last, places="0.01"),
            "close": _money(last, places="0.01"),
            "realised": _money(position.realised, places="0.01"),
            "unrealised": _money(unrealised, places="0.01"),
            "pnl": _money(position.realised + unrealised, places="0.01"),
        }

    def _holding_row(self, instrument: str, quantity: Decimal, average: Decimal) -> dict:
        exchange, trading_symbol = instrument.split(":", 1)
        row = self._row_for(exchange, trading_symbol)
        last = self.exchange.prices[instrument]
        pnl = (last - average) * quantity
        return {
            "tradingsymbol": trading_symbol,
            "exchange": exchange,
            "isin": "INE000000000",
            "t1quantity": 0,
            "realisedquantity": int(quantity),
            "quantity": int(quantity),
            "authorisedquantity": 0,
            "product": "DELIVERY",
            "collateralquantity": None,
            "collateraltype": None,
            "haircut": Decimal("0.0"),
            "averageprice": average,
            "ltp": last,
            "symboltoken": row["token"],
            "close": last,
            "profitandloss": pnl,
            "pnlpercentage": (pnl * 100 / (average * quantity)).quantize(Decimal("0.01"))
            if average and quantity
            else Decimal("0.0"),
        }

    def _quote_row(self, row: dict, last: Decimal, mode: str) -> dict:
        quote: dict[str, Any] = {
            "exchange": row["exch_seg"],
            "tradingSymbol": row["symbol"],
            "symbolToken": row["token"],
            "ltp": last,
        }
        if mode in ("OHLC", "FULL"):
            quote.update({"open": last, "high": last, "low": last, "close": last})
        if mode == "FULL":
            tick = Decimal(row["tick_size"]) / 100
            now = datetime.now(IST).strftime("%d-%b-%Y %H:%M:%S")
            quote.update(
                {
                    "lastTradeQty": 1,
                    "exchFeedTime": now,
                    "exchTradeTime": now,
                    "netChange": Decimal("0.0"),
                    "percentChange": Decimal("0.0"),
                    "avgPrice": last,
                    "tradeVolume": 100000,
                    "opnInterest": 0,
                    "lowerCircuit": (last * Decimal("0.8")).quantize(Decimal("0.01")),
                    "upperCircuit": (last * Decimal("1.2")).quantize(Decimal("0.01")),
                    "totBuyQuan": 1000,
                    "totSellQuan": 1000,
                    "52WeekLow": last,
                    "52WeekHigh": last,
                    "depth": {
                        "buy": [{"price": last - tick, "quantity": 500, "orders": 5}],
                        "sell": [{"price": last + tick, "quantity": 500, "orders": 5}],
                    },
                }
            )
        return quote

    def _row_for(self, exchange: str, trading_symbol: str) -> dict:
        for row in self.instruments:
            if row["exch_seg"] == exchange and row["symbol"] == trading_symbol:
                return row
        raise KeyError(trading_symbol)


_PRICED = frozenset({engine.LIMIT, engine.STOP_LIMIT})
_TRIGGERED = frozenset({engine.STOP, engine.STOP_LIMIT})


def _ok(data: Any) -> dict:
    return {"status": True, "message": "SUCCESS", "errorcode": "", "data": data}


def _error(message: str, code: str) -> dict:
    return {"status": False, "message": message, "errorcode": code, "data": None}


def _gateway_error(message: str, code: str) -> dict:
    """The API gateway's envelope: ``success`` and ``errorCode``, unlike the business one."""
    return {"success": False, "message": message, "errorCode": code, "data": ""}


def _bearer(request: Request) -> str:
    scheme, _, token = request.header("authorization").partition(" ")
    return token.strip() if scheme == "Bearer" else ""


def _positive(value: Any) -> Decimal | None:
    parsed = Decimal(str(value)) if value not in (None, "") else Decimal(0)
    return parsed if parsed > 0 else None


def _money(value: Any, places: str = "0.0001") -> str:
    return str(Decimal(value).quantize(Decimal(places)))


def _refusal(exc: engine.EngineError) -> str:
    if exc.kind == "not_open":
        return f"{exc.message}: the order can no longer be modified or cancelled"
    return exc.message


def _fill_id(order: engine.SimOrder) -> str:
    # The engine fills an order in one trade, so one fill id per order is enough.
    return str(50_000_000 + int(order.order_id[-6:]))


def _fill_time(order: engine.SimOrder) -> str:
    # A filled order is final, so its last update is the fill.
    return datetime.fromtimestamp(order.updated_at, IST).strftime("%H:%M:%S")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _totp_matches(secret: str, code: str, *, now: float | None = None) -> bool:
    """RFC 6238 TOTP (HMAC-SHA1, 30 s, 6 digits), one step of skew allowed either side."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    step = int((now if now is not None else time.time()) // 30)
    for counter in (step - 1, step, step + 1):
        digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
        offset = digest[-1] & 0x0F
        value = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
        if hmac.compare_digest(f"{value:06d}", code):
            return True
    return False
