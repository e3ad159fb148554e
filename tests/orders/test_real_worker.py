"""The order pipeline with real processes: PostgreSQL, Redis, a Celery worker, a broker over HTTP.

The API runs in the test process and publishes to a private Redis server after commit; a real
``celery worker`` subprocess sends the orders to the Match-Trader simulator on loopback. Every
test ends with the simulator's ledger: each acknowledged order reached the broker exactly once,
and nothing reached it that nobody asked for.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Role
from brokers.services import broker_account_connect, broker_account_create
from brokers.simulators.base import RunningSimulator
from brokers.simulators.matchtrade import MatchTraderSimulator
from orders import tasks
from orders.models import Order, OrderStatus

from .worker import CeleryWorker, RedisServer, celery_publishing_to, database_url, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

S = OrderStatus
NOT_ANSWERED = {S.PENDING, S.SUBMITTING, S.UNKNOWN}
CREDENTIALS = {
    "email": "trader@example.com",
    "password": "Sim-Pass-2024",
    "broker_id": "0",
    "trading_account_id": "700100",
}


class MatchTrader:
    """The Match-Trader simulator on loopback, with a balance no test can run out of."""

    def __init__(self):
        seed = copy.deepcopy(MatchTraderSimulator.default_seed)
        for user in seed["users"]:
            for account in user["accounts"]:
                account["balance"] = "100000000"
        self.simulator = MatchTraderSimulator(seed)
        self.running = RunningSimulator(self.simulator)
        self.url = self.running.url

    def control(self, action: str, payload: dict | None = None) -> None:
        requests.post(
            f"{self.url}/__sim__/{action}", json=payload or {}, timeout=5
        ).raise_for_status()

    def faults(self, **faults) -> None:
        self.control("faults", faults)

    def ledger(self) -> list[dict]:
        return requests.get(f"{self.url}/__sim__/ledger", timeout=5).json()["orders"]

    def requests_to(self, fragment: str) -> int:
        return sum(1 for _, _, path in list(self.simulator.requests_seen) if fragment in path)


@pytest.fixture(scope="module")
def redis_server():
    if not RedisServer.available():
        pytest.skip("needs redis-server on PATH: these tests run a private Redis they can stop")
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def matchtrade_simulator():
    simulator = MatchTrader()
    yield simulator
    simulator.running.stop()


@pytest.fixture
def matchtrade(matchtrade_simulator):
    matchtrade_simulator.control("reset")
    return matchtrade_simulator


@pytest.fixture
def account(team, matchtrade):
    account = broker_account_create(
        team=team,
        broker="matchtrade",
        label="MTR 1",
        credentials=CREDENTIALS,
        base_url=matchtrade.url,
    )
    broker_account_connect(account=account)
    return account


@pytest.fixture
def api_key(team, member, api_client_for):
    return api_client_for(member(team, Role.TRADER)).api_key


@pytest.fixture
def start_worker(transactional_db, redis_server, settings, eager_celery):
    """``start_worker(**env)`` -> a running CeleryWorker; all are stopped at teardown.

    Depends on ``transactional_db`` so that the workers stop before the tables are flushed, and
    on ``eager_celery`` so that publishing for real is switched on after it.
    """
    redis_server.flush()
    # The in-process sweeper uses the same short timings as the workers.
    settings.ORDERS_STUCK_PENDING_SECONDS = 1
    settings.ORDERS_RECONCILE_GRACE_SECONDS = 1
    settings.BROKER_CONNECT_TIMEOUT = 1
    settings.BROKER_READ_TIMEOUT = 5
    env = {
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": redis_server.url(0),
        "CELERY_BROKER_URL": redis_server.url(1),
    }
    workers: list[CeleryWorker] = []

    def start(**overrides) -> CeleryWorker:
        worker = CeleryWorker(env={**env, **overrides})
        workers.append(worker)
        return worker.start()

    with celery_publishing_to(redis_server.url(1)):
        try:
            yield start
        finally:
            for worker in workers:
                worker.stop()
                print(f"--- worker {worker.name} log ---\n{worker.log()}")  # shown on failure
                worker.cleanup()


def client_for(api_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    return client


def order_body(account, **overrides) -> dict:
    body = {
        "account": account.pk,
        "symbol": "XAUUSD",
        "exchange": "MTR",
        "side": "BUY",
        "quantity": "0.01",
        "order_type": "MARKET",
    }
    body.update(overrides)
    return body


def post_orders(api_key: str, account, count: int) -> list[int]:
    client = client_for(api_key)
    ids = []
    for _ in range(count):
        response = client.post("/api/orders/", order_body(account), format="json")
        assert response.status_code == 202, response.data
        ids.append(response.data["id"])
    return ids


def in_threads(count: int, work) -> list:
    def run(index):
        try:
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def answered(order_ids: list[int], *, timeout: float = 30.0, sweep: bool = False) -> list[Order]:
    """Wait until none of the orders awaits the broker's answer; run the sweeper if asked."""

    def check():
        if sweep:
            tasks.stuck_orders_sweep_task()  # in process; it queues its work to the worker
        orders = list(Order.objects.filter(pk__in=order_ids).order_by("pk"))
        return orders if all(o.status not in NOT_ANSWERED for o in orders) else None

    statuses = lambda: dict(Order.objects.filter(pk__in=order_ids).values_list("pk", "status"))  # noqa: E731
    try:
        return wait_until(check, timeout=timeout, interval=0.5 if sweep else 0.1)
    except AssertionError:
        raise AssertionError(f"Orders still unanswered after {timeout}s: {statuses()}") from None


