"""Zerodha in the contract suite: signs in on the Kite simulator's login page like a browser."""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

from brokers.adapters import errors
from brokers.adapters.zerodha import ZerodhaAdapter
from brokers.simulators.kite import KiteSimulator

from .harness import BrokerHarness

APP = KiteSimulator.default_seed["apps"][0]
USER = KiteSimulator.default_seed["users"][0]


class Harness(BrokerHarness):
    code = "zerodha"
    simulator_name = "kite"
    adapter_class = ZerodhaAdapter
    tradable = ("NSE", "INFY")
    tradable_price = Decimal("1500")

    def credentials(self) -> dict[str, str]:
        return {"api_key": APP["api_key"], "api_secret": APP["api_secret"]}

    def bad_credentials(self) -> dict[str, str]:
        return {"api_key": APP["api_key"], "api_secret": "not-the-api-secret"}

    def adapter(self, credentials: dict[str, str] | None = None) -> ZerodhaAdapter:
        return ZerodhaAdapter(credentials=credentials or self.credentials(), base_url=self.url)

    def redirect_params(
        self, adapter: ZerodhaAdapter, *, state: str = "contract", user: dict | None = None
    ) -> dict[str, str]:
        """Open the adapter's login URL, submit the form, return the redirect's query params."""
        user = user or USER
        login_page = requests.get(
            adapter.login_url(state=state, redirect_url=APP["redirect_url"]), timeout=5
        )
        login_page.raise_for_status()
        form = _LoginForm.parse(login_page.text)
        fields = {**form.fields, "user_id": user["user_id"], "password": user["password"]}
        response = requests.post(
            urljoin(login_page.url, form.action), data=fields, allow_redirects=False, timeout=5
        )
        assert response.status_code == 302, response.text[:300]
        return dict(parse_qsl(urlsplit(response.headers["Location"]).query))

    def logged_in_adapter(self) -> ZerodhaAdapter:
        adapter = self.adapter()
        adapter.complete_login(self.redirect_params(adapter))
        return adapter

    def failed_login(self) -> None:
        # The user signs in fine, but the stored API secret is wrong: the checksum fails.
        adapter = self.adapter(self.bad_credentials())
        try:
            adapter.complete_login(self.redirect_params(adapter))
        finally:
            adapter.close()
        raise AssertionError("complete_login accepted a wrong API secret")  # pragma: no cover


class _LoginForm(HTMLParser):
    """The action and input values of the first form on a page."""

    def __init__(self):
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.in_form = False

    @classmethod
    def parse(cls, page: str) -> _LoginForm:
        form = cls()
        form.feed(page)
        if not form.action:
            raise errors.BrokerError("The Kite login page has no form.")
        return form

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and not self.action:
            self.action = attrs.get("action") or ""
            self.in_form = True
        elif tag == "input" and self.in_form and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
