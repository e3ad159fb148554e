"""A Redis cache that degrades to a miss when Redis is down, instead of failing the request.

The shared cache holds conveniences (throttle counters, API-key last use, cached instrument
lookups, "sync soon" markers); none of them may stop an order from being accepted while Redis is
unreachable. Reads answer the default, writes answer False (nothing stored), each failure is
logged. Callers that need a guarantee (the OAuth state's single use) treat False as "refused".
"""

from __future__ import annotations

import logging

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class ReusingRedisCacheClient(RedisCacheClient):
    """Django's client, but one ``redis.Redis`` per connection pool instead of one per call.

    Django builds a new ``redis.Redis`` for every cache operation, and redis-py's constructor
    copies its ~170 response callbacks each time: about 0.1 ms of CPU per call, several calls per
    API request. A ``redis.Redis`` is thread-safe over its pool, so one per pool serves them all.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class ResilientRedisCache(RedisCache):
    """RedisCache whose operations survive a Redis outage."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient

    def _degraded(self, operation: str, exc: Exception, fallback):
        logger.warning("Cache unavailable (%s: %s); carrying on without it", operation, exc)
        return fallback

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().add(key, value, timeout, version=version)
        except RedisError as exc:
            return self._degraded("add", exc, False)

    def add_many(self, keys, value, timeout=DEFAULT_TIMEOUT, version=None) -> list:
        """``add`` of each key, in one round trip (a pipeline of SET NX): the keys added."""
        backend_timeout = self.get_backend_timeout(timeout)
        if backend_timeout == 0:  # Redis has no SET with a zero expiry: add's own way
            return [key for key in keys if self.add(key, value, timeout, version=version)]
        made = {self.make_and_validate_key(key, version=version): key for key in keys}
        try:
            client = self._cache.get_client(write=True)
            data = self._cache._serializer.dumps(value)
            pipeline = client.pipeline(transaction=False)
            for key in made:
                pipeline.set(key, data, ex=backend_timeout, nx=True)
            added = pipeline.execute()
        except RedisError as exc:
            return self._degraded("add_many", exc, [])
        return [key for key, was_added in zip(made.values(), added, strict=True) if was_added]

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version=version)
        except RedisError as exc:
            return self._degraded("get", exc, default)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set(key, value, timeout, version=version)
        except RedisError as exc:
            return self._degraded("set", exc, False)

    def delete(self, key, version=None):
        try:
            return super().delete(key, version=version)
        except RedisError as exc:
            return self._degraded("delete", exc, False)

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version=version)
        except RedisError as exc:
            return self._degraded("get_many", exc, {})

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set_many(data, timeout, version=version)
        except RedisError as exc:
            return self._degraded("set_many", exc, list(data))

    def delete_many(self, keys, version=None):
        try:
            return super().delete_many(keys, version=version)
        except RedisError as exc:
            return self._degraded("delete_many", exc, None)

    def incr(self, key, delta=1, version=None):
        try:
            return super().incr(key, delta, version=version)
        except RedisError as exc:
            return self._degraded("incr", exc, delta)

    def has_key(self, key, version=None):
        try:
            return super().has_key(key, version=version)
        except RedisError as exc:
            return self._degraded("has_key", exc, False)


def cache_add_many(keys: list[str], value, timeout) -> list[str]:
    """``cache.add`` of each key: the keys added. One round trip where the cache can
    (ResilientRedisCache.add_many), one ``add`` per key elsewhere."""
    from django.core.cache import cache

    add_many = getattr(cache, "add_many", None)
    if add_many is not None:
        return add_many(keys, value, timeout)
    return [key for key in keys if cache.add(key, value, timeout)]