def assert_each_reached_the_broker_once(simulator: MatchTrader, orders: list[Order]) -> None:
    """Every order is in the ledger exactly once, and the ledger holds nothing else."""
    tags = Counter(row["client_tag"] for row in simulator.ledger())
    expected = Counter(order.client_order_id for order in orders)
    assert tags == expected


def test_twenty_concurrent_posts_with_one_idempotency_key_reach_the_broker_once(
    start_worker, account, api_key, matchtrade
):
    start_worker()
    body = order_body(account)

    def post(_):
        response = client_for(api_key).post(
            "/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="one-key"
        )
        return response.status_code, response.data

    results = in_threads(20, post)
    assert {status for status, _ in results} <= {202, 409}, results
    assert len({data["id"] for status, data in results if status == 202}) == 1
    assert Order.objects.count() == 1
    [order] = answered([Order.objects.get().pk])
    assert order.status == S.FILLED
    assert_each_reached_the_broker_once(matchtrade, [order])


def test_worker_killed_mid_submit_the_order_still_settles_once(
    start_worker, account, api_key, matchtrade
):
    worker = start_worker()
    matchtrade.faults(slow_ms=3000)  # the worker sits inside the broker call
    [order_id] = post_orders(api_key, account, 1)
    wait_until(
        lambda: matchtrade.requests_to("position/open"),
        timeout=20,
        message=f"The order never left the worker:\n{worker.log()}",
    )
    time.sleep(0.5)
    worker.kill9()
    assert Order.objects.get(pk=order_id).status == S.SUBMITTING

    matchtrade.faults(slow_ms=0)
    start_worker()
    # The killed worker's message is unacked until the visibility timeout: the sweeper finds
    # the order SUBMITTING past the reconcile grace and asks the broker instead of resending.
    [order] = answered([order_id], timeout=45, sweep=True)
    assert order.status == S.FILLED
    assert order.events.filter(to_status=S.SUBMITTING).count() == 1
    assert_each_reached_the_broker_once(matchtrade, [order])


def test_accepted_then_hung_order_goes_unknown_then_reconciled_once(
    start_worker, account, api_key, matchtrade
):
    start_worker(BROKER_READ_TIMEOUT="1.5")
    matchtrade.faults(hang_next_orders=1, hang_seconds=4)
    [order_id] = post_orders(api_key, account, 1)
    [order] = answered([order_id], timeout=30)
    assert order.status == S.FILLED
    path = list(order.events.order_by("pk").values_list("to_status", flat=True))
    assert path[:3] == [S.PENDING, S.SUBMITTING, S.UNKNOWN], path
    assert order.events.filter(to_status=S.SUBMITTING).count() == 1
    assert_each_reached_the_broker_once(matchtrade, [order])


