"""The broker adapter contract.

An adapter class describes its broker with class attributes (code, name, auth flow, credential
fields, capabilities, production base URL, documented rate limits) and implements the operations
below. An instance is built per broker account from its credentials and session; it owns one
pooled ``requests.Session`` and keeps no module-level state shared between accounts or teams.

Inputs and outputs are the small dataclasses in this module. Quantities and money are ``Decimal``;
JSON from brokers is parsed with ``parse_float=Decimal`` so no float ever touches a price.
"""

from __future__ import annotations

import enum
import functools
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from . import errors

#: India Standard Time: Indian brokers' sessions and exchange hours are set in it.
IST = timezone(timedelta(hours=5, minutes=30), "IST")

# --- Standard vocabulary ---------------------------------------------------------------------


class AuthFlow(enum.StrEnum):
    OAUTH_REDIRECT = "oauth_redirect"
    CREDENTIALS = "credentials"
    CREDENTIALS_TOTP = "credentials_totp"
    API_KEY = "api_key"


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"  # stop-market: becomes a market order at the trigger price
    STOP_LIMIT = "STOP_LIMIT"


class Product(enum.StrEnum):
    DELIVERY = "DELIVERY"  # Kite CNC, Angel DELIVERY, Fyers CNC
    INTRADAY = "INTRADAY"  # Kite MIS, Angel INTRADAY, Fyers INTRADAY
    MARGIN = "MARGIN"  # Kite NRML, Angel CARRYFORWARD, Fyers MARGIN


class Validity(enum.StrEnum):
    DAY = "DAY"
    IOC = "IOC"
    GTC = "GTC"


class OrderStatus(enum.StrEnum):
    """The broker-side status of an order, normalized."""

    PENDING = "PENDING"  # received by the broker, not yet working on the exchange
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


FINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)

#: Operations an adapter may offer; ``BrokerAdapter.has`` maps each to True/False (like CCXT).
OPERATIONS = (
    "oauth_login",
    "credentials_login",
    "refresh_session",
    "logout",
    "place_order",
    "modify_order",
    "cancel_order",
    "order_status",
    "order_book",
    "trade_book",
    "positions",
    "holdings",
    "funds",
    "quotes",
    "instrument_master",
)


# --- Data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialField:
    """One field of a broker account's connect form."""

    name: str
    label: str
    secret: bool = False
    required: bool = True
    help_text: str = ""


@dataclass
class SessionData:
    """What a successful login or refresh gives us. Every token here is secret."""

    access_token: str
    refresh_token: str = ""
    feed_token: str = ""
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never let a token reach a log line through repr()
        return f"SessionData(issued_at={self.issued_at!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class OrderRequest:
    """A new order in the standard form."""

    symbol: str
    exchange: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    client_order_id: str
    product: Product = Product.INTRADAY
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    validity: Validity = Validity.DAY
    # Filled in from the instrument master when the broker needs its own identifiers.
    broker_symbol: str = ""
    broker_token: str = ""


@dataclass(frozen=True)
class OrderModification:
    """Changes to an open order; None means unchanged."""

    quantity: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    order_type: OrderType | None = None


@dataclass(frozen=True)
class OrderAck:
    """The broker's answer to a place, modify or cancel."""

    broker_order_id: str
    status: OrderStatus = OrderStatus.PENDING
    raw_status: str = ""
    message: str = ""


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker reports it."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    exchange: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    status: OrderStatus
    raw_status: str
    filled_quantity: Decimal = Decimal(0)
    average_price: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    message: str = ""
    placed_at: datetime | None = None


@dataclass(frozen=True)
class Trade:
    """One fill."""

    trade_id: str
    broker_order_id: str
    symbol: str
    exchange: str
    side: Side
    quantity: Decimal
    price: Decimal
    traded_at: datetime | None = None


