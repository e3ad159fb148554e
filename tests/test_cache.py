"""``cache_add_many``: ``cache.add`` of many keys, in one round trip on Redis."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache

from algoways.cache import cache_add_many

requires_redis = pytest.mark.skipif(
    not django_settings.REDIS_URL, reason="needs Redis: set REDIS_URL (CI's PostgreSQL+Redis run)"
)


@pytest.fixture
def redis_cache(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "algoways.cache.ResilientRedisCache",
            "LOCATION": django_settings.REDIS_URL,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        }
    }


@pytest.fixture
def locmem_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture(params=[pytest.param("redis_cache", marks=requires_redis), "locmem_cache"])
def any_cache(request):
    """The shared cache on Redis (ResilientRedisCache.add_many) and on local memory (add)."""
    request.getfixturevalue(request.param)


def test_only_the_keys_not_there_are_added_and_given_back(any_cache):
    cache.add("b", "first", 60)

    added = cache_add_many(["a", "b", "c"], 1, 60)

    assert added == ["a", "c"]
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": "first", "c": 1}
    assert cache_add_many(["a", "c", "d"], 1, 60) == ["d"]


@requires_redis
def test_keys_added_on_redis_expire_after_their_timeout(redis_cache):
    cache_add_many(["short"], 1, 60)
    cache_add_many(["forever"], 1, None)

    client = cache._cache.get_client()
    assert 0 < client.ttl(cache.make_key("short")) <= 60
    assert client.ttl(cache.make_key("forever")) == -1  # kept, no expiry


def test_a_zero_timeout_adds_as_add_does_and_keeps_nothing(any_cache):
    assert cache_add_many(["gone"], 1, 0) == ["gone"]
    assert cache.get("gone") is None


def test_on_a_redis_that_is_down_nothing_is_added_and_the_outage_is_logged(redis_down, caplog):
    with caplog.at_level(logging.WARNING, logger="algoways.cache"):
        assert cache_add_many(["a", "b"], 1, 60) == []
    assert "Cache unavailable (add_many" in caplog.text
