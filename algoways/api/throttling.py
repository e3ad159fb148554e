"""Request throttles per API key and per signed-in user, counted atomically in Redis.

Each request spends one hit of a ``limits`` sliding-window counter: two integers per identity,
updated by one Lua script in Redis, so a request costs O(1) whatever the rate and concurrent
requests on every machine are all counted. (DRF's ``SimpleRateThrottle`` kept a list of every
timestamp in the cache and wrote it back non-atomically: tens of KB per request at 6000/min, and
lost counts under concurrency.) Rates stay in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, in
DRF's format ("6000/min").

A Redis outage never stops a request: the throttle logs a warning and lets it through.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from accounts.models import TeamAPIKey

logger = logging.getLogger(__name__)

# DRF reads only the period's first letter: "s", "sec", "second" are all seconds.
RATE_PERIODS = {
    "s": RateLimitItemPerSecond,
    "m": RateLimitItemPerMinute,
    "h": RateLimitItemPerHour,
    "d": RateLimitItemPerDay,
}

# What a throttle may raise when Redis is unreachable; the storage wraps redis-py's errors in
# StorageError, RedisError is here should one escape the wrapping.
STORAGE_ERRORS = (StorageError, RedisError)


@lru_cache(maxsize=1)
def _build_limiter() -> SlidingWindowCounterRateLimiter:
    if settings.REDIS_URL:
        storage = RedisStorage(
            settings.REDIS_URL,
            wrap_exceptions=True,
            # As the cache's: a Redis that does not answer costs a request little time.
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
        )
    else:
        # Per process, like the local-memory cache it stands beside: the single-machine
        # development default only. Several processes would each allow the full rate.
        storage = MemoryStorage()
    return SlidingWindowCounterRateLimiter(storage)


_limiter_lock = threading.Lock()


def _limiter() -> SlidingWindowCounterRateLimiter:
    # One builder at a time: limits checks its storage's driver version lazily and not
    # thread-safely (see brokers/rate_limits.py), and a fresh process serves requests on
    # several threads at once.
    with _limiter_lock:
        return _build_limiter()


_limiter.cache_clear = _build_limiter.cache_clear


@lru_cache(maxsize=16)
def parse_rate(rate: str) -> RateLimitItem:
    """A DRF rate ("6000/min", "10/s", "100/day") as a ``limits`` item."""
    num, _, period = rate.partition("/")
    try:
        return RATE_PERIODS[period[:1]](int(num))
    except (KeyError, ValueError):
        raise ImproperlyConfigured(
            f"Throttle rate {rate!r} is not <number>/<s|sec|m|min|h|hour|d|day>."
        ) from None


class LimitsRateThrottle(BaseThrottle):
    """A DRF throttle that spends one hit of a shared sliding-window counter per request."""

    scope: str

    def __init__(self):
        self.refused: tuple[RateLimitItem, str] | None = None

    def get_identity(self, request) -> str | None:
        """Whose budget the request spends, or None when this throttle does not apply."""
        raise NotImplementedError

    def get_rate(self) -> RateLimitItem | None:
        # Read at request time, not at import as SimpleRateThrottle.THROTTLE_RATES is, so a
        # changed REST_FRAMEWORK setting (and override_settings) takes effect at once.
        try:
            rate = api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No default throttle rate set for {self.scope!r}") from None
        return None if rate is None else parse_rate(rate)

    def allow_request(self, request, view) -> bool:
        item = self.get_rate()
        identity = self.get_identity(request)
        if item is None or identity is None:
            return True
        try:
            # One atomic round trip: hit() both checks the window and spends from it.
            allowed = _limiter().hit(item, identity)
        except STORAGE_ERRORS as exc:
            logger.warning("Throttle storage unavailable (%s); not throttling %s", exc, identity)
            return True
        if not allowed:
            self.refused = (item, identity)
        return allowed

    def wait(self) -> float | None:
        """Seconds until the refused request's window has room: DRF's ``Retry-After``."""
        if self.refused is None:
            return None
        item, identity = self.refused
        try:
            reset_at = _limiter().get_window_stats(item, identity).reset_time
        except STORAGE_ERRORS as exc:
            logger.warning("Throttle storage unavailable (%s); answering the longest wait", exc)
            return float(item.get_expiry())
        # At least a second: DRF leaves out a Retry-After of 0, and the client would retry at once.
        return max(reset_at - time.time(), 1.0)


class ApiKeyRateThrottle(LimitsRateThrottle):
    """API-key calls, one budget per key."""

    scope = "api_key"

    def get_identity(self, request) -> str | None:
        if isinstance(request.auth, TeamAPIKey):
            # The prefix is public (listed in the console), never the secret part of the key;
            # "api:" keeps these counters apart from the broker limits ("matchtrade:12").
            return f"api:{self.scope}:{request.auth.prefix}"
        return None


class UserRateThrottle(LimitsRateThrottle):
    """Session users (the console, the browsable API); API-key calls count under their key."""

    scope = "user"

    def get_identity(self, request) -> str | None:
        if isinstance(request.auth, TeamAPIKey) or not request.user.is_authenticated:
            return None
        return f"api:{self.scope}:{request.user.pk}"
