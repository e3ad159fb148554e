"""DXtrade REST ("dxsca-web") simulator, written from BROKERS.md and the DXtrade REST API spec.

Served at the host root under ``/dxsca-web``, like a white-label DXtrade deployment:

- ``POST /dxsca-web/login`` JSON ``{username, domain, password}`` -> ``{sessionToken, timeout}``;
  ``POST /dxsca-web/ping`` renews (a fresh token; the old one stops working);
  ``POST /dxsca-web/logout``. Every other call needs ``Authorization: DXAPI <sessionToken>``.
  Sessions expire after ``session_timeout`` of inactivity (seed; an ISO-8601 duration such as
  "PT30M" or a number of milliseconds, sent back verbatim as the login answer's ``timeout``);
  an expired or unknown token gets HTTP 401.
- ``GET /users/{username}``, ``GET /accounts/{account}/metrics|positions|orders|orders/history``,
  ``POST|PUT /accounts/{account}/orders``, ``DELETE /accounts/{account}/orders/{orderCode}``,
  ``POST /marketdata`` (Quote events), ``GET /instruments/query``. Account codes such as
  ``default:1210008442`` arrive URL-encoded in paths (``default%3A1210008442``); the base router
  decodes path parameters.
- Errors are ``{"errorCode": "...", "description": "..."}`` (errorCode is a string in the spec):
  401 "3" bad username/password, 404 "2" entity not found, 400 "32"/"33" incorrect request,
  409 "100" an order with this orderCode already exists.

Choices where DXtrade's behaviour is not documented (UNCONFIRMED):
- An unknown instrument on place is 404 errorCode "2" (the instrument is the entity not found).
- An expired/unknown token is 401 errorCode "1"; throttling is 429 errorCode "429"; server
  errors carry the HTTP status as errorCode.
- An order beyond the account's funds is accepted and then REJECTED (status REJECTED, the reason
  in its last execution's ``rejectReason``), as DXtrade's risk checks run after acceptance.
- Cancelling or modifying an order that is no longer working is 400 errorCode "32".
- ``orderCode`` in an order listing is the server's own code (here the orderId as a string); the
  client's orderCode comes back as ``clientOrderId``. DELETE and PUT accept either.
- Accounts net positions per instrument (one position per symbol), no leverage: margin is the
  open positions' notional at their open price plus the notional of working orders.
- The ledger lists every order the simulator accepted, including ones later REJECTED for funds.
  A request refused outright (400/404, or a duplicate orderCode answered 409) is not an order and
  is not recorded: a duplicate is not a second order.
- ETag/If-Match on modify and cancel are not enforced.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from . import engine
from .base import Request, Response, Simulator, route

PREFIX = "/dxsca-web"

#: Engine status -> DXtrade order status.
STATUSES = {
    engine.OPEN: "WORKING",
    engine.TRIGGER_PENDING: "WORKING",
    engine.FILLED: "COMPLETED",
    engine.CANCELLED: "CANCELED",
    engine.REJECTED: "REJECTED",
}
ORDER_TYPES = {"MARKET", "LIMIT", "STOP", "STOP_LIMIT"}
SIDES = {"BUY", "SELL"}
TIFS = {"GTC", "DAY", "GTD", "IOC", "FOK"}
POSITION_EFFECTS = {"OPEN", "CLOSE"}


def _error(status: int, code: str, description: str) -> Response:
    return Response(status, {"errorCode": code, "description": description})


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")


_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def timeout_seconds(value: Any) -> float:
    """Seconds from the seed's timeout: milliseconds (number or digits) or an ISO-8601 duration."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(Decimal(text) / 1000)
    match = _DURATION.match(text)
    if not match or text in ("P", "PT"):
        raise ValueError(f"Bad session_timeout in the seed: {value!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("days", 0) * 86400
        + parts.get("hours", 0) * 3600
        + parts.get("minutes", 0) * 60
        + parts.get("seconds", 0)
    )


