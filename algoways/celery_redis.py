"""kombu's Redis transport, with one ``redis.Redis`` per channel's pool for its commands.

kombu builds a new ``redis.Redis`` for every command it sends outside its polling loop (each
task published, each queue length read), and redis-py's constructor copies its ~170 response
callbacks each time: 0.18 ms of CPU per publish on the benchmark machine, more than the LPUSH
itself (0.11 ms), on every order accepted. A ``redis.Redis`` holds no connection of its own and is
thread-safe over its pool, so one per pool serves every command. kombu replaces a channel's pool
after a fork and when the channel closes; a new pool gets a new client.

Settings select it for ``redis://`` and ``rediss://`` broker URLs (``CELERY_BROKER_TRANSPORT``).
"""

from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis


class Channel(redis.Channel):
    _commands_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        pool = self.pool
        if self._commands_client is None or self._commands_client.connection_pool is not pool:
            self._commands_client = self._create_client()
        yield self._commands_client


class Transport(redis.Transport):
    Channel = Channel
