"""Outbound rate limits per broker account, shared by every worker on every machine.

Each adapter declares its broker's documented limits per category (``rate_limits``). Before a
request the adapter calls the throttle built here, which waits for a slot rather than failing.
Counters live in Redis when ``REDIS_URL`` is set (``limits``' Redis storage, moving windows);
without Redis they live in the database (``DatabaseStorage`` below, fixed windows), so every
worker process still shares them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from functools import lru_cache

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from limits import parse_many
from limits.storage import RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

#: Longest we wait for a slot in one call before giving up with RateLimited.
MAX_WAIT_SECONDS = 30.0


@lru_cache(maxsize=1)
def _build_limiter() -> RateLimiter:
    if settings.REDIS_URL:
        return MovingWindowRateLimiter(RedisStorage(settings.REDIS_URL))
    return FixedWindowRateLimiter(DatabaseStorage())


_limiter_lock = threading.Lock()


def _limiter() -> RateLimiter:
    # One builder at a time: limits checks its storage's driver version lazily and not
    # thread-safely, so the fan-out threads making a fresh worker's first broker calls at once
    # failed with "minimum version of 3.0 for 'redis' could not be found. Found version: 0.0.0".
    with _limiter_lock:
        return _build_limiter()


_limiter.cache_clear = _build_limiter.cache_clear


class DatabaseStorage(Storage):
    """A ``limits`` storage of fixed-window counters in one table (``orders.RateLimitCounter``).

    For setups without Redis: the database is the one store every worker shares. Each increment
    is a single atomic upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, on PostgreSQL
    and SQLite alike), so concurrent workers never lose a hit. Times are epoch seconds.
    """

    STORAGE_SCHEME = ["algoways-db"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self):
        return DatabaseError

    @staticmethod
    def _model():
        from django.apps import apps

        return apps.get_model("orders", "RateLimitCounter")

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        quote = connection.ops.quote_name
        table, key_column, count_column = (
            quote(self._model()._meta.db_table),
            quote("key"),
            quote("count"),
        )
        now = time.time()
        # A counter whose window has ended starts again from this hit.
        sql = (
            f"INSERT INTO {table} ({key_column}, {count_column}, expires_at) VALUES (%s, %s, %s) "
            f"ON CONFLICT ({key_column}) DO UPDATE SET "
            f"{count_column} = CASE WHEN {table}.expires_at <= %s THEN EXCLUDED.{count_column} "
            f"ELSE {table}.{count_column} + EXCLUDED.{count_column} END, "
            f"expires_at = CASE WHEN {table}.expires_at <= %s THEN EXCLUDED.expires_at "
            f"ELSE {table}.expires_at END "
            f"RETURNING {count_column}"
        )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [key, amount, now + expiry, now, now])
            return int(cursor.fetchone()[0])

    def get(self, key: str) -> int:
        row = self._model().objects.filter(key=key, expires_at__gt=time.time()).first()
        return row.count if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._model().objects.filter(key=key, expires_at__gt=time.time()).first()
        return row.expires_at if row else time.time()

    def check(self) -> bool:
        try:
            self._model().objects.exists()
        except DatabaseError:
            return False
        return True

    def reset(self) -> int | None:
        deleted, _ = self._model().objects.all().delete()
        return deleted

    def clear(self, key: str) -> None:
        self._model().objects.filter(key=key).delete()

    def prune(self) -> int:
        """Delete counters whose window has ended (housekeeping)."""
        deleted, _ = self._model().objects.filter(expires_at__lte=time.time() - 60).delete()
        return deleted


@lru_cache(maxsize=256)
def _parsed(limit_strings: tuple[str, ...]):
    return [item for text in limit_strings for item in parse_many(text)]


def limit_identity(account) -> str:
    """Whose budget a call spends: the account's, or its app's where the broker counts per app.

    Brokers that limit per app key (``rate_limit_app_field``) share one budget among every
    account using that app; the key is hashed, so no credential reaches the counter store.
    """
    adapter_class = account.adapter_class
    field = adapter_class.rate_limit_app_field
    app = account.all_credentials().get(field, "") if field else ""
    if app:
        return f"{adapter_class.code}:app:{hashlib.sha256(app.encode()).hexdigest()[:16]}"
    return f"{adapter_class.code}:{account.pk}"


def throttle_for_account(account):
    """A ``throttle(category)`` callable for one account: blocks until every limit has room."""
    limits_by_category = account.adapter_class.rate_limits
    identity = limit_identity(account)

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
        if len(items) == 1:
            # One window: hit() takes a slot only where there is room, atomically.
            if limiter.hit(items[0], identity, category):
                return
            blocked = items
        else:
            # Several: test them all first, so waiting for one never spends slots of the others.
            blocked = [item for item in items if not limiter.test(item, identity, category)]
            if not blocked:
                # A concurrent caller may win the last slot of a window, so re-check.
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