@dataclass(frozen=True)
class Position:
    """A net position; ``quantity`` is signed (negative = short)."""

    symbol: str
    exchange: str
    quantity: Decimal
    average_price: Decimal
    product: str = ""
    last_price: Decimal | None = None
    pnl: Decimal | None = None
    position_id: str = ""


@dataclass(frozen=True)
class Holding:
    """A delivery holding in the demat account."""

    symbol: str
    exchange: str
    quantity: Decimal
    average_price: Decimal
    last_price: Decimal | None = None
    pnl: Decimal | None = None


@dataclass(frozen=True)
class Funds:
    """Balances in the account's currency."""

    total: Decimal
    available: Decimal
    used_margin: Decimal
    currency: str
    equity: Decimal | None = None


@dataclass(frozen=True)
class Quote:
    """A market snapshot for one instrument."""

    symbol: str
    exchange: str
    last_price: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    volume: Decimal | None = None


@dataclass(frozen=True)
class InstrumentRecord:
    """One row of a broker's instrument master, in the standard form."""

    symbol: str
    exchange: str
    broker_symbol: str
    broker_token: str
    lot_size: Decimal = Decimal(1)
    tick_size: Decimal = Decimal("0.05")
    instrument_type: str = "EQ"
    name: str = ""
    expiry: str = ""  # ISO date or empty
    strike: Decimal | None = None


def to_decimal(value: Any) -> Decimal | None:
    """Parse a broker number (int, Decimal or string) exactly; '' and None give None."""
    if value is None or value == "":
        return None
    if isinstance(value, float):  # only reachable if someone bypassed _json(); keep it exact-ish
        value = repr(value)
    try:
        return Decimal(str(value).replace(",", "").strip())
    except InvalidOperation as exc:
        raise errors.BrokerError(f"Broker sent a malformed number: {value!r}") from exc


def decimal_or_zero(value: Any) -> Decimal:
    parsed = to_decimal(value)
    return parsed if parsed is not None else Decimal(0)


# --- The contract ----------------------------------------------------------------------------

Throttle = Callable[[str], None]
SessionListener = Callable[[SessionData], None]


def _no_throttle(category: str) -> None:
    return None


