"""Scheduled orders: an order, a basket or a square-off placed at a time or on a cron schedule.

Imported at the end of ``orders/models.py`` so the models belong to the orders app.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from algoways.tenancy import TeamScopedQuerySet

CRON_HELP = "5 fields: minute hour day-of-month month day-of-week, e.g. '15 9 * * 1-5'."


def cron_validate(value: str) -> None:
    """A standard 5-field cron expression (no seconds or year fields, no @aliases)."""
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValidationError(f"Not a valid cron expression {value!r}: give {CRON_HELP}")


def timezone_validate(value: str) -> None:
    """An IANA time zone name such as Asia/Kolkata or UTC."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"Unknown time zone {value!r}: give an IANA name such as Asia/Kolkata or UTC."
        )


class ScheduleKind(models.TextChoices):
    ORDER = "order", "Order"  # the specs on one account
    BASKET = "basket", "Basket"  # the specs on every listed account, as one order group
    SQUARE_OFF = "square_off", "Square-off"  # close every open position of the accounts


class RunOutcome(models.TextChoices):
    FIRED = "fired", "Fired"
    SKIPPED_MISSED = "skipped_missed", "Skipped (missed)"
    FAILED = "failed", "Failed"


class ScheduledOrderQuerySet(TeamScopedQuerySet):
    def due(self, now: datetime) -> ScheduledOrderQuerySet:
        """Enabled schedules whose next run is at or before ``now``."""
        return self.filter(enabled=True, next_run_at__lte=now)


class ScheduledOrder(models.Model):
    """Orders the platform places on its own: once at ``run_at`` or on every ``cron`` time."""

    team = models.ForeignKey(
        "accounts.Team", on_delete=models.CASCADE, related_name="scheduled_orders"
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=12, choices=ScheduleKind.choices, default=ScheduleKind.ORDER)
    accounts = models.ManyToManyField(
        "brokers.BrokerAccount", blank=True, related_name="scheduled_orders"
    )
    whole_team = models.BooleanField(
        default=False, help_text="Square-off only: every connected account of the team."
    )
    #: Order specs as the order API takes them (without client order ids: each run derives its
    #: own). Empty for a square-off.
    specs = models.JSONField(encoder=DjangoJSONEncoder, default=list, blank=True)
    run_at = models.DateTimeField(null=True, blank=True, help_text="A one-off run at this time.")
    cron = models.CharField(
        max_length=100, blank=True, validators=[cron_validate], help_text=f"Recurring: {CRON_HELP}"
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[timezone_validate],
        help_text="The cron's time zone (IANA), e.g. Asia/Kolkata for Indian exchanges.",
    )
    enabled = models.BooleanField(default=True)
    grace_seconds = models.PositiveIntegerField(
        default=60, help_text="A run missed by more than this is skipped and recorded, not fired."
    )
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        "accounts.Membership", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScheduledOrderQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(run_at__isnull=False) & Q(cron=""))
                | (Q(run_at__isnull=True) & ~Q(cron="")),
                name="scheduled_order_run_at_xor_cron",
            ),
        ]
        indexes = [models.Index(fields=["enabled", "next_run_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_recurring(self) -> bool:
        return bool(self.cron)

    def clean(self) -> None:
        problems: dict[str, list[str]] = {}
        if bool(self.cron) == (self.run_at is not None):
            problems["cron"] = ["Give either run_at (once) or cron (recurring), not both."]
        if self.kind == ScheduleKind.SQUARE_OFF:
            if self.specs:
                problems["specs"] = ["A square-off takes no specs: it closes open positions."]
        else:
            if self.whole_team:
                problems["whole_team"] = ["Only a square-off can cover the whole team."]
            if not self.specs:
                problems["specs"] = ["Give at least one order spec."]
        if problems:
            raise ValidationError(problems)


class ScheduledOrderRun(models.Model):
    """One due time of a schedule: fired, skipped because missed, or failed.

    Unique per (schedule, scheduled_for): the database itself refuses a second run of one time.
    """

    schedule = models.ForeignKey(ScheduledOrder, on_delete=models.CASCADE, related_name="runs")
    scheduled_for = models.DateTimeField()
    fired_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices)
    details = models.JSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    group = models.ForeignKey(
        "orders.OrderGroup", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    orders = models.ManyToManyField("orders.Order", blank=True, related_name="schedule_runs")

    TEAM_FIELD = "schedule__team"
    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-scheduled_for", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"], name="one_run_per_schedule_time"
            )
        ]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.scheduled_for:%Y-%m-%d %H:%M} ({self.outcome})"
