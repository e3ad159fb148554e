"""Contract harness for Fyers: drives the simulator's login page like a browser would."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import requests

from brokers.adapters.fyers import FyersAdapter
from brokers.simulators.fyers import FyersSimulator

from .harness import BrokerHarness

APP = FyersSimulator.default_seed["apps"][0]
USER = FyersSimulator.default_seed["users"][0]


class Harness(BrokerHarness):
    code = "fyers"
    simulator_name = "fyers"
    adapter_class = FyersAdapter
    tradable = ("NSE", "INFY")
    tradable_price = Decimal("1500")

    def credentials(self) -> dict[str, str]:
        return {"client_id": APP["client_id"], "secret_key": APP["secret_key"], "pin": USER["pin"]}

    def bad_credentials(self) -> dict[str, str]:
        return {**self.credentials(), "secret_key": "WRONGSECRET"}

    def adapter(self, credentials: dict[str, str] | None = None) -> FyersAdapter:
        return FyersAdapter(credentials=credentials or self.credentials(), base_url=self.url)

    def authorize_in_browser(self, adapter: FyersAdapter, state: str = "st4te") -> dict[str, str]:
        """Open the login page, submit the Fyers id and PIN, return the redirect's query."""
        redirect_uri = APP["redirect_uri"]
        page = requests.get(adapter.login_url(state=state, redirect_url=redirect_uri), timeout=5)
        page.raise_for_status()
        assert 'name="pin"' in page.text
        response = requests.post(
            f"{self.url}/api/v3/generate-authcode",
            data={
                "client_id": adapter.credentials["client_id"],
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "state": state,
                "fyers_id": USER["fyers_id"],
                "pin": USER["pin"],
            },
            allow_redirects=False,
            timeout=5,
        )
        assert response.status_code == 302, response.text
        location = response.headers["Location"]
        assert location.startswith(redirect_uri)
        return dict(parse_qsl(urlsplit(location).query))

    def logged_in_adapter(self) -> FyersAdapter:
        adapter = self.adapter()
        params = self.authorize_in_browser(adapter)
        adapter.complete_login(params, redirect_url=APP["redirect_uri"])
        return adapter

    def failed_login(self) -> None:
        # A real auth code, exchanged with the wrong app secret (appIdHash refused).
        params = self.authorize_in_browser(self.adapter())
        self.adapter(self.bad_credentials()).complete_login(
            params, redirect_url=APP["redirect_uri"]
        )

    def price_key(self) -> str:
        exchange, symbol = self.tradable
        return f"{exchange}:{symbol}-EQ"  # the simulator keys prices by Fyers symbol
