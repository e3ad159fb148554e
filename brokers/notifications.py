"""Per-team notifications: an email and/or a webhook POST, sent from a task."""

from __future__ import annotations

from django.db import transaction


def team_notify(*, team, subject: str, message: str) -> None:
    """Queue a notification to the team's email address and webhook, if it has them."""
    if not (team.notification_email or team.notification_webhook_url):
        return
    from .tasks import team_notify_task

    transaction.on_commit(lambda: team_notify_task.delay(team.pk, subject, message))