class DXtradeSimulator(Simulator):
    """DXtrade's REST API (dxsca-web) over an in-memory exchange."""

    name = "dxtrade"
    default_seed = {
        # Sent verbatim as the login answer's `timeout`; "PT30M" or milliseconds like 1800000.
        "session_timeout": "PT30M",
        "users": [
            {
                "username": "trader1",
                "domain": "default",
                "password": "dx-pass-1",
                "accounts": [
                    {"account": "default:1210008442", "balance": "100000", "currency": "USD"},
                    {"account": "default:1210008443", "balance": "5000", "currency": "USD"},
                ],
            },
            {
                "username": "trader2",
                "domain": "default",
                "password": "dx-pass-2",
                "accounts": [
                    {"account": "default:1210009001", "balance": "25000", "currency": "EUR"}
                ],
            },
        ],
        # price is the mid; bid/ask are price -/+ spread/2. lotSize is the contract size of one
        # lot; quantities on the wire are in units.
        "instruments": [
            {
                "symbol": "EUR/USD",
                "type": "FOREX",
                "description": "Euro vs US Dollar",
                "price": "1.0850",
                "spread": "0.0002",
                "lotSize": "100000",
                "priceIncrement": "0.00001",
                "pipSize": "0.0001",
                "currency": "USD",
            },
            {
                "symbol": "GBP/USD",
                "type": "FOREX",
                "description": "Great Britain Pound vs US Dollar",
                "price": "1.2700",
                "spread": "0.0002",
                "lotSize": "100000",
                "priceIncrement": "0.00001",
                "pipSize": "0.0001",
                "currency": "USD",
            },
            {
                "symbol": "XAU/USD",
                "type": "FOREX",
                "description": "Gold vs US Dollar",
                "price": "2350.00",
                "spread": "0.30",
                "lotSize": "100",
                "priceIncrement": "0.01",
                "pipSize": "0.01",
                "currency": "USD",
            },
        ],
    }

    # State -----------------------------------------------------------------------------------

    def load_seed(self, seed: dict) -> None:
        self.timeout_value = seed.get("session_timeout", "PT30M")
        self.timeout = timeout_seconds(self.timeout_value)
        self.instruments = {i["symbol"]: i for i in seed["instruments"]}
        self.exchange = engine.Exchange(
            prices={symbol: Decimal(i["price"]) for symbol, i in self.instruments.items()}
        )
        self.users: dict[tuple[str, str], dict] = {}
        self.initial_balances: dict[str, Decimal] = {}
        self.currencies: dict[str, str] = {}
        for user in seed["users"]:
            self.users[(user["username"], user.get("domain", "default"))] = user
            for account in user["accounts"]:
                code = account["account"]
                balance = Decimal(str(account["balance"]))
                self.exchange.open_account(code, balance, account.get("currency", "USD"))
                self.initial_balances[code] = balance
                self.currencies[code] = account.get("currency", "USD")
        # token -> {"user": (username, domain), "last_used": monotonic seconds}
        self.sessions: dict[str, dict] = {}
        self.versions: dict[str, int] = {}

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    def set_prices(self, prices: dict[str, Decimal]) -> None:
        with self.lock:
            for symbol, price in prices.items():
                self.exchange.set_price(symbol, price)
                self._bump_all()

    # Error bodies for the fault injector -----------------------------------------------------

    def rate_limited_response(self, retry_after: int) -> Response:
        response = _error(429, "429", "Too many requests")
        response.headers["Retry-After"] = str(retry_after)
        return response

    def server_error_response(self, status: int) -> Response:
        return _error(status, str(status), "Internal server error")

    def not_found_response(self, request: Request) -> Response:
        return _error(404, "2", f"Entity not found: {request.method} {request.path}")

    # Sessions --------------------------------------------------------------------------------

    @route("POST", PREFIX + "/login")
    def login(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return _error(400, "32", "Incorrect request: body is not JSON")
        username, password = body.get("username"), body.get("password")
        domain = body.get("domain") or "default"
        if not username or not password:
            return _error(400, "32", "Incorrect request: username and password are required")
        with self.lock:
            user = self.users.get((username, domain))
            if user is None or not secrets.compare_digest(user["password"], str(password)):
                return _error(401, "3", "Incorrect username or password")
            return Response(200, self._new_session((username, domain)))

    @route("POST", PREFIX + "/ping")
    def ping(self, request: Request) -> Response:
        with self.lock:
            token, session, denied = self._authenticate(request)
            if denied:
                return denied
            del self.sessions[token]  # the renewed token replaces the old one
            return Response(200, self._new_session(session["user"]))

    @route("POST", PREFIX + "/logout")
    def logout(self, request: Request) -> Response:
        with self.lock:
            token, _, denied = self._authenticate(request)
            if denied:
                return denied
            del self.sessions[token]
            return Response(200, {})

    def _new_session(self, user: tuple[str, str]) -> dict:
        token = secrets.token_urlsafe(24)
        self.sessions[token] = {"user": user, "last_used": time.monotonic()}
        return {"sessionToken": token, "timeout": self.timeout_value}

    def _authenticate(self, request: Request) -> tuple[str, dict, Response | None]:
        """The session behind ``Authorization: DXAPI <token>``; touching it resets its timer."""
        scheme, _, token = request.header("authorization").partition(" ")
        token = token.strip()
        session = self.sessions.get(token) if scheme == "DXAPI" and token else None
        now = time.monotonic()
        if session is not None and now - session["last_used"] > self.timeout:
            del self.sessions[token]
            session = None
        if session is None:
            return token, {}, _error(401, "1", "Not authorized: the session is invalid or expired")
        session["last_used"] = now
        return token, session, None

    def _account(self, request: Request) -> tuple[engine.SimAccount | None, Response | None]:
        """The account in the path, if the session's user owns it (lock held by the caller)."""
        _, session, denied = self._authenticate(request)
        if denied:
            return None, denied
        code = request.params["account"]
        user = self.users[session["user"]]
        if code not in {a["account"] for a in user["accounts"]}:
            return None, _error(404, "2", f"Account {code} not found")
        return self.exchange.account(code), None

    # Users and accounts ----------------------------------------------------------------------

    @route("GET", PREFIX + "/users/{username}")
    def user_details(self, request: Request) -> Response:
        with self.lock:
            _, session, denied = self._authenticate(request)
            if denied:
                return denied
            username, domain = session["user"]
            # Accept both "trader1" and "trader1@default" (login@domain).
            if request.params["username"] not in (username, f"{username}@{domain}"):
                return _error(404, "2", f"User {request.params['username']} not found")
            user = self.users[session["user"]]
            accounts = [
                {
                    "account": a["account"],
                    "owner": username,
                    "version": self.versions.get(a["account"], 1),
                    "baseCurrency": self.currencies[a["account"]],
                    "accountStatus": "FULL_TRADING",
                    "positionBased": False,
                }
                for a in user["accounts"]
            ]
            return Response(
                200,
                {"userDetails": [{"username": username, "domain": domain, "accounts": accounts}]},
            )

    @route("GET", PREFIX + "/accounts/{account}/metrics")
    def metrics(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            return Response(200, {"metrics": [self._metrics(account)]})

    def _metrics(self, account: engine.SimAccount) -> dict:
        positions = [p for p in account.positions.values() if p.quantity]
        realised = sum((p.realised for p in account.positions.values()), Decimal(0))
        open_pl = sum((self.exchange.unrealised(p) for p in positions), Decimal(0))
        balance = self.initial_balances[account.account_id] + realised
        equity = balance + open_pl
        margin = sum((abs(p.quantity) * p.average_price for p in positions), Decimal(0))
        margin += account.blocked_margin(self.exchange.prices)
        working = [o for o in account.orders.values() if o.status not in engine.FINAL]
        return {
            "account": account.account_id,
            "version": self.versions.get(account.account_id, 1),
            "equity": equity,
            "balance": balance,
            "availableBalance": balance - margin,
            "availableFunds": equity - margin,
            "allocatedFunds": Decimal(0),
            "marginFree": equity - margin,
            "openPl": open_pl,
            "totalPl": realised + open_pl,
            "margin": margin,
            "openPositionsCount": len(positions),
            "openOrdersCount": len(working),
        }

    @route("GET", PREFIX + "/accounts/{account}/positions")
    def positions(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            rows = [
                {
                    "account": account.account_id,
                    "version": self.versions.get(account.account_id, 1),
                    "positionCode": p.position_id,
                    "symbol": p.instrument,
                    "quantity": abs(p.quantity),
                    "side": "BUY" if p.quantity > 0 else "SELL",
                    "openTime": _iso(time.time()),
                    "openPrice": p.average_price,
                }
                for p in account.positions.values()
                if p.quantity
            ]
            return Response(200, {"positions": rows})

    # Orders ----------------------------------------------------------------------------------

    @route("GET", PREFIX + "/accounts/{account}/orders")
    def open_orders(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            orders = [o for o in account.orders.values() if o.status not in engine.FINAL]
            return Response(200, {"orders": [self._order_json(o) for o in orders]})

    @route("GET", PREFIX + "/accounts/{account}/orders/history")
    def order_history(self, request: Request) -> Response:
        """Orders of every status, filtered by with-client-id, with-order-id and in-status."""
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            client_ids = _csv(request.arg("with-client-id"))
            order_ids = _csv(request.arg("with-order-id"))
            statuses = _csv(request.arg("in-status"))
            rows = []
            for order in account.orders.values():
                row = self._order_json(order)
                if client_ids and row["clientOrderId"] not in client_ids:
                    continue
                if order_ids and str(row["orderId"]) not in order_ids:
                    continue
                if statuses and row["status"] not in statuses:
                    continue
                rows.append(row)
            return Response(200, {"orders": rows})

    @route("POST", PREFIX + "/accounts/{account}/orders")
    def place(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            try:
                body = request.json()
            except ValueError:
                return _error(400, "32", "Incorrect request: body is not JSON")
            problem = _check_order_request(body)
            if problem:
                return _error(400, "32", f"Incorrect request parameters: {problem}")
            order_code = body["orderCode"]
            if body["instrument"] not in self.instruments:
                return _error(404, "2", f"Instrument {body['instrument']} not found")
            if self._find(account, order_code, client_only=True) is not None:
                return _error(409, "100", f"Order with id {order_code} already exists")
            order_type = body["type"]
            order = self.exchange.place(
                account.account_id,
                instrument=body["instrument"],
                side=body["side"],
                quantity=Decimal(str(body["quantity"])),
                order_type=order_type,
                price=_price(body.get("limitPrice")) if "LIMIT" in order_type else None,
                trigger_price=_price(body.get("stopPrice")) if "STOP" in order_type else None,
                tag=order_code,
                order_id=str(int(self.exchange.next_id())),
                extra={
                    "tif": body.get("tif", "GTC"),
                    "positionEffect": body.get("positionEffect", "OPEN"),
                    "positionCode": body.get("positionCode"),
                },
            )
            self._bump(account.account_id)
            self.record_order(
                client_tag=order_code,
                broker_order_id=order.order_id,
                instrument=order.instrument,
                side=order.side,
                quantity=order.quantity,
                order_type=order.order_type,
                status=STATUSES[order.status],
            )
            answer = {"orderId": int(order.order_id), "updateOrderId": int(order.order_id)}
        self.hang_if_asked()
        return Response(200, answer)

    @route("PUT", PREFIX + "/accounts/{account}/orders")
    def modify(self, request: Request) -> Response:
        """DXtrade modify: the whole order request again, the order named by its orderCode."""
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            try:
                body = request.json()
            except ValueError:
                return _error(400, "32", "Incorrect request: body is not JSON")
            problem = _check_order_request(body)
            if problem:
                return _error(400, "32", f"Incorrect request parameters: {problem}")
            order = self._find(account, body["orderCode"])
            if order is None:
                return _error(404, "2", f"Order {body['orderCode']} not found")
            if body["instrument"] != order.instrument or body["side"] != order.side:
                return _error(400, "32", "Incorrect request: instrument and side cannot change")
            order_type = body["type"]
            try:
                self.exchange.modify(
                    account.account_id,
                    order.order_id,
                    quantity=Decimal(str(body["quantity"])),
                    price=_price(body.get("limitPrice")) if "LIMIT" in order_type else None,
                    trigger_price=_price(body.get("stopPrice")) if "STOP" in order_type else None,
                    order_type=order_type,
                )
            except engine.EngineError as exc:
                return _error(400, "32", f"Incorrect request: {exc.message}")
            order.extra["tif"] = body.get("tif", order.extra.get("tif", "GTC"))
            self._bump(account.account_id)
            return Response(
                200, {"orderId": int(order.order_id), "updateOrderId": int(order.order_id)}
            )

    @route("DELETE", PREFIX + "/accounts/{account}/orders/{orderCode}")
    def cancel(self, request: Request) -> Response:
        with self.lock:
            account, denied = self._account(request)
            if denied:
                return denied
            order = self._find(account, request.params["orderCode"])
            if order is None:
                return _error(404, "2", f"Order {request.params['orderCode']} not found")
            try:
                self.exchange.cancel(account.account_id, order.order_id)
            except engine.EngineError as exc:
                return _error(400, "32", f"Incorrect request: {exc.message}")
            self._bump(account.account_id)
            return Response(
                200, {"orderId": int(order.order_id), "updateOrderId": int(order.order_id)}
            )

    def _find(
        self, account: engine.SimAccount, code: str, *, client_only: bool = False
    ) -> engine.SimOrder | None:
        """An order by the client's orderCode, else (unless client_only) by the server's code."""
        for order in account.orders.values():
            if order.tag == code:
                return order
        if not client_only:
            return account.orders.get(code)
        return None

    def _order_json(self, order: engine.SimOrder) -> dict:
        status = STATUSES[order.status]
        leg_price = order.price if order.order_type in ("LIMIT", "STOP_LIMIT") else None
        if order.order_type == "STOP":
            leg_price = order.trigger_price
        row = {
            "account": order.account_id,
            "version": self.versions.get(order.account_id, 1),
            "orderId": int(order.order_id),
            "orderCode": order.order_id,
            "clientOrderId": order.tag,
            "actionCode": order.tag,
            "legCount": 1,
            "type": order.order_type,
            "instrument": order.instrument,
            "status": status,
            "finalStatus": order.status in engine.FINAL,
            "legs": [
                {
                    "instrument": order.instrument,
                    "positionEffect": order.extra.get("positionEffect", "OPEN"),
                    "positionCode": order.extra.get("positionCode"),
                    "side": order.side,
                    "price": leg_price,
                    "legRatio": 1,
                    "quantity": order.quantity,
                    "filledQuantity": order.filled_quantity,
                    "remainingQuantity": order.pending_quantity
                    if order.status not in engine.FINAL
                    else Decimal(0),
                    "averagePrice": order.average_price if order.filled_quantity else None,
                }
            ],
            "side": order.side,
            "tif": order.extra.get("tif", "GTC"),
            "issueTime": _iso(order.created_at),
            "transactionTime": _iso(order.updated_at),
            "executions": self._executions(order),
        }
        if order.order_type in ("STOP", "STOP_LIMIT"):
            row["stopPrice"] = order.trigger_price
        return row

    def _executions(self, order: engine.SimOrder) -> list[dict]:
        """The order's execution reports, rebuilt from its engine state."""
        base = {
            "account": order.account_id,
            "orderCode": order.order_id,
            "updateOrderId": int(order.order_id),
            "clientOrderId": order.tag,
            "actionCode": order.tag,
            "instrument": order.instrument,
        }
        if order.status == engine.REJECTED:
            return [
                {
                    **base,
                    "executionCode": f"{order.order_id}-1",
                    "status": "REJECTED",
                    "finalStatus": True,
                    "filledQuantity": Decimal(0),
                    "lastQuantity": Decimal(0),
                    "remainingQuantity": Decimal(0),
                    "transactionTime": _iso(order.updated_at),
                    "rejectReason": order.message or "Rejected",
                    "rejectCode": "INSUFFICIENT_MARGIN",
                }
            ]
        executions = [
            {
                **base,
                "executionCode": f"{order.order_id}-1",
                "status": "WORKING",
                "finalStatus": False,
                "filledQuantity": Decimal(0),
                "lastQuantity": Decimal(0),
                "remainingQuantity": order.quantity,
                "transactionTime": _iso(order.created_at),
            }
        ]
        if order.status in (engine.FILLED, engine.CANCELLED):
            filled = order.status == engine.FILLED
            executions.append(
                {
                    **base,
                    "executionCode": f"{order.order_id}-2",
                    "status": STATUSES[order.status],
                    "finalStatus": True,
                    "filledQuantity": order.filled_quantity,
                    "lastQuantity": order.filled_quantity if filled else Decimal(0),
                    "remainingQuantity": Decimal(0),
                    "lastPrice": order.average_price if filled else None,
                    "averagePrice": order.average_price if filled else None,
                    "transactionTime": _iso(order.updated_at),
                }
            )
        return executions

    def _bump(self, account_code: str) -> None:
        self.versions[account_code] = self.versions.get(account_code, 1) + 1

    def _bump_all(self) -> None:
        for code in self.exchange.accounts:
            self._bump(code)

    # Market data -----------------------------------------------------------------------------

    @route("POST", PREFIX + "/marketdata")
    def marketdata(self, request: Request) -> Response:
        """Current Quote events; symbols the server does not know are left out of the answer."""
        with self.lock:
            _, _, denied = self._authenticate(request)
            if denied:
                return denied
            try:
                body = request.json()
            except ValueError:
                return _error(400, "32", "Incorrect request: body is not JSON")
            symbols = body.get("symbols")
            if isinstance(symbols, str):
                symbols = [symbols]
            event_types = body.get("eventTypes")
            if not symbols or not isinstance(event_types, list) or not event_types:
                return _error(400, "32", "Incorrect request parameters: symbols and eventTypes")
            if any(e.get("type") != "Quote" for e in event_types if isinstance(e, dict)):
                return _error(400, "33", "Only Quote events are served by this simulator")
            events = []
            for symbol in symbols:
                instrument = self.instruments.get(symbol)
                if instrument is None:
                    continue
                mid = self.exchange.prices[symbol]
                half = Decimal(instrument.get("spread", "0")) / 2
                events.append(
                    {
                        "type": "Quote",
                        "symbol": symbol,
                        "bid": mid - half,
                        "ask": mid + half,
                        "time": _iso(time.time()),
                    }
                )
            return Response(200, {"eventsType": "Quote", "events": events})

    @route("GET", PREFIX + "/instruments/query")
    def instruments_query(self, request: Request) -> Response:
        with self.lock:
            _, _, denied = self._authenticate(request)
            if denied:
                return denied
            wanted = _csv(request.arg("symbols"))
            rows = []
            for symbol, instrument in self.instruments.items():
                if wanted and not any(w in symbol for w in wanted):
                    continue
                rows.append(
                    {
                        "type": instrument.get("type", "FOREX"),
                        "symbol": symbol,
                        "version": 1,
                        "description": instrument.get("description", symbol),
                        "priceIncrement": Decimal(instrument.get("priceIncrement", "0.00001")),
                        "pipSize": Decimal(instrument.get("pipSize", "0.0001")),
                        "currency": instrument.get("currency", "USD"),
                        "lotSize": Decimal(instrument.get("lotSize", "1")),
                        "multiplier": Decimal(1),
                    }
                )
            return Response(200, {"instruments": rows})


def _csv(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def _price(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _check_order_request(body: Any) -> str:
    """What is wrong with a Single Order Request, or '' if nothing."""
    if not isinstance(body, dict):
        return "the body must be an object"
    if not body.get("orderCode"):
        return "orderCode is required"
    if body.get("type") not in ORDER_TYPES:
        return f"type {body.get('type')!r}"
    if body.get("side") not in SIDES:
        return f"side {body.get('side')!r}"
    if not body.get("instrument"):
        return "instrument is required"
    if body.get("tif", "GTC") not in TIFS:
        return f"tif {body.get('tif')!r}"
    if body.get("positionEffect", "OPEN") not in POSITION_EFFECTS:
        return f"positionEffect {body.get('positionEffect')!r}"
    try:
        quantity = Decimal(str(body.get("quantity")))
    except InvalidOperation:
        return "quantity must be a number"
    if not quantity.is_finite() or quantity <= 0:
        return "quantity must be positive"
    for field in ("limitPrice", "stopPrice"):
        if body.get(field) is None:
            continue
        try:
            price = Decimal(str(body[field]))
        except InvalidOperation:
            return f"{field} must be a number"
        if not price.is_finite() or price <= 0:
            return f"{field} must be positive"
    if "LIMIT" in body["type"] and body.get("limitPrice") is None:
        return "limitPrice is required for LIMIT orders"
    if "STOP" in body["type"] and body.get("stopPrice") is None:
        return "stopPrice is required for STOP orders"
    return ""