class BrokerAdapter:
    """Base class of every broker adapter: describes the broker and declares its operations."""

    # Description of the broker; every subclass sets these.
    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    auth_flow: ClassVar[AuthFlow] = AuthFlow.CREDENTIALS
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    has: ClassVar[Mapping[str, bool]] = {}
    order_types: ClassVar[frozenset[OrderType]] = frozenset(OrderType)
    production_base_url: ClassVar[str] = ""
    #: True for white-label platforms: every account supplies its own base URL.
    base_url_required: ClassVar[bool] = False
    #: Documented limits in ``limits`` notation, per category ("orders", "quotes", "login",
    #: "default"); the platform enforces them per account across all workers.
    rate_limits: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: The credential field naming the app (API key) when the broker counts its limits per app,
    #: so every account using one app shares one budget; empty means per account.
    rate_limit_app_field: ClassVar[str] = ""
    #: The broker's limit on the client order id / tag we attach to orders.
    client_order_id_max_length: ClassVar[int] = 20
    currency: ClassVar[str] = "INR"
    #: True when renewing early gains nothing (the renewed session ends at the same time), so
    #: the platform renews only once the session has expired, with the refresh token (Fyers).
    renew_after_expiry: ClassVar[bool] = False

    connect_timeout: ClassVar[float] = 3.05
    read_timeout: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        credentials: Mapping[str, str],
        session: SessionData | None = None,
        base_url: str = "",
        throttle: Throttle | None = None,
        on_session_renewed: SessionListener | None = None,
        account_id: int | None = None,
    ):
        self.credentials = dict(credentials)
        self.account_id = account_id  # the platform's BrokerAccount id (in-process brokers)
        self.session = session
        self.base_url = (base_url or self.production_base_url).rstrip("/")
        self.throttle = throttle or _no_throttle
        self.on_session_renewed = on_session_renewed
        # Its own cookies and headers; connections come from the process's shared pool.
        self.http = BrokerHTTPSession()
        transport = shared_transport()
        self.http.mount("https://", transport)
        self.http.mount("http://", transport)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.base_url}>"

    def close(self) -> None:
        """Forget this adapter's cookies; its connections stay pooled for the next adapter."""
        self.http.cookies.clear()

    # Description helpers ---------------------------------------------------------------------

    @classmethod
    def secret_field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in cls.credential_fields if f.secret)

    @classmethod
    def new_client_order_id(cls) -> str:
        """A fresh client order id that fits the broker's tag rules (alphanumeric, short)."""
        length = min(cls.client_order_id_max_length, 24)
        return secrets.token_hex(16)[:length]

    @classmethod
    def supports(cls, operation: str) -> bool:
        return bool(cls.has.get(operation, False))

    # Authentication --------------------------------------------------------------------------

    def login_url(self, *, state: str, redirect_url: str) -> str:
        """The broker page a user is sent to for an OAuth-style login."""
        raise errors.NotSupported("This broker has no browser login.")

    def complete_login(self, params: Mapping[str, str], *, redirect_url: str = "") -> SessionData:
        """Finish an OAuth-style login from the query parameters of the broker's redirect."""
        raise errors.NotSupported("This broker has no browser login.")

    def login(self) -> SessionData:
        """Log in with the stored credentials (no human involved)."""
        raise errors.NotSupported("This broker needs an interactive login.")

    def refresh(self) -> SessionData:
        """Renew the current session before it expires."""
        raise errors.NotSupported("This broker cannot renew a session.")

    def logout(self) -> None:
        raise NotImplementedError

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        raise NotImplementedError

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        raise NotImplementedError

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        raise NotImplementedError

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        raise NotImplementedError

    def find_order(self, client_order_id: str) -> BrokerOrder | None:
        """The order we tagged with ``client_order_id``, or None if the broker never got it.

        Used to reconcile an order whose outcome is unknown. Adapters whose broker can look an
        order up by tag directly override this; the default scans the order book.
        """
        for order in self.order_book():
            if order.client_order_id == client_order_id:
                return order
        return None

    def order_book(self) -> list[BrokerOrder]:
        raise NotImplementedError

    def trade_book(self) -> list[Trade]:
        raise NotImplementedError

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        raise NotImplementedError

    def holdings(self) -> list[Holding]:
        raise NotImplementedError

    def funds(self) -> Funds:
        raise NotImplementedError

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        """Quotes for ``[(exchange, symbol), ...]``."""
        raise NotImplementedError

    def instrument_master(self) -> list[InstrumentRecord]:
        """Download and parse the broker's full instrument list."""
        raise errors.NotSupported("This broker publishes no instrument master.")

    # HTTP plumbing shared by every HTTP adapter ----------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        write: bool = False,
        category: str = "default",
        base_url: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request and map transport failures, 429 and 5xx onto typed errors.

        ``write=True`` marks a request that changes state at the broker: if it may have reached
        the broker but no answer came back, it raises OutcomeUnknown instead of BrokerUnavailable.
        Broker-specific envelopes (4xx bodies, ``status: error`` on 200) are left to the adapter.
        """
        self.throttle(category)
        url = (base_url if base_url is not None else self.base_url) + path
        kwargs.setdefault("timeout", (self.connect_timeout, self.read_timeout))
        try:
            response = self.http.request(method, url, **kwargs)
        except requests.exceptions.ConnectTimeout as exc:
            raise errors.BrokerUnavailable("Could not connect to the broker (timeout).") from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_sent(exc) or not write:
                raise errors.BrokerUnavailable("Could not reach the broker.") from exc
            raise errors.OutcomeUnknown(
                "The connection to the broker broke after the request was sent."
            ) from exc
        except requests.exceptions.Timeout as exc:
            if write:
                raise errors.OutcomeUnknown("The broker did not answer in time.") from exc
            raise errors.BrokerUnavailable("The broker did not answer in time.") from exc
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            # The answer broke off mid-body: the request itself arrived.
            if write:
                raise errors.OutcomeUnknown("The broker's answer broke off.") from exc
            raise errors.BrokerUnavailable("The broker's answer broke off.") from exc

        if response.status_code == 429:
            message, broker_code = self._describe_error(response)
            raise errors.RateLimited(
                message or "Rate limited by the broker.",
                retry_after=_retry_after(response),
                broker_code=broker_code,
                http_status=429,
            )
        if response.status_code >= 500:
            message, broker_code = self._describe_error(response)
            # 503 says the request was not processed; other 5xx on a write leave it unknown.
            unknown = write and response.status_code != 503
            error_class = errors.OutcomeUnknown if unknown else errors.BrokerUnavailable
            raise error_class(
                message or f"Broker server error (HTTP {response.status_code}).",
                broker_code=broker_code,
                http_status=response.status_code,
            )
        return response

    def _describe_error(self, response: requests.Response) -> tuple[str, str | None]:
        """(message, broker_code) from an error response; adapters override for their envelope."""
        return response.text[:200], None

    @staticmethod
    def _json(response: requests.Response) -> Any:
        """The response body as JSON with every number parsed as Decimal."""
        try:
            return response.json(parse_float=Decimal)
        except ValueError as exc:
            raise errors.BrokerError(
                f"Broker sent a non-JSON answer (HTTP {response.status_code}).",
                http_status=response.status_code,
            ) from exc


class BrokerHTTPSession(requests.Session):
    """A requests session that reads proxy and CA settings from the environment once per process.

    By default requests reads them again on every request (``trust_env``): it scans every
    environment variable for proxies and looks for ``~/.netrc``, about a sixth of the CPU of a
    broker call. Here HTTP(S)_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are still
    honoured, read once per broker origin; ``~/.netrc`` credentials are never sent to a broker.
    """

    def __init__(self):
        super().__init__()
        self.trust_env = False
        self.verify = environment_ca_bundle()

    def request(self, method, url, *args, **kwargs):
        if kwargs.get("proxies") is None:
            kwargs["proxies"] = dict(environment_proxies(_origin(url)))
        return super().request(method, url, *args, **kwargs)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@functools.lru_cache(maxsize=1024)
def environment_proxies(origin: str) -> dict[str, str]:
    """The environment's proxies for ``origin`` (none if NO_PROXY excludes it), as requests
    would find them. Read once: a process's environment does not change while it runs."""
    return requests.utils.get_environ_proxies(origin)


