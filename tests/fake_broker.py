"""Tiny broker adapters for tests that need a registered broker but no broker's behaviour.

``registered_fake_brokers`` swaps the adapter registry for these adapters and restores the real
one afterwards, so tests never depend on which adapters ``settings.BROKER_ADAPTERS`` lists today.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import timedelta

from django.utils import timezone

from brokers.adapters import errors, registry
from brokers.adapters.base import AuthFlow, BrokerAdapter, CredentialField, Funds, SessionData

FAKE_OAUTH = "tests.fake_broker.FakeOAuthAdapter"
FAKE_CREDENTIALS = "tests.fake_broker.FakeCredentialsAdapter"
FAKE_PATHS = [FAKE_OAUTH, FAKE_CREDENTIALS]

#: The request token the fake OAuth broker hands back on a successful login.
GOOD_REQUEST_TOKEN = "good-request-token"
#: A port nothing listens on: a login there fails with a connection error.
UNREACHABLE_URL = "http://127.0.0.1:9"


class FakeOAuthAdapter(BrokerAdapter):
    """An OAuth-redirect broker whose login page echoes the state back."""

    code = "fakeoauth"
    name = "Fake OAuth Broker"
    auth_flow = AuthFlow.OAUTH_REDIRECT
    credential_fields = (
        CredentialField("api_key", "API key"),
        CredentialField("api_secret", "API secret", secret=True),
    )
    has = {"oauth_login": True, "funds": True, "place_order": False}
    production_base_url = "https://fake-oauth.example"

    def login_url(self, *, state: str, redirect_url: str) -> str:
        return f"{self.base_url}/connect/login?api_key={self.credentials['api_key']}&state={state}"

    def complete_login(self, params: Mapping[str, str], *, redirect_url: str = "") -> SessionData:
        if params.get("request_token") != GOOD_REQUEST_TOKEN:
            raise errors.InvalidCredentials("The broker refused the request token.")
        now = timezone.now()
        return SessionData(
            access_token=f"access-for-{self.credentials['api_key']}",
            issued_at=now,
            expires_at=now + timedelta(hours=8),
        )

    def logout(self) -> None:
        return None

    def funds(self) -> Funds:
        return Funds(total=1, available=1, used_margin=0, currency="INR")


class FakeCredentialsAdapter(BrokerAdapter):
    """A credentials broker that really sends the password over HTTP to its base URL."""

    code = "fakecreds"
    name = "Fake Credentials Broker"
    auth_flow = AuthFlow.CREDENTIALS
    credential_fields = (
        CredentialField("username", "Username"),
        CredentialField("password", "Password", secret=True),
    )
    has = {"credentials_login": True}
    production_base_url = UNREACHABLE_URL

    def login(self) -> SessionData:
        response = self._request(
            "POST",
            "/login",
            category="login",
            json={
                "username": self.credentials["username"],
                "password": self.credentials["password"],
            },
        )
        if response.status_code != 200:
            raise errors.InvalidCredentials("Wrong username or password.")
        return SessionData(access_token=self._json(response)["token"])


@contextlib.contextmanager
def registered_fake_brokers(paths: list[str] | None = None):
    """Load ``paths`` (default: the fake adapters) into the registry; restore it afterwards."""
    saved = registry._registry
    registry.load(FAKE_PATHS if paths is None else paths)
    try:
        yield
    finally:
        registry._registry = saved
