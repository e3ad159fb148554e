"""Broker housekeeping tasks: thin, take ids or codes, call a service."""

from celery import shared_task

from . import instruments
from .adapters import registry
from .models import BrokerAccount


@shared_task(name="brokers.tasks.instrument_master_refresh_task")
def instrument_master_refresh_task(broker: str | None = None) -> dict:
    """Refresh the instrument master of one broker, or of every broker that publishes one."""
    codes = (
        [broker]
        if broker
        else [a.code for a in registry.all_adapters() if a.supports("instrument_master")]
    )
    counts = {}
    for code in codes:
        # Some masters need a signed-in session (Kite's): any connected account will do.
        account = BrokerAccount.objects.filter(broker=code).connected().first()
        counts[code] = instruments.instrument_master_refresh(broker=code, account=account)
    return counts
