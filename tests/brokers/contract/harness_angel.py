"""Contract harness for Angel One SmartAPI, driving the Angel simulator."""

from __future__ import annotations

from decimal import Decimal

from brokers.adapters.angel import AngelAdapter
from brokers.adapters.base import OrderRequest
from brokers.simulators.angel import AngelSimulator

from .harness import BrokerHarness

SEED = AngelSimulator.default_seed


class Harness(BrokerHarness):
    code = "angel"
    simulator_name = "angel"
    adapter_class = AngelAdapter
    tradable = ("NSE", "INFY")
    tradable_price = Decimal("1500")

    def credentials(self) -> dict[str, str]:
        user = SEED["users"][0]
        return {
            "api_key": SEED["apps"][0]["api_key"],
            "client_code": user["client_code"],
            "mpin": user["mpin"],
            "totp_secret": user["totp_secret"],
        }

    def bad_credentials(self) -> dict[str, str]:
        return {**self.credentials(), "mpin": "0000"}

    def adapter(self, credentials: dict[str, str] | None = None) -> AngelAdapter:
        return AngelAdapter(credentials=credentials or self.credentials(), base_url=self.url)

    def logged_in_adapter(self) -> AngelAdapter:
        adapter = self.adapter()
        adapter.login()
        return adapter

    def failed_login(self) -> None:
        adapter = self.adapter(self.bad_credentials())
        try:
            adapter.login()
        finally:
            adapter.close()

    def order_request(self, **overrides) -> OrderRequest:
        # The platform fills Angel's trading symbol and token from its instrument master;
        # here they come from the simulator's seed.
        exchange = overrides.get("exchange", self.tradable[0])
        symbol = overrides.get("symbol", self.tradable[1])
        row = seed_instrument(exchange, symbol)
        if row is not None:
            overrides.setdefault("broker_symbol", row["symbol"])
            overrides.setdefault("broker_token", row["token"])
        return super().order_request(**overrides)

    def unknown_instrument_request(self) -> OrderRequest:
        return self.order_request(
            symbol="NOSUCHSYMBOL", broker_symbol="NOSUCHSYMBOL-EQ", broker_token="999999"
        )

    def price_key(self) -> str:
        exchange, symbol = self.tradable
        return f"{exchange}:{seed_instrument(exchange, symbol)['symbol']}"


def seed_instrument(exchange: str, symbol: str) -> dict | None:
    """The default seed's scrip-master row for ``symbol`` (SBIN finds SBIN-EQ)."""
    for row in SEED["instruments"]:
        if row["exch_seg"] == exchange and row["symbol"] in (symbol, f"{symbol}-EQ"):
            return row
    return None