@functools.lru_cache(maxsize=1)
def environment_ca_bundle() -> str | bool:
    """The CA bundle requests would take from the environment, else True (its own)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


class SharedTransport(requests.adapters.HTTPAdapter):
    """Keep-alive connections to brokers, shared by every adapter of one process.

    Adapters are made per call (per account, per task), so a pool of their own would open a TCP
    (and TLS) connection for every broker call. Connections carry no account state (tokens travel
    in each request's headers, cookies stay in each adapter's session); urllib3 pools are thread
    safe and drop a connection the broker closed before reusing it.
    """

    #: Connections kept per broker host: room for the fan-out threads of one worker process.
    POOL_SIZE = 64

    def __init__(self):
        super().__init__(pool_connections=16, pool_maxsize=self.POOL_SIZE)

    def close(self) -> None:  # lives as long as the process; an adapter's close() keeps it
        return


_transport_lock = threading.Lock()
_transport: tuple[int, SharedTransport] | None = None


def shared_transport() -> SharedTransport:
    """This process's transport; a forked child (a prefork worker) builds its own."""
    global _transport
    with _transport_lock:
        if _transport is None or _transport[0] != os.getpid():
            _transport = (os.getpid(), SharedTransport())
        return _transport[1]


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection failed before any byte of the request went out."""
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    return isinstance(inner, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError))


def _retry_after(response: requests.Response) -> Decimal | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None
