"""Order tasks: thin, take ids, re-read the rows and call a service; safe to run twice.

Tasks named ``order_*`` go to the "orders" queue (``CELERY_TASK_ROUTES``); sync, sweep and
cleanup run on "housekeeping", so a backlog there never delays an order. Follow-ups (a retry
after backoff, a reconciliation) are new messages with a countdown. In eager mode (tests,
in-process runs) follow-ups would run at once, in a loop, so they are left to the sweeper.
"""

from __future__ import annotations

import logging

from celery import shared_task

from . import services
from .models import WORKING_STATUSES, Order

logger = logging.getLogger(__name__)


def _follow_up(task, args: tuple, countdown: float | None) -> None:
    if countdown is None:
        return
    if task.app.conf.task_always_eager:
        logger.info("Eager mode: %s%s left to the sweeper", task.name, args)
        return
    task.apply_async(args, countdown=max(countdown, 0.0))


@shared_task(name="orders.tasks.order_submit_task")
def order_submit_task(order_id: int) -> str:
    """Send one order to its broker (or reconcile it if an earlier attempt may have)."""
    result = services.order_submit(order_id=order_id)
    _follow_up(order_submit_task, (order_id,), result.retry_in)
    _follow_up(order_reconcile_task, (order_id,), result.reconcile_in)
    if result.status in WORKING_STATUSES:
        _sync_soon(order_id)
    return result.status


def _sync_soon(order_id: int) -> None:
    """Read a just-acknowledged order's fate soon, rather than at the next periodic sync.

    Brokers such as Kite acknowledge with an order id only; the fill follows within moments.
    One sync per account per window covers every order placed on it meanwhile.
    """
    from django.conf import settings
    from django.core.cache import cache

    account_id = (
        Order.objects.filter(pk=order_id).values_list("broker_account_id", flat=True).first()
    )
    delay = settings.ORDERS_ACK_FOLLOWUP_SECONDS
    if account_id and cache.add(f"orders-sync-soon:{account_id}", 1, max(1, int(delay))):
        _follow_up(account_orders_sync_task, (account_id,), delay)


@shared_task(name="orders.tasks.account_fill_prices_read_task")
def account_fill_prices_read_task(account_ids: list[int] | int) -> int:
    """Read the fill prices of these accounts' orders acknowledged filled without one, an account
    at a time; on housekeeping, so placement never waits for it. (One id: a message queued by an
    earlier release.) One account's failure leaves the others' reads to go on."""
    completed = 0
    for account_id in [account_ids] if isinstance(account_ids, int) else account_ids:
        try:
            completed += services.account_fill_prices_read(account_id=account_id)
        except Exception:  # best effort: the account's next read tries these orders again
            logger.exception("Reading the fill prices of account %s failed", account_id)
    return completed


@shared_task(name="orders.tasks.fill_price_read_task")
def fill_price_read_task(order_ids: list[int] | int) -> None:
    """Messages queued by earlier releases (order ids): their accounts' fill prices are read."""
    ids = [order_ids] if isinstance(order_ids, int) else order_ids
    account_ids = (
        Order.objects.filter(pk__in=ids)
        .order_by()
        .values_list("broker_account_id", flat=True)
        .distinct()
    )
    account_fill_prices_read_task(list(account_ids))


@shared_task(name="orders.tasks.order_reconcile_task")
def order_reconcile_task(order_id: int) -> str:
    """Resolve a SUBMITTING or UNKNOWN order from the broker's order book; never resends."""
    result = services.order_reconcile(order_id=order_id)
    _follow_up(order_reconcile_task, (order_id,), result.reconcile_in)
    return result.status


@shared_task(name="orders.tasks.order_group_submit_task")
def order_group_submit_task(group_id: int, account_ids: list[int]) -> int:
    """Send a group's children on these accounts, accounts concurrently, each in sequence."""
    resume = services.order_group_submit(group_id=group_id, account_ids=account_ids)
    for account_id, delay in resume.items():
        _follow_up(order_group_submit_task, (group_id, [account_id]), delay)
    return len(account_ids) - len(resume)


@shared_task(name="orders.tasks.open_orders_sync_task")
def open_orders_sync_task() -> int:
    """Periodic: queue a status sync for every account with working orders."""
    account_ids = services.accounts_with_open_orders()
    for account_id in account_ids:
        account_orders_sync_task.delay(account_id)
    return len(account_ids)


@shared_task(name="orders.tasks.account_orders_sync_task")
def account_orders_sync_task(account_id: int) -> int:
    from brokers.adapters.errors import BrokerError
    from brokers.models import BrokerAccount

    account = BrokerAccount.objects.filter(pk=account_id).first()
    if account is None:
        return 0
    try:
        return services.order_sync(account=account)
    except BrokerError as exc:
        logger.info("Order sync of account %s failed: %s", account_id, exc)
        return 0


@shared_task(name="orders.tasks.stuck_orders_sweep_task")
def stuck_orders_sweep_task() -> dict:
    """Periodic: queue stuck PENDING orders again and reconcile SUBMITTING/UNKNOWN ones."""
    plan = services.orders_sweep()
    for order_id in plan.submit:
        order_submit_task.delay(order_id)
    for group_id, account_id in plan.groups:
        order_group_submit_task.delay(group_id, [account_id])
    for order_id in plan.reconcile:
        order_reconcile_task.delay(order_id)
    return {
        "submit": len(plan.submit),
        "groups": len(plan.groups),
        "reconcile": len(plan.reconcile),
    }


@shared_task(name="orders.tasks.idempotency_records_cleanup_task")
def idempotency_records_cleanup_task() -> int:
    """Hourly: forget idempotency keys past their 24 hours, and ended rate-limit windows."""
    from brokers.rate_limits import DatabaseStorage

    DatabaseStorage().prune()
    return services.idempotency_records_cleanup()
