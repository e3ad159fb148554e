"""Prefer: wait — the request learns of the broker's answer by Redis pub/sub, or by polling."""

import threading
import time

import pytest
import redis

from orders import notify, services
from orders.models import Order, OrderStatus

from .conftest import spec

REDIS_URL = "redis://127.0.0.1:6379/15"


def redis_reachable() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


def answer_later(order_id: int, *, publish: bool) -> threading.Thread:
    def run():
        from django.db import connection

        time.sleep(0.3)
        Order.objects.filter(pk=order_id).update(status=OrderStatus.OPEN)
        if publish:
            notify.orders_settled([order_id])
        connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def pending_order(team, paper_account):
    order, _ = services.order_place(team=team, account=paper_account, spec=spec(), enqueue=False)
    return order


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_wait_wakes_on_the_redis_publish(pending_order, settings):
    if not redis_reachable():
        pytest.skip("needs a Redis server at 127.0.0.1:6379")
    settings.REDIS_URL = REDIS_URL
    notify._redis.cache_clear()
    try:
        started = time.monotonic()
        thread = answer_later(pending_order.pk, publish=True)
        order = notify.order_wait(pending_order.pk, 5)
        elapsed = time.monotonic() - started
        thread.join()
    finally:
        notify._redis.cache_clear()
    assert order.status == OrderStatus.OPEN
    assert elapsed < 0.9  # woken by the message, not by the once-a-second look


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_wait_without_redis_polls_with_backoff(pending_order, settings):
    settings.REDIS_URL = ""
    started = time.monotonic()
    thread = answer_later(pending_order.pk, publish=False)
    order = notify.order_wait(pending_order.pk, 5)
    elapsed = time.monotonic() - started
    thread.join()
    assert order.status == OrderStatus.OPEN
    assert elapsed < 1.5


def test_wait_gives_up_at_its_timeout(pending_order, settings):
    settings.REDIS_URL = ""
    started = time.monotonic()
    order = notify.order_wait(pending_order.pk, 0.3)
    assert order.status == OrderStatus.PENDING
    assert 0.3 <= time.monotonic() - started < 1.0
