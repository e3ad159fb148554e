"""Match-Trader platform API simulator: manager login, refresh cookie and the /mtr-api/ routes.

Written from BROKERS.md and the public Match-Trader Platform API pages (app.theneo.io
/match-trade/platform-api), never from the adapter. What this simulator chose where the docs are
silent, each marked UNCONFIRMED:

- Error bodies. Trading operations answer ``{"status", "nativeCode", "errorMessage", "orderId"}``
  (status OK / REJECTED / PARTIAL_SUCCESS, as documented). HTTP-level errors (401, 400, 404, 429,
  5xx) use the same field names: ``{"status": "<CODE>", "errorMessage": "..."}``. The native codes
  (NOT_ENOUGH_MONEY, INSTRUMENT_NOT_FOUND, ...) are our own vocabulary.
- A wrong email/password/brokerId gets HTTP 401 ``{"status": "INVALID_CREDENTIALS", ...}``.
- The co-auth token is a JWT-shaped string whose payload carries ``exp`` (real deployments issue
  JWTs; the ~15 minute lifetime is UNCONFIRMED). The ``rt`` refresh cookie lives a day.
- ``comment`` on position/open and pending-order/create is stored and echoed on positions, active
  orders and history. Match-Trader's newer Trader API documents ``comment``; the platform API does
  not, so whether a real /mtr-api/ deployment keeps it is UNCONFIRMED.
- ``POST closed-orders`` ({from, to} -> {"orders": [...]}) is an order history the platform API
  does not document; a seed flag (``serve_order_history``) switches it off so that adapters can be
  tested against deployments without it.
- A position's id is the id of the order that opened it (the documented open-position answer
  gives only ``orderId``; the positions list gives ``id``).
- Hedging account: every fill opens its own position; position/close closes one position.
- Margin is volume * contractSize * price / leverage, all instruments are quoted in the account
  currency (USD), and unrealised P&L is valued at the mid price the engine fills at.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from . import engine
from .base import Request, Response, Simulator, route

TWO_PLACES = Decimal("0.01")

# Engine status -> the word this simulator's order history uses (UNCONFIRMED vocabulary).
HISTORY_STATUSES = {
    engine.FILLED: "FILLED",
    engine.CANCELLED: "CANCELLED",
    engine.REJECTED: "REJECTED",
}
PENDING_TYPES = {"LIMIT": engine.LIMIT, "STOP": engine.STOP}


class MatchTraderSimulator(Simulator):
    """Match-Trader's manager login and trading API for one white-label broker."""

    name = "matchtrade"
    default_seed = {
        "broker_id": "0",
        "token_ttl_seconds": 900,
        "refresh_ttl_seconds": 86400,
        "serve_co_login": True,
        "serve_order_history": True,
        "systems": [
            {
                "uuid": "5b1c3f0e-7d2a-4c55-9e1b-2f6a8d9c0a11",
                "name": "MTR Demo",
                "tradingApiDomain": "mtr-demo.example.com",
            }
        ],
        "users": [
            {
                "email": "trader@example.com",
                "password": "Sim-Pass-2024",
                "accounts": [
                    {
                        "tradingAccountId": "700100",
                        "uuid": "0a9e6f7c-1111-4d2e-9a51-7c3b2e1d0f01",
                        "tradingApiToken": "tat-700100-3f9c2b7e5d1a",
                        "system_uuid": "5b1c3f0e-7d2a-4c55-9e1b-2f6a8d9c0a11",
                        "offer_name": "Standard USD",
                        "currency": "USD",
                        "demo": True,
                        "balance": "100000",
                        "leverage": "100",
                    },
                    {
                        "tradingAccountId": "700101",
                        "uuid": "0a9e6f7c-2222-4d2e-9a51-7c3b2e1d0f02",
                        "tradingApiToken": "tat-700101-8a4d6c0b2e9f",
                        "system_uuid": "5b1c3f0e-7d2a-4c55-9e1b-2f6a8d9c0a11",
                        "offer_name": "Pro USD",
                        "currency": "USD",
                        "demo": True,
                        "balance": "5000",
                        "leverage": "100",
                    },
                ],
            }
        ],
        "instruments": [
            {
                "symbol": "EURUSD",
                "price": "1.08500",
                "spread": "0.00010",
                "contractSize": "100000",
                "pricePrecision": 5,
                "volumeMin": "0.01",
                "volumeMax": "100",
                "volumeStep": "0.01",
                "type": "FOREX",
                "description": "Euro vs US Dollar",
                "baseCurrency": "EUR",
                "quoteCurrency": "USD",
            },
            {
                "symbol": "GBPUSD",
                "price": "1.27000",
                "spread": "0.00014",
                "contractSize": "100000",
                "pricePrecision": 5,
                "volumeMin": "0.01",
                "volumeMax": "100",
                "volumeStep": "0.01",
                "type": "FOREX",
                "description": "Great Britain Pound vs US Dollar",
                "baseCurrency": "GBP",
                "quoteCurrency": "USD",
            },
            {
                "symbol": "XAUUSD",
                "price": "2350.00",
                "spread": "0.30",
                "contractSize": "100",
                "pricePrecision": 2,
                "volumeMin": "0.01",
                "volumeMax": "100",
                "volumeStep": "0.01",
                "type": "COMMODITY",
                "description": "Gold vs US Dollar",
                "baseCurrency": "XAU",
                "quoteCurrency": "USD",
            },
        ],
    }

    # State -----------------------------------------------------------------------------------

    def load_seed(self, seed: dict) -> None:
        self.broker_id = str(seed["broker_id"])
        self.token_ttl = int(seed.get("token_ttl_seconds", 900))
        self.refresh_ttl = int(seed.get("refresh_ttl_seconds", 86400))
        self.serve_co_login = bool(seed.get("serve_co_login", True))
        self.serve_order_history = bool(seed.get("serve_order_history", True))
        self.systems = {system["uuid"]: system for system in seed["systems"]}
        self.instruments = {spec["symbol"]: spec for spec in seed["instruments"]}
        #: Orders the engine filled since _book_fills last ran.
        self.unbooked_fills: list[engine.SimOrder] = []
        self.exchange = engine.Exchange(
            prices={symbol: Decimal(spec["price"]) for symbol, spec in self.instruments.items()},
            on_fill=self.unbooked_fills.append,
        )
        self.users: dict[str, dict] = {}
        self.accounts: dict[str, dict] = {}
        for user in seed["users"]:
            self.users[user["email"].lower()] = user
            for account in user["accounts"]:
                account_id = account["tradingAccountId"]
                self.accounts[account_id] = {
                    **account,
                    "email": user["email"].lower(),
                    "balance": Decimal(account["balance"]),
                    "leverage": Decimal(account["leverage"]),
                    "positions": {},  # position id -> open position
                    "closed": [],  # closed-position operations
                    # Sums over the open positions, kept as they open and close, so a margin
                    # check costs the same with 10 positions as with 10,000 (_exposure_change).
                    "exposure": {},  # symbol -> signed volume x contract size
                    "open_cost": {},  # symbol -> the same, times each open price
                    "notional": Decimal(0),  # volume x contract size x open price
                }
                # Engine quantities are lots; its cash check is only a backstop: the margin
                # check in _open_or_create is the platform's rule.
                self.exchange.open_account(
                    account_id, Decimal(account["balance"]), account["currency"]
                )
        self.sessions: dict[str, dict] = {}  # co-auth token -> {email, expires_at}
        self.refresh_tokens: dict[str, dict] = {}  # rt cookie -> {email, expires_at}

    def expire_sessions(self) -> None:
        self.sessions.clear()
        self.refresh_tokens.clear()

    def set_prices(self, prices: dict[str, Decimal]) -> None:
        with self.lock:
            for symbol, price in prices.items():
                self.exchange.set_price(symbol, price)
            self._book_fills()

    # Fault-injector bodies in the platform's envelope ---------------------------------------

    def rate_limited_response(self, retry_after: int) -> Response:
        body = {"status": "TOO_MANY_REQUESTS", "errorMessage": "Request limit exceeded"}
        return Response(429, body, {"Retry-After": str(retry_after)})

    def server_error_response(self, status: int) -> Response:
        return Response(status, {"status": "INTERNAL_ERROR", "errorMessage": "Internal error"})

    def not_found_response(self, request: Request) -> Response:
        return _error(404, "NOT_FOUND", f"No endpoint {request.method} {request.path}")

    # Manager: login and refresh --------------------------------------------------------------

    @route("POST", "/manager/co-login")
    def co_login(self, request: Request) -> Response:
        if not self.serve_co_login:
            return self.not_found_response(request)
        return self._login(request, accounts_key="accounts")

    @route("POST", "/manager/mtr-login")
    def mtr_login(self, request: Request) -> Response:
        return self._login(request, accounts_key="tradingAccounts")

    def _login(self, request: Request, *, accounts_key: str) -> Response:
        body = _json_body(request)
        if body is None or not all(body.get(k) for k in ("email", "password", "brokerId")):
            return _error(400, "BAD_REQUEST", "email, password and brokerId are required")
        with self.lock:
            user = self.users.get(str(body["email"]).lower())
            if (
                user is None
                or not secrets.compare_digest(str(body["password"]), user["password"])
                or str(body["brokerId"]) != self.broker_id
            ):
                return _error(401, "INVALID_CREDENTIALS", "Invalid email, password or broker")
            token = self._issue_session(user["email"].lower())
            refresh = secrets.token_urlsafe(32)
            self.refresh_tokens[refresh] = {
                "email": user["email"].lower(),
                "expires_at": time.time() + self.refresh_ttl,
            }
            accounts = [self._account_view(a) for a in user["accounts"]]
        headers = {
            "Set-Cookie": f"rt={refresh}; Path=/manager; Max-Age={self.refresh_ttl}; HttpOnly",
        }
        return Response(
            200, {"email": user["email"], "token": token, accounts_key: accounts}, headers
        )

    @route("POST", "/manager/refresh-token")
    def refresh_token(self, request: Request) -> Response:
        refresh = request.cookie("rt")
        with self.lock:
            entry = self.refresh_tokens.get(refresh or "")
            if entry is None or entry["expires_at"] < time.time():
                return _error(401, "UNAUTHORIZED", "Refresh token is missing or expired")
            token = self._issue_session(entry["email"])
        return Response(200, {"token": token})

    def _issue_session(self, email: str) -> str:
        issued = int(time.time())
        expires = issued + self.token_ttl
        token = _jwt_like({"sub": email, "iat": issued, "exp": expires})
        self.sessions[token] = {"email": email, "expires_at": expires}
        return token

    def _account_view(self, account: dict) -> dict:
        system = self.systems[account["system_uuid"]]
        return {
            "tradingAccountId": account["tradingAccountId"],
            "uuid": account["uuid"],
            "tradingApiToken": account["tradingApiToken"],
            "branchUuid": "b1",
            "created": "2024-01-02T10:00:00.000Z",
            "offer": {
                "uuid": f"offer-{account['tradingAccountId']}",
                "name": account["offer_name"],
                "currency": account["currency"],
                "demo": account["demo"],
                "system": {
                    "uuid": system["uuid"],
                    "name": system["name"],
                    "demo": account["demo"],
                    "active": True,
                    "tradingApiDomain": system["tradingApiDomain"],
                },
            },
        }

    # Trading: auth ---------------------------------------------------------------------------

    def _authorise(self, request: Request) -> tuple[dict | None, Response | None]:
        """The account behind the Auth-trading-api header, if the co-auth cookie is live."""
        system_uuid = request.params["system"]
        token = request.cookie("co-auth")
        session = self.sessions.get(token or "")
        if session is None or session["expires_at"] < time.time():
            return None, _error(401, "UNAUTHORIZED", "Session expired or missing co-auth cookie")
        api_token = request.header("auth-trading-api")
        for account in self.accounts.values():
            if (
                api_token
                and secrets.compare_digest(api_token, account["tradingApiToken"])
                and account["system_uuid"] == system_uuid
                and account["email"] == session["email"]
            ):
                return account, None
        return None, _error(401, "UNAUTHORIZED", "Invalid Auth-trading-api token")

    # Trading: reads --------------------------------------------------------------------------

    @route("GET", "/mtr-api/{system}/balance")
    def balance(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            profit = self._unrealised(account)
            margin = self._used_margin(account)
            equity = account["balance"] + profit
            free = equity - margin
            level = (equity / margin * 100).quantize(TWO_PLACES) if margin else None
            # Some fields as strings, some as numbers: the platform is known to mix them.
            body = {
                "balance": str(account["balance"].quantize(TWO_PLACES)),
                "equity": str(equity.quantize(TWO_PLACES)),
                "freeMargin": free.quantize(TWO_PLACES),
                "margin": str(margin.quantize(TWO_PLACES)),
                "marginLevel": level,
                "credit": "0.00",
                "profit": profit.quantize(TWO_PLACES),
                "netProfit": profit.quantize(TWO_PLACES),
                "currency": account["currency"],
            }
        return Response(200, body)

    @route("GET", "/mtr-api/{system}/open-positions")
    def open_positions(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            positions = [self._position_view(p) for p in account["positions"].values()]
        return Response(200, {"positions": positions})

    @route("GET", "/mtr-api/{system}/active-orders")
    def active_orders(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            orders = [
                self._active_order_view(order)
                for order in self._engine_orders(account)
                if order.status not in engine.FINAL
            ]
        return Response(200, {"orders": orders})

    @route("POST", "/mtr-api/{system}/closed-positions")
    def closed_positions(self, request: Request) -> Response:
        body = _json_body(request) or {}
        start, end = _time_range(body)
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            operations = [op for op in account["closed"] if start <= op["_closed_at"] <= end]
            operations = [
                {k: v for k, v in op.items() if not k.startswith("_")} for op in operations
            ]
        return Response(200, {"operations": operations})

    @route("POST", "/mtr-api/{system}/closed-orders")
    def closed_orders(self, request: Request) -> Response:
        if not self.serve_order_history:
            return self.not_found_response(request)
        body = _json_body(request) or {}
        start, end = _time_range(body)
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            orders = [
                self._history_order_view(order)
                for order in self._engine_orders(account)
                if order.status in engine.FINAL and start <= order.updated_at <= end
            ]
        return Response(200, {"orders": orders})

    @route("GET", "/mtr-api/{system}/quotations")
    def quotations(self, request: Request) -> Response:
        wanted = [s for s in (request.arg("symbols") or "").split(",") if s]
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            symbols = wanted or list(self.instruments)
            quotes = []
            for symbol in symbols:
                spec = self.instruments.get(symbol)
                if spec is None:
                    continue
                price = self.exchange.prices[symbol]
                half = Decimal(spec["spread"]) / 2
                quotes.append(
                    {
                        "symbol": symbol,
                        "bid": price - half,
                        "ask": price + half,
                        "timestamp": int(time.time() * 1000),
                    }
                )
        return Response(200, quotes)

    @route("GET", "/mtr-api/{system}/effective-instruments")
    def effective_instruments(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            instruments = [
                {
                    "symbol": spec["symbol"],
                    "alias": spec["symbol"],
                    "description": spec["description"],
                    "type": spec["type"],
                    "baseCurrency": spec["baseCurrency"],
                    "quoteCurrency": spec["quoteCurrency"],
                    "sessionOpen": True,
                    "volumeMin": Decimal(spec["volumeMin"]),
                    "volumeMax": Decimal(spec["volumeMax"]),
                    "volumeStep": Decimal(spec["volumeStep"]),
                    "pricePrecision": spec["pricePrecision"],
                    "contractSize": Decimal(spec["contractSize"]),
                    "leverage": account["leverage"],
                }
                for spec in self.instruments.values()
            ]
        return Response(200, {"instruments": instruments})

    # Trading: writes -------------------------------------------------------------------------

    @route("POST", "/mtr-api/{system}/position/open")
    def position_open(self, request: Request) -> Response:
        return self._open_or_create(request, pending=False)

    @route("POST", "/mtr-api/{system}/pending-order/create")
    def pending_order_create(self, request: Request) -> Response:
        return self._open_or_create(request, pending=True)

    def _open_or_create(self, request: Request, *, pending: bool) -> Response:
        body = _json_body(request)
        if body is None:
            return _error(400, "BAD_REQUEST", "Body must be JSON")
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            order_id = self.exchange.next_id()
            self.record_order(
                client_tag=str(body.get("comment") or ""),
                broker_order_id=order_id,
                account=account["tradingAccountId"],
                instrument=body.get("instrument"),
                side=body.get("orderSide"),
                volume=body.get("volume"),
                type=body.get("type", "MARKET"),
            )
            answer = self._execute(account, body, order_id, pending=pending)
        self.hang_if_asked()
        return answer

    def _execute(self, account: dict, body: dict, order_id: str, *, pending: bool) -> Response:
        symbol = body.get("instrument")
        side = body.get("orderSide")
        if side not in (engine.BUY, engine.SELL):
            return _error(400, "BAD_REQUEST", "orderSide must be BUY or SELL")
        spec = self.instruments.get(symbol)
        if spec is None:
            return _rejected("INSTRUMENT_NOT_FOUND", f"Instrument {symbol} not found")
        volume = _decimal(body.get("volume"))
        problem = _volume_problem(volume, spec)
        if problem:
            return _rejected("INVALID_VOLUME", problem)
        order_type, price, trigger = engine.MARKET, None, None
        if pending:
            order_type = PENDING_TYPES.get(body.get("type"))
            activation = _decimal(body.get("price"))
            if order_type is None:
                return _error(400, "BAD_REQUEST", "type must be LIMIT or STOP")
            if activation is None or activation <= 0:
                return _rejected("INVALID_PRICE", "Pending order price must be positive")
            price, trigger = (
                (activation, None) if order_type == engine.LIMIT else (None, activation)
            )
        reference = price or trigger or self.exchange.prices[symbol]
        required = volume * Decimal(spec["contractSize"]) * reference / account["leverage"]
        if required > self._free_margin(account):
            return _rejected("NOT_ENOUGH_MONEY", "Not enough money")
        try:
            order = self.exchange.place(
                account["tradingAccountId"],
                instrument=symbol,
                side=side,
                quantity=volume,
                order_type=order_type,
                price=price,
                trigger_price=trigger,
                tag=str(body.get("comment") or ""),
                order_id=order_id,
                extra={"slPrice": body.get("slPrice"), "tpPrice": body.get("tpPrice")},
            )
        except engine.EngineError as exc:
            return _rejected("INVALID_REQUEST", exc.message)
        if order.status == engine.REJECTED:
            return _rejected("NOT_ENOUGH_MONEY", order.message or "Not enough money")
        self._book_fills()
        return _ok(order.order_id)

    @route("POST", "/mtr-api/{system}/pending-order/edit")
    def pending_order_edit(self, request: Request) -> Response:
        body = _json_body(request)
        if body is None or not body.get("id"):
            return _error(400, "BAD_REQUEST", "id is required")
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            order, refused = self._pending_order(account, body)
            if refused:
                return refused
            volume = _decimal(body.get("volume"))
            new_price = _decimal(body.get("priceOrder"))
            if volume is not None:
                problem = _volume_problem(volume, self.instruments[order.instrument])
                if problem:
                    return _rejected("INVALID_VOLUME", problem)
            if new_price is not None and new_price <= 0:
                return _rejected("INVALID_PRICE", "Pending order price must be positive")
            is_limit = order.order_type == engine.LIMIT
            try:
                self.exchange.modify(
                    account["tradingAccountId"],
                    order.order_id,
                    quantity=volume,
                    price=new_price if is_limit else None,
                    trigger_price=None if is_limit else new_price,
                )
            except engine.EngineError as exc:
                return _rejected("INVALID_REQUEST", exc.message)
            order.extra.update({"slPrice": body.get("slPrice"), "tpPrice": body.get("tpPrice")})
            self._book_fills()
        return _ok(order.order_id)

    @route("POST", "/mtr-api/{system}/pending-order/cancel")
    def pending_order_cancel(self, request: Request) -> Response:
        body = _json_body(request)
        if body is None or not body.get("id"):
            return _error(400, "BAD_REQUEST", "id is required")
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            order, refused = self._pending_order(account, body)
            if refused:
                return refused
            self.exchange.cancel(account["tradingAccountId"], order.order_id)
        return _ok(order.order_id)

    def _pending_order(self, account: dict, body: dict):
        try:
            order = self.exchange.get(account["tradingAccountId"], str(body["id"]))
        except engine.EngineError:
            return None, _rejected("ORDER_NOT_FOUND", f"Order {body['id']} not found")
        if order.status in engine.FINAL or order.order_type not in (engine.LIMIT, engine.STOP):
            return None, _rejected("ORDER_NOT_ACTIVE", f"Order {order.order_id} is not active")
        if body.get("type") and PENDING_TYPES.get(body["type"]) != order.order_type:
            return None, _rejected("INVALID_ORDER_TYPE", "The order type cannot be changed")
        return order, None

    @route("POST", "/mtr-api/{system}/position/close")
    def position_close(self, request: Request) -> Response:
        body = _json_body(request)
        if body is None or not body.get("positionId"):
            return _error(400, "BAD_REQUEST", "positionId is required")
        with self.lock:
            account, denied = self._authorise(request)
            if denied:
                return denied
            position = account["positions"].get(str(body["positionId"]))
            if position is None:
                return _rejected("POSITION_NOT_FOUND", f"Position {body['positionId']} not found")
            volume = _decimal(body.get("volume")) or position["volume"]
            if volume <= 0 or volume > position["volume"]:
                return _rejected("INVALID_VOLUME", "Volume exceeds the position's volume")
            order_id = self.exchange.next_id()
            self.record_order(
                client_tag="",
                broker_order_id=order_id,
                account=account["tradingAccountId"],
                closes=position["id"],
                volume=volume,
            )
            closing_side = engine.SELL if position["side"] == engine.BUY else engine.BUY
            order = self.exchange.place(
                account["tradingAccountId"],
                instrument=position["symbol"],
                side=closing_side,
                quantity=volume,
                order_type=engine.MARKET,
                order_id=order_id,
                extra={"closes": position["id"]},
            )
            if order.status != engine.FILLED:
                return _rejected("NOT_ENOUGH_MONEY", order.message or "Close refused")
            self._close(account, position, volume, order)
            answer = _ok(order_id)
        self.hang_if_asked()
        return answer

    # Bookkeeping -----------------------------------------------------------------------------

    def _engine_orders(self, account: dict) -> list[engine.SimOrder]:
        return list(self.exchange.account(account["tradingAccountId"]).orders.values())

    def _book_fills(self) -> None:
        """Open a position for every opening order filled and not booked yet (hedging account)."""
        fills = list(self.unbooked_fills)
        self.unbooked_fills.clear()
        for order in fills:
            if order.extra.get("booked"):
                continue
            order.extra["booked"] = True
            if "closes" in order.extra:
                continue
            account = self.accounts[order.account_id]
            position = account["positions"][order.order_id] = {
                "id": order.order_id,
                "symbol": order.instrument,
                "side": order.side,
                "volume": order.quantity,
                "openPrice": order.average_price,
                "openTime": _iso(order.updated_at),
                "stopLoss": order.extra.get("slPrice") or 0,
                "takeProfit": order.extra.get("tpPrice") or 0,
                "comment": order.tag,
            }
            self._exposure_change(account, position, position["volume"])

    def _close(self, account: dict, position: dict, volume: Decimal, order) -> None:
        order.extra["booked"] = True
        self._exposure_change(account, position, -volume)
        direction = 1 if position["side"] == engine.BUY else -1
        size = Decimal(self.instruments[position["symbol"]]["contractSize"])
        profit = (order.average_price - position["openPrice"]) * volume * size * direction
        account["balance"] += profit
        remaining = position["volume"] - volume
        account["closed"].append(
            {
                "id": position["id"],
                "uid": f"{position['id']}_{order.order_id}",
                "symbol": position["symbol"],
                "side": position["side"],
                "volume": str(volume),
                "openPrice": position["openPrice"],
                "closePrice": order.average_price,
                "openTime": position["openTime"],
                "time": _iso(order.updated_at),
                "profit": str(profit.quantize(TWO_PLACES)),
                "netProfit": str(profit.quantize(TWO_PLACES)),
                "closingOrderID": order.order_id,
                "closeReason": "CLOSE_REASON_PARTIAL" if remaining else "CLOSE_REASON_CLIENT",
                "comment": position["comment"],
                "_closed_at": order.updated_at,
            }
        )
        if remaining:
            position["volume"] = remaining
        else:
            del account["positions"][position["id"]]

    def _exposure_change(self, account: dict, position: dict, volume: Decimal) -> None:
        """Add ``volume`` (negative: a close) of ``position`` to the account's sums."""
        symbol = position["symbol"]
        units = volume * Decimal(self.instruments[symbol]["contractSize"])
        signed = units if position["side"] == engine.BUY else -units
        account["exposure"][symbol] = account["exposure"].get(symbol, 0) + signed
        account["open_cost"][symbol] = (
            account["open_cost"].get(symbol, 0) + signed * position["openPrice"]
        )
        account["notional"] += units * position["openPrice"]

    def _unrealised(self, account: dict) -> Decimal:
        """Sum over open positions of (last price - open price) x signed units."""
        total = Decimal(0)
        for symbol, exposure in account["exposure"].items():
            total += self.exchange.prices[symbol] * exposure - account["open_cost"][symbol]
        return total

    def _used_margin(self, account: dict) -> Decimal:
        return account["notional"] / account["leverage"]

    def _free_margin(self, account: dict) -> Decimal:
        return account["balance"] + self._unrealised(account) - self._used_margin(account)

    # Views -----------------------------------------------------------------------------------

    def _position_view(self, position: dict) -> dict:
        size = Decimal(self.instruments[position["symbol"]]["contractSize"])
        direction = 1 if position["side"] == engine.BUY else -1
        last = self.exchange.prices[position["symbol"]]
        profit = (last - position["openPrice"]) * position["volume"] * size * direction
        return {
            "id": position["id"],
            "symbol": position["symbol"],
            "side": position["side"],
            "volume": str(position["volume"]),  # the platform sends some numbers as strings
            "openPrice": position["openPrice"],
            "currentPrice": last,
            "openTime": position["openTime"],
            "stopLoss": position["stopLoss"],
            "takeProfit": position["takeProfit"],
            "profit": profit.quantize(TWO_PLACES),
            "netProfit": profit.quantize(TWO_PLACES),
            "swap": 0,
            "comment": position["comment"],
        }

    def _active_order_view(self, order: engine.SimOrder) -> dict:
        return {
            "id": order.order_id,
            "symbol": order.instrument,
            "side": order.side,
            "volume": str(order.quantity),
            "type": order.order_type,
            "activationPrice": order.price
            if order.order_type == engine.LIMIT
            else order.trigger_price,
            "creationTime": _iso(order.created_at),
            "slPrice": order.extra.get("slPrice") or 0,
            "tpPrice": order.extra.get("tpPrice") or 0,
            "comment": order.tag,
        }

    def _history_order_view(self, order: engine.SimOrder) -> dict:
        activation = order.price if order.order_type == engine.LIMIT else order.trigger_price
        return {
            "id": order.order_id,
            "symbol": order.instrument,
            "side": order.side,
            "volume": str(order.quantity),
            "filledVolume": str(order.filled_quantity),
            "type": order.order_type,
            "status": HISTORY_STATUSES[order.status],
            "activationPrice": activation,
            "executionPrice": order.average_price if order.status == engine.FILLED else None,
            "creationTime": _iso(order.created_at),
            "updateTime": _iso(order.updated_at),
            "positionId": order.extra.get("closes") or order.order_id,
            "comment": order.tag,
            "errorMessage": order.message,
        }


# Helpers ---------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"status": code, "errorMessage": message})


def _ok(order_id: str) -> Response:
    return Response(
        200, {"status": "OK", "nativeCode": None, "errorMessage": "", "orderId": order_id}
    )


def _rejected(native_code: str, message: str) -> Response:
    body = {
        "status": "REJECTED",
        "nativeCode": native_code,
        "errorMessage": message,
        "orderId": None,
    }
    return Response(200, body)


def _json_body(request: Request) -> dict | None:
    try:
        body = request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _volume_problem(volume: Decimal | None, spec: dict) -> str:
    if volume is None or volume <= 0:
        return "Volume must be positive"
    if volume < Decimal(spec["volumeMin"]) or volume > Decimal(spec["volumeMax"]):
        return f"Volume must be between {spec['volumeMin']} and {spec['volumeMax']} lots"
    if volume % Decimal(spec["volumeStep"]):
        return f"Volume must be a multiple of {spec['volumeStep']}"
    return ""


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_moment(value) -> float | None:
    """Epoch milliseconds or an ISO-8601 string, as clients send either."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, Decimal)) or str(value).isdigit():
        return int(value) / 1000
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _time_range(body: dict) -> tuple[float, float]:
    start = _parse_moment(body.get("from"))
    end = _parse_moment(body.get("to"))
    return (start if start is not None else 0.0, end if end is not None else float("inf"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt_like(claims: dict) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"
