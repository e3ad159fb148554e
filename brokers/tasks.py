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
    from . import sessions

    account = BrokerAccount.objects.select_related("team").filter(pk=account_id).first()
    if account is None:
        return "gone"
    return sessions.session_keepalive(account=account)


@shared_task(name="brokers.tasks.expired_sessions_cleanup_task")
def expired_sessions_cleanup_task() -> int:
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
