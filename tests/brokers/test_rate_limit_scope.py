"""Outbound rate limits are spent per account, or per app where the broker counts per app."""

import pytest

from brokers import services
from brokers.rate_limits import _limiter, _parsed, limit_identity, throttle_for_account

FYERS_APP = {"client_id": "APP1-100", "secret_key": "not-a-real-secret", "pin": "1234"}


def fyers_account(team, label, **credentials):
    return services.broker_account_create(
        team=team, broker="fyers", label=label, credentials={**FYERS_APP, **credentials}
    )


@pytest.fixture(autouse=True)
def fresh_limiter():
    _limiter.cache_clear()
    yield
    _limiter.cache_clear()


def test_accounts_of_one_fyers_app_share_one_budget(team, other_team):
    first, second = fyers_account(team, "A"), fyers_account(other_team, "B")
    assert limit_identity(first) == limit_identity(second)
    assert "APP1-100" not in limit_identity(first)  # the app key is hashed, never stored
    per_second = _parsed(("10/second",))[0]
    spend = throttle_for_account(first)
    for _ in range(10):
        spend("default")
    # The second account, on the same app, finds the app's window already full.
    assert not _limiter().test(per_second, limit_identity(second), "default")


def test_a_different_app_has_its_own_budget(team):
    first = fyers_account(team, "A")
    other_app = fyers_account(team, "B", client_id="APP2-100")
    assert limit_identity(first) != limit_identity(other_app)


def test_brokers_that_count_per_account_keep_one_budget_per_account(team):
    kite = {"api_key": "kite-app", "api_secret": "not-a-real-secret"}
    one = services.broker_account_create(team=team, broker="zerodha", label="K1", credentials=kite)
    two = services.broker_account_create(team=team, broker="zerodha", label="K2", credentials=kite)
    assert limit_identity(one) != limit_identity(two)
