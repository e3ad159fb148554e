"""Order tests: real brokers only (the paper broker in process, the DXtrade simulator on
loopback), Celery in eager mode, and a hook that skips ``@pytest.mark.postgres`` tests on SQLite."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests
from django.db import connection

from brokers import paper
from brokers.models import PaperOrder
from brokers.rate_limits import _limiter
from brokers.services import broker_account_connect, broker_account_create
from brokers.simulators import simulator_class
from brokers.simulators.base import RunningSimulator
from orders.services import OrderSpec
from tests.celery_helpers import celery_eager

INFY_PRICE = Decimal("1500")


def pytest_runtest_setup(item):
    """Skip ``@pytest.mark.postgres`` tests on SQLite before any database fixture runs."""
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: row locks and concurrent transactions (SQLite has neither)")


@pytest.fixture(autouse=True)
def eager_celery():
    """Tasks run inline when queued (after commit), as a worker would run them."""
    with celery_eager():
        yield


@pytest.fixture(autouse=True)
def _fresh_limiter():
    """A rate limiter built for this test's settings (the root conftest gives each test its own
    cache namespace; never ``cache.clear()``: on Redis that flushes other test processes' keys)."""
    _limiter.cache_clear()
    yield
    _limiter.cache_clear()


@pytest.fixture
def paper_account(team):
    paper.paper_price_set(exchange="NSE", symbol="INFY", price=INFY_PRICE)
    return paper.paper_account_ensure(team=team, label="Paper 1")


@pytest.fixture
def paper_account_factory(team):
    paper.paper_price_set(exchange="NSE", symbol="INFY", price=INFY_PRICE)

    def make(label: str, *, for_team=None):
        return paper.paper_account_ensure(team=for_team or team, label=label)

    return make


def paper_orders(account) -> list[PaperOrder]:
    """The paper broker's own book for ``account``: what reached the broker."""
    return list(PaperOrder.objects.filter(book__broker_account=account).order_by("pk"))


def spec(**overrides) -> OrderSpec:
    fields = dict(
        symbol="INFY",
        exchange="NSE",
        side="BUY",
        quantity=Decimal(10),
        order_type="MARKET",
    )
    fields.update(overrides)
    return OrderSpec(**fields)


def order_body(account, **overrides) -> dict:
    body = {
        "account": account.pk,
        "symbol": "INFY",
        "exchange": "NSE",
        "side": "BUY",
        "quantity": "10",
        "order_type": "MARKET",
    }
    body.update(overrides)
    return body


# The DXtrade simulator: a broker over real HTTP, with fault injection ---------------------------


class DXtrade:
    """A running DXtrade simulator and helpers to drive its faults and read its ledger."""

    symbol = "XAU/USD"
    credentials = {
        "username": "trader1",
        "domain": "default",
        "password": "dx-pass-1",
        "account": "default:1210008442",
    }

    def __init__(self):
        self.running = RunningSimulator(simulator_class("dxtrade")())

    @property
    def url(self) -> str:
        return self.running.url

    def control(self, action: str, payload: dict | None = None) -> None:
        requests.post(
            f"{self.url}/__sim__/{action}", json=payload or {}, timeout=5
        ).raise_for_status()

    def faults(self, **faults) -> None:
        self.control("faults", faults)

    def ledger(self) -> list[dict]:
        return requests.get(f"{self.url}/__sim__/ledger", timeout=5).json()["orders"]

    def ledger_for(self, client_order_id: str) -> list[dict]:
        return [row for row in self.ledger() if row["client_tag"] == client_order_id]

    def spec(self, **overrides) -> OrderSpec:
        fields = dict(
            symbol=self.symbol, exchange="FX", side="BUY", quantity=Decimal(1), order_type="MARKET"
        )
        fields.update(overrides)
        return OrderSpec(**fields)


@pytest.fixture(scope="session")
def dxtrade_simulator():
    simulator = DXtrade()
    yield simulator
    simulator.running.stop()


@pytest.fixture
def dxtrade(dxtrade_simulator):
    dxtrade_simulator.control("reset")
    return dxtrade_simulator


@pytest.fixture
def dxtrade_account(team, dxtrade):
    account = broker_account_create(
        team=team,
        broker="dxtrade",
        label="DX 1",
        credentials=DXtrade.credentials,
        base_url=dxtrade.url,
    )
    broker_account_connect(account=account)
    return account
