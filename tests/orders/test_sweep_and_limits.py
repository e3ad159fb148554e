"""The sweeper, the tasks' queues, and the database storage of outbound rate limits."""

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from limits import parse
from limits.strategies import FixedWindowRateLimiter

from algoways.celery import app as celery_app
from brokers import rate_limits
from brokers.rate_limits import DatabaseStorage
from orders import services, tasks
from orders.models import Order, OrderStatus, RateLimitCounter

from .conftest import paper_orders, spec


def test_sweeper_requeues_stuck_pending_and_reconciles_submitting_and_unknown(
    team, paper_account, settings
):
    settings.ORDERS_STUCK_PENDING_SECONDS = 60
    old = timezone.now() - timedelta(minutes=5)

    def make(status, **fields):
        order, _ = services.order_place(team=team, account=paper_account, spec=spec())
        Order.objects.filter(pk=order.pk).update(
            status=status, created_at=old, enqueued_at=old, **fields
        )
        return order.pk

    lost = make(OrderStatus.PENDING)
    fresh, _ = services.order_place(team=team, account=paper_account, spec=spec())
    crashed = make(OrderStatus.SUBMITTING, submitted_at=old)
    just_sent = make(OrderStatus.SUBMITTING, submitted_at=timezone.now())
    unknown = make(OrderStatus.UNKNOWN, submitted_at=old)
    filled = make(OrderStatus.FILLED)

    plan = services.orders_sweep()
    assert plan.submit == [lost]
    assert sorted(plan.reconcile) == sorted([crashed, unknown])
    assert fresh.pk not in plan.submit and just_sent not in plan.reconcile
    assert filled not in plan.submit + plan.reconcile
    # Queued now: the next sweep leaves them alone until they are stuck again.
    assert services.orders_sweep().submit == []


def test_sweep_task_sends_the_lost_order_once(team, paper_account):
    order, _ = services.order_place(team=team, account=paper_account, spec=spec())
    old = timezone.now() - timedelta(minutes=5)
    Order.objects.filter(pk=order.pk).update(created_at=old, enqueued_at=old)
    assert tasks.stuck_orders_sweep_task() == {"submit": 1, "groups": 0, "reconcile": 0}
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED
    tasks.stuck_orders_sweep_task()
    assert len(paper_orders(paper_account)) == 1


def test_order_tasks_go_to_the_orders_queue_and_housekeeping_elsewhere():
    router = celery_app.amqp.router

    def queue_of(name):
        return router.route({}, name)["queue"].name

    for name in ("order_submit_task", "order_reconcile_task", "order_group_submit_task"):
        assert queue_of(f"orders.tasks.{name}") == "orders"
    for name in (
        "open_orders_sync_task",
        "account_orders_sync_task",
        "stuck_orders_sweep_task",
        "idempotency_records_cleanup_task",
    ):
        assert queue_of(f"orders.tasks.{name}") == "housekeeping"
    assert (
        django_settings.CELERY_TASK_ACKS_LATE and django_settings.CELERY_TASK_REJECT_ON_WORKER_LOST
    )
    assert django_settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert {
        "orders.tasks.stuck_orders_sweep_task",
        "orders.tasks.open_orders_sync_task",
        "orders.tasks.idempotency_records_cleanup_task",
    } <= scheduled


# Rate limits in the database ------------------------------------------------------------------


def test_database_storage_counts_a_fixed_window_and_refuses_beyond_the_limit(db):
    limiter = FixedWindowRateLimiter(DatabaseStorage())
    item = parse("3/second")
    assert [limiter.hit(item, "acct", "orders") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(item, "other", "orders")  # another identity has its own window
    stats = limiter.get_window_stats(item, "acct", "orders")
    assert stats.remaining == 0 and stats.reset_time > time.time()
    RateLimitCounter.objects.update(expires_at=time.time() - 1)  # the window ends
    assert limiter.hit(item, "acct", "orders")
    assert limiter.get_window_stats(item, "acct", "orders").remaining == 2


def test_without_redis_the_throttle_uses_the_database_and_waits_for_a_slot(db, settings):
    settings.REDIS_URL = ""
    rate_limits._limiter.cache_clear()
    assert isinstance(rate_limits._limiter().storage, DatabaseStorage)
    items = [parse("2/second")]
    for _ in range(2):
        rate_limits.acquire("paper:1", "orders", items)
    window_ends = rate_limits._limiter().get_window_stats(items[0], "paper:1", "orders").reset_time
    rate_limits.acquire("paper:1", "orders", items)  # waits for the next window, never fails
    assert time.time() >= window_ends
    assert RateLimitCounter.objects.filter(key__contains="paper:1").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_database_storage_never_loses_a_concurrent_hit():
    storage = DatabaseStorage()
    counts, errors = [], []

    def hit():
        try:
            for _ in range(10):
                counts.append(storage.incr("shared", 60))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(counts) == list(range(1, 81))  # every hit counted once, none lost


def test_fixed_decimal_money_never_becomes_float(team, paper_account):
    order, _ = services.order_place(
        team=team, account=paper_account, spec=spec(order_type="LIMIT", price=Decimal("1499.95"))
    )
    order.refresh_from_db()
    assert isinstance(order.price, Decimal) and order.price == Decimal("1499.95")
    assert isinstance(order.quantity, Decimal)
