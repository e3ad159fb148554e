"""Broker housekeeping tasks: thin, take ids or codes, call a service."""

import logging

from celery import shared_task

from . import instruments
from .adapters import registry
from .models import BrokerAccount

logger = logging.getLogger(__name__)


@shared_task(name="brokers.tasks.instrument_master_refresh_task")
def instrument_master_refresh_task(broker: str | None = None) -> dict:
    """Refresh the instrument master of one broker, or of every broker that publishes one.

    For one broker a failure is raised. The sweep refreshes each broker on its own: a failure is
    logged and reported in the result, and never leaves the brokers after it stale.
    """
    if broker:
        return {broker: _instrument_master_refresh_one(broker)}
    counts: dict[str, int | dict] = {}
    for adapter_class in registry.all_adapters():
        if not adapter_class.supports("instrument_master"):
            continue
        code = adapter_class.code
        try:
            counts[code] = _instrument_master_refresh_one(code)
        except Exception as exc:  # one broker's failure must not stop the others
            logger.exception("Instrument master refresh failed for %s", code)
            counts[code] = {"error": str(exc) or exc.__class__.__name__}
    return counts


def _instrument_master_refresh_one(code: str) -> int | dict:
    # Some masters need a signed-in session (DXtrade's, Match-Trader's): any connected account
    # will do. Its base URL is also where a white-label platform lives.
    account = BrokerAccount.objects.filter(broker=code).connected().first()
    if account is None and registry.get(code).base_url_required:
        # Without an account there is no host to download from (and nothing to trade).
        return {"skipped": "no connected account"}
    return instruments.instrument_master_refresh(broker=code, account=account)


@shared_task(name="brokers.tasks.session_keepalive_sweep_task")
def session_keepalive_sweep_task() -> int:
    """Find sessions about to expire and schedule their renewal, spread out."""
    from . import sessions

    plan = sessions.keepalive_schedule(sessions.accounts_due())
    scheduled = 0
    for account_id, delay in plan:
        if sessions.claim_keepalive(account_id, delay):
            session_keepalive_task.apply_async((account_id,), countdown=delay)
            scheduled += 1
    return scheduled


@shared_task(name="brokers.tasks.session_keepalive_task")
def session_keepalive_task(account_id: int) -> str:
    """Renew, re-login or flag one account's session (safe to run twice)."""
    from . import sessions

    account = BrokerAccount.objects.select_related("team").filter(pk=account_id).first()
    if account is None:
        return "gone"
    return sessions.session_keepalive(account=account)


@shared_task(name="brokers.tasks.expired_sessions_cleanup_task")
def expired_sessions_cleanup_task() -> int:
    """Delete sessions that expired more than a day ago."""
    from . import sessions

    return sessions.expired_sessions_cleanup()


@shared_task(
    name="brokers.tasks.team_notify_task",
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def team_notify_task(team_id: int, subject: str, message: str) -> None:
    """Send one notification by email and webhook (no secrets ever go in one)."""
    import requests
    from django.core.mail import send_mail

    from accounts.models import Team

    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        return
    if team.notification_email:
        send_mail(f"[AlgoWays] {subject}", message, None, [team.notification_email])
    if team.notification_webhook_url:
        requests.post(
            team.notification_webhook_url,
            json={"team": team.slug, "subject": subject, "message": message},
            timeout=(3.05, 10),
        ).raise_for_status()