def test_orders_accepted_while_redis_is_down_are_sent_once_it_returns(
    start_worker, account, api_key, matchtrade, redis_server
):
    start_worker()
    redis_server.stop()
    order_ids = post_orders(api_key, account, 5)  # 202: publishing failed after commit
    assert set(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True)) == {
        S.PENDING
    }
    assert matchtrade.ledger() == []

    redis_server.start()
    orders = answered(order_ids, timeout=60, sweep=True)
    assert {order.status for order in orders} == {S.FILLED}
    assert_each_reached_the_broker_once(matchtrade, orders)


def test_429_storm_every_order_placed_none_twice(start_worker, account, api_key, matchtrade):
    start_worker()
    matchtrade.faults(rate_limit_burst=30, retry_after=1)
    order_ids = post_orders(api_key, account, 10)
    orders = answered(order_ids, timeout=60)
    assert {order.status for order in orders} == {S.FILLED}
    assert matchtrade.requests_to("position/open") > len(order_ids)  # the storm was felt
    assert_each_reached_the_broker_once(matchtrade, orders)
    assert Decimal(sum(o.quantity for o in orders)) == Decimal("0.10")


def accounts_at_matchtrade(team, first, matchtrade, count: int) -> list:
    """``first`` and more accounts of the team on the simulator, ``count`` in all."""
    accounts = [first]
    for index in range(2, count + 1):
        extra = broker_account_create(
            team=team,
            broker="matchtrade",
            label=f"MTR {index}",
            credentials=CREDENTIALS,
            base_url=matchtrade.url,
        )
        broker_account_connect(account=extra)
        accounts.append(extra)
    return accounts


def post_group(api_key: str, accounts: list) -> list[int]:
    body = {"accounts": [a.pk for a in accounts], "order": order_body(accounts[0])}
    del body["order"]["account"]
    response = client_for(api_key).post("/api/order-groups/", body, format="json")
    assert response.status_code == 202, response.data
    order_ids = list(
        Order.objects.filter(group_id=response.data["id"]).values_list("pk", flat=True)
    )
    assert len(order_ids) == len(accounts)
    return order_ids


def test_fan_out_from_a_fresh_worker_reaches_each_account_once(
    start_worker, team, account, api_key, matchtrade
):
    # A fresh worker's first broker calls are the group's, from many threads at once.
    accounts = accounts_at_matchtrade(team, account, matchtrade, 10)
    start_worker()
    orders = answered(post_group(api_key, accounts), timeout=30)
    assert {order.status for order in orders} == {S.FILLED}
    assert_each_reached_the_broker_once(matchtrade, orders)


def test_worker_killed_mid_fan_out_every_child_settles_once(
    start_worker, team, account, api_key, matchtrade
):
    """The children were claimed together and were all at the broker when the worker died."""
    accounts = accounts_at_matchtrade(team, account, matchtrade, 6)
    worker = start_worker()
    matchtrade.faults(slow_ms=3000)  # the worker's threads sit inside the broker calls
    order_ids = post_group(api_key, accounts)
    wait_until(
        lambda: matchtrade.requests_to("position/open") >= len(accounts),
        timeout=20,
        message=f"The children never left the worker:\n{worker.log()}",
    )
    time.sleep(0.5)
    worker.kill9()
    statuses = set(Order.objects.filter(pk__in=order_ids).values_list("status", flat=True))
    assert statuses == {S.SUBMITTING}

    matchtrade.faults(slow_ms=0)
    start_worker()
    orders = answered(order_ids, timeout=60, sweep=True)
    assert {order.status for order in orders} == {S.FILLED}
    assert all(order.events.filter(to_status=S.SUBMITTING).count() == 1 for order in orders)
    assert_each_reached_the_broker_once(matchtrade, orders)
