"""Celery's Redis transport sends its commands through one Redis client per pool
(algoways.celery_redis), and messages still go through, after a fork too."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from algoways import celery_redis
from algoways.celery import app

pytestmark = pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis://"),
    reason="needs Redis as Celery's broker: set CELERY_BROKER_URL (CI's PostgreSQL+Redis run)",
)


def commands_client(channel):
    with channel.conn_or_acquire() as client:
        return client


def test_publishing_reuses_one_redis_client_and_a_new_pool_gets_a_new_one():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, celery_redis.Channel)
        queue = connection.SimpleQueue(f"test-celery-redis-{uuid.uuid4().hex}")
        try:
            queue.put({"n": 1})
            first = commands_client(channel)
            queue.put({"n": 2})
            assert commands_client(channel) is first
            assert first.connection_pool is channel.pool

            channel._after_fork()  # what kombu runs in a forked child: the pools are replaced
            queue.put({"n": 3})
            after_fork = commands_client(channel)
            assert after_fork is not first
            assert after_fork.connection_pool is channel.pool

            received = [queue.get(timeout=5) for _ in range(3)]
            for message in received:
                message.ack()
            assert [message.payload["n"] for message in received] == [1, 2, 3]
        finally:
            queue.queue.delete()
            queue.close()


def test_a_client_passed_in_is_used_as_it_is():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        own = channel._create_client()
        with channel.conn_or_acquire(own) as client:
            assert client is own
