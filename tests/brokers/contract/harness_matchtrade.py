"""Contract harness for Match-Trader: drives the matchtrade simulator's default seed."""

from __future__ import annotations

from decimal import Decimal

from brokers.adapters.matchtrade import MatchTraderAdapter

from .harness import BrokerHarness


class Harness(BrokerHarness):
    code = "matchtrade"
    simulator_name = "matchtrade"
    adapter_class = MatchTraderAdapter
    # Gold, not EURUSD: the suite rests limit orders 10 price units below the market.
    tradable = ("MTR", "XAUUSD")
    tradable_price = Decimal("2350.00")
    order_quantity = Decimal("0.10")  # lots

    def credentials(self) -> dict[str, str]:
        return {
            "email": "trader@example.com",
            "password": "Sim-Pass-2024",
            "broker_id": "0",
            "trading_account_id": "700100",
        }

    def bad_credentials(self) -> dict[str, str]:
        return {**self.credentials(), "password": "wrong-password"}

    def adapter(self, credentials: dict[str, str] | None = None) -> MatchTraderAdapter:
        return MatchTraderAdapter(credentials=credentials or self.credentials(), base_url=self.url)

    def logged_in_adapter(self) -> MatchTraderAdapter:
        adapter = self.adapter()
        adapter.login()
        return adapter

    def failed_login(self) -> None:
        adapter = self.adapter(self.bad_credentials())
        try:
            adapter.login()
        finally:
            adapter.close()

    def unaffordable_request(self):
        # Within the instrument's 100-lot maximum, far beyond the 100,000 USD account's margin.
        return self.order_request(quantity=Decimal("100"))

    def price_key(self) -> str:
        return self.tradable[1]  # the simulator keys prices by bare symbol
