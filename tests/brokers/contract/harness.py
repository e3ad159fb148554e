"""How the contract suite drives one broker: start its simulator, log in, name instruments."""

from __future__ import annotations

from decimal import Decimal

import requests

from brokers.adapters.base import BrokerAdapter, OrderRequest, OrderType, Product, Side
from brokers.simulators import simulator_class
from brokers.simulators.base import RunningSimulator


class BrokerHarness:
    """Base harness for an HTTP broker with a simulator. Subclasses fill in the blanks."""

    code = ""
    simulator_name = ""
    adapter_class: type[BrokerAdapter]
    #: (exchange, symbol) of a liquid instrument in the simulator's default seed, and its price.
    tradable = ("NSE", "INFY")
    tradable_price = Decimal("1500")
    order_quantity = Decimal(1)
    #: True when the adapter logs in again by itself after the session expires (DXtrade).
    relogs_in_after_expiry = False
    #: False for in-process brokers that have no network to fault.
    has_network = True

    def __init__(self):
        self.running: RunningSimulator | None = None

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = RunningSimulator(simulator_class(self.simulator_name)())

    def stop(self) -> None:
        if self.running:
            self.running.stop()

    @property
    def url(self) -> str:
        return self.running.url

    # To implement ----------------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """Valid credentials for the simulator's default seed."""
        raise NotImplementedError

    def bad_credentials(self) -> dict[str, str]:
        raise NotImplementedError

    def logged_in_adapter(self) -> BrokerAdapter:
        """An adapter with a live session (drives the OAuth redirect where the broker has one)."""
        raise NotImplementedError

    def failed_login(self) -> None:
        """Attempt a login with bad credentials; must raise InvalidCredentials."""
        raise NotImplementedError

    def order_request(self, **overrides) -> OrderRequest:
        exchange, symbol = self.tradable
        fields = dict(
            symbol=symbol,
            exchange=exchange,
            side=Side.BUY,
            quantity=self.order_quantity,
            order_type=OrderType.MARKET,
            product=Product.INTRADAY,
            client_order_id=self.adapter_class.new_client_order_id(),
        )
        fields.update(overrides)
        return OrderRequest(**fields)

    def unknown_instrument_request(self) -> OrderRequest:
        return self.order_request(symbol="NOSUCHSYMBOL")

    def unaffordable_request(self) -> OrderRequest:
        return self.order_request(quantity=Decimal(10_000_000))

    # Simulator controls ------------------------------------------------------------------------

    def control(self, action: str, payload: dict | None = None) -> dict:
        response = requests.post(f"{self.url}/__sim__/{action}", json=payload or {}, timeout=5)
        response.raise_for_status()
        return response.json()

    def set_price(self, price: Decimal) -> None:
        """Move the tradable instrument's price (its key in the simulator's own form)."""
        self.control("prices", {self.price_key(): str(price)})

    def price_key(self) -> str:
        exchange, symbol = self.tradable
        return f"{exchange}:{symbol}"

    def faults(self, **faults) -> None:
        self.control("faults", faults)

    def expire_sessions(self) -> None:
        self.control("expire-sessions")

    def reset(self) -> None:
        self.control("reset")

    def ledger(self) -> list[dict]:
        return requests.get(f"{self.url}/__sim__/ledger", timeout=5).json()["orders"]
