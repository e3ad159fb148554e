"""Contract harness for DXtrade, driving the dxtrade simulator's default seed."""

from __future__ import annotations

from decimal import Decimal

from brokers.adapters.dxtrade import DXtradeAdapter

from .harness import BrokerHarness


class Harness(BrokerHarness):
    code = "dxtrade"
    simulator_name = "dxtrade"
    adapter_class = DXtradeAdapter
    # Gold rather than EUR/USD: the suite prices limit orders at price - 10, which must stay a
    # positive price. DXtrade instruments carry no exchange; the adapter reports "FX" for all.
    tradable = ("FX", "XAU/USD")
    tradable_price = Decimal("2350.00")
    order_quantity = Decimal(10)  # units (troy ounces), not lots
    relogs_in_after_expiry = True

    def credentials(self) -> dict[str, str]:
        return {
            "username": "trader1",
            "domain": "default",
            "password": "dx-pass-1",
            "account": "default:1210008442",
        }

    def bad_credentials(self) -> dict[str, str]:
        return {**self.credentials(), "password": "wrong-password"}

    def logged_in_adapter(self) -> DXtradeAdapter:
        adapter = DXtradeAdapter(credentials=self.credentials(), base_url=self.url)
        adapter.login()
        return adapter

    def failed_login(self) -> None:
        adapter = DXtradeAdapter(credentials=self.bad_credentials(), base_url=self.url)
        try:
            adapter.login()
        finally:
            adapter.close()

    def price_key(self) -> str:
        return self.tradable[1]  # the simulator keys prices by DXtrade symbol

    def unaffordable_request(self):
        return self.order_request(quantity=Decimal(10_000_000))
