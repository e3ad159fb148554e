"""Prefer: wait — the request learns of the broker's answer by a Redis signal, or by polling."""

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


def wait_answered_later(order_id: int, *, publish: bool) -> tuple[Order, float]:
    """order_wait (5 s) while answer_later answers the order: the order and seconds waited."""
    started = time.monotonic()
    thread = answer_later(order_id, publish=publish)
    order = notify.order_wait(order_id, 5)
    elapsed = time.monotonic() - started
    thread.join()
    return order, elapsed


@pytest.fixture
def blpop_answers(redis_signals, monkeypatch) -> list:
    """What each BLPOP of the waits returned: the signal, or None when its second ran out."""
    client = notify._redis()
    answers = []
    blpop = client.blpop

    def recorded(*args, **kwargs):
        answers.append(blpop(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(client, "blpop", recorded)
    return answers


@pytest.fixture
def pending_order(team, paper_account):
    order, _ = services.order_place(team=team, account=paper_account, spec=spec(), enqueue=False)
    return order


@pytest.fixture
def redis_signals(settings):
    if not redis_reachable():
        pytest.skip("needs a Redis server at 127.0.0.1:6379")
    settings.REDIS_URL = REDIS_URL
    notify._redis.cache_clear()
    yield redis.Redis.from_url(REDIS_URL)
    notify._redis.cache_clear()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_wait_wakes_on_the_redis_signal(pending_order, redis_signals, blpop_answers):
    order, _ = wait_answered_later(pending_order.pk, publish=True)
    assert order.status == OrderStatus.OPEN
    assert blpop_answers[-1] is not None  # woken by the signal, not by the once-a-second look
    # The signal was taken; one nobody takes expires.
    assert redis_signals.llen(notify.signal_key(pending_order.pk)) == 0
    notify.orders_settled([pending_order.pk + 10**9])
    assert 0 < redis_signals.ttl(notify.signal_key(pending_order.pk + 10**9)) <= 30


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_signal_sent_before_the_wait_began_wakes_it_at_once(
    pending_order, redis_signals, blpop_answers
):
    Order.objects.filter(pk=pending_order.pk).update(status=OrderStatus.OPEN)
    notify.orders_settled([pending_order.pk])
    order = notify.order_wait(pending_order.pk, 5)
    assert order.status == OrderStatus.OPEN
    assert len(blpop_answers) == 1 and blpop_answers[0] is not None  # the first BLPOP had it


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_answer_whose_signal_was_lost_is_seen_within_about_a_second(
    pending_order, redis_signals
):
    order, elapsed = wait_answered_later(pending_order.pk, publish=False)
    assert order.status == OrderStatus.OPEN
    assert 0.9 <= elapsed < 2.5  # the once-a-second look, not the 5 s timeout


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_waiting_requests_share_pooled_redis_connections(
    team, paper_account, redis_signals, monkeypatch
):
    opened = []

    def on_connect(connection) -> None:  # redis-py's hook for every (re)connect of a connection
        opened.append(connection)
        connection.on_connect()

    pool = notify._redis().connection_pool  # a new client (the fixture), nothing connected yet
    monkeypatch.setitem(pool.connection_kwargs, "redis_connect_func", on_connect)

    for _ in range(10):
        order, _ = services.order_place(
            team=team, account=paper_account, spec=spec(), enqueue=False
        )
        thread = answer_later(order.pk, publish=True)
        assert notify.order_wait(order.pk, 5).status == OrderStatus.OPEN
        thread.join()
    # Ten waits one after another: one pooled connection for the waits, one for the signals
    # sent meanwhile from this same process (pub/sub connected anew for every wait).
    assert len(opened) == 2


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_wait_without_redis_polls_with_backoff(pending_order, settings):
    settings.REDIS_URL = ""
    order, elapsed = wait_answered_later(pending_order.pk, publish=False)
    assert order.status == OrderStatus.OPEN
    assert elapsed < 1.5


def test_wait_gives_up_at_its_timeout(pending_order, settings):
    settings.REDIS_URL = ""
    started = time.monotonic()
    order = notify.order_wait(pending_order.pk, 0.3)
    assert order.status == OrderStatus.PENDING
    assert 0.3 <= time.monotonic() - started < 1.0
