"""Outbound rate limits per broker account, shared by every worker on every machine.

Each adapter declares its broker's documented limits per category (``rate_limits``). Before a
request the adapter calls the throttle built here, which waits for a slot rather than failing.
Counters live in Redis when ``REDIS_URL`` is set (``limits``' Redis storage); without Redis the
platform runs on one machine, and ``limits``' in-memory storage serves that single process.
"""

from __future__ import annotations

import time
from functools import lru_cache

from django.conf import settings
from limits import parse_many
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

#: Longest we wait for a slot in one call before giving up with RateLimited.
MAX_WAIT_SECONDS = 30.0


@lru_cache(maxsize=1)
def _limiter() -> MovingWindowRateLimiter:
    storage: Storage = RedisStorage(settings.REDIS_URL) if settings.REDIS_URL else MemoryStorage()
    return MovingWindowRateLimiter(storage)


@lru_cache(maxsize=256)
def _parsed(limit_strings: tuple[str, ...]):
    return [item for text in limit_strings for item in parse_many(text)]


def throttle_for_account(account):
    """A ``throttle(category)`` callable for one account: blocks until every limit has room."""
    adapter_class = account.adapter_class
    limits_by_category = adapter_class.rate_limits
    identity = f"{adapter_class.code}:{account.pk}"

    def throttle(category: str) -> None:
        limit_strings = limits_by_category.get(category) or limits_by_category.get("default")
        if not limit_strings:
            return
        acquire(identity, category, _parsed(tuple(limit_strings)))

    return throttle


def acquire(identity: str, category: str, items) -> None:
    from .adapters.errors import RateLimited

    limiter = _limiter()
    deadline = time.monotonic() + MAX_WAIT_SECONDS
    while True:
        blocked = [item for item in items if not limiter.test(item, identity, category)]
        if not blocked:
            # hit() on every window; a concurrent caller may win the last slot, so re-check.
            if all(limiter.hit(item, identity, category) for item in items):
                return
            continue
        reset_at = max(
            limiter.get_window_stats(item, identity, category).reset_time for item in blocked
        )
        wait = max(0.01, min(reset_at - time.time(), 1.0))
        if time.monotonic() + wait > deadline:
            raise RateLimited("Waited too long for a rate-limit slot.", retry_after=None)
        time.sleep(wait)
