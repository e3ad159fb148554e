"""Orders, their append-only event log, order groups, idempotency records and risk limits."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from algoways.tenancy import TeamScopedQuerySet
from brokers.adapters.base import OrderType, Product, Side, Validity

MONEY = {"max_digits": 24, "decimal_places": 8}
QUANTITY = {"max_digits": 24, "decimal_places": 8}


class OrderStatus(models.TextChoices):
    """The platform's status of an order (the broker's own word is kept in ``broker_status``)."""

    PENDING = "pending", "Pending"  # accepted by the platform, not yet sent to the broker
    SUBMITTING = "submitting", "Submitting"  # a worker is sending it right now
    OPEN = "open", "Open"  # acknowledged by the broker, working
    PARTIALLY_FILLED = "partially_filled", "Partially filled"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    UNKNOWN = "unknown", "Unknown"  # sent, but no answer came: reconciliation decides


S = OrderStatus
FINAL_STATUSES = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})
WORKING_STATUSES = frozenset({S.OPEN, S.PARTIALLY_FILLED})
#: Statuses an order may be created in: accepted, or refused by the pre-trade checks.
INITIAL_STATUSES = frozenset({S.PENDING, S.REJECTED})

#: Every legal move of the state machine. A status mapping to itself is an update without a
#: status change (a fill, a modification) and is legal only where listed.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # Cancelled or expired before it was sent; rejected by a last-moment check (a halt).
    S.PENDING: frozenset({S.PENDING, S.SUBMITTING, S.CANCELLED, S.REJECTED, S.EXPIRED}),
    # Back to PENDING only when the broker certainly did not take it (unreachable, 429).
    S.SUBMITTING: frozenset(
        {
            S.PENDING,
            S.OPEN,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.CANCELLED,
            S.REJECTED,
            S.EXPIRED,
            S.UNKNOWN,
        }
    ),
    # Never back to PENDING or SUBMITTING: an order that may be at the broker is never resent.
    S.UNKNOWN: frozenset(
        {S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}
    ),
    S.OPEN: frozenset({S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


class IllegalTransition(Exception):
    """A status change the state machine does not allow; nothing was written."""

    def __init__(self, from_status: str, to_status: str):
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(f"An order cannot go from {from_status} to {to_status}.")


def check_transition(from_status: str, to_status: str) -> None:
    """Raise IllegalTransition unless ``from_status -> to_status`` is in ALLOWED_TRANSITIONS."""
    if to_status not in ALLOWED_TRANSITIONS.get(from_status, frozenset()):
        raise IllegalTransition(from_status, to_status)


class EventSource(models.TextChoices):
    API = "api", "API"
    TASK = "task", "Task"
    SYNC = "sync", "Sync"
    ADMIN = "admin", "Admin"
    BROKER = "broker", "Broker"
    SCHEDULE = "schedule", "Schedule"


class OrderQuerySet(TeamScopedQuerySet):
    def open(self) -> OrderQuerySet:
        """Working at the broker: the orders status sync follows."""
        return self.filter(status__in=WORKING_STATUSES)

    def unsent(self) -> OrderQuerySet:
        return self.filter(status=S.PENDING)

    def stuck(self, *, pending_for: timedelta, submitting_for: timedelta) -> OrderQuerySet:
        """PENDING for longer than ``pending_for`` (a lost message, an outage), SUBMITTING for
        longer than ``submitting_for`` (a crashed worker), or UNKNOWN."""
        now = timezone.now()
        return self.filter(
            Q(status=S.PENDING, created_at__lt=now - pending_for)
            | Q(status=S.SUBMITTING, submitted_at__lt=now - submitting_for)
            | Q(status=S.UNKNOWN)
        )


class OrderGroup(models.Model):
    """One basket or fan-out request: the same order spec(s) placed on many broker accounts."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="order_groups")
    specs = models.JSONField(encoder=DjangoJSONEncoder, default=list)
    placed_by_membership = models.ForeignKey(
        "accounts.Membership", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    placed_by_api_key = models.ForeignKey(
        "accounts.TeamAPIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Order group {self.pk}"


class Order(models.Model):
    """One order on one broker account, from acceptance to its final status."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="orders")
    broker_account = models.ForeignKey(
        "brokers.BrokerAccount", on_delete=models.PROTECT, related_name="orders"
    )
    group = models.ForeignKey(
        OrderGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    #: Position within its group for this account: children of one account go out in this order.
    sequence = models.PositiveIntegerField(default=0)
    client_order_id = models.CharField(
        max_length=64, help_text="Our id for the order at the broker (its tag / client id)."
    )
    idempotency_key = models.CharField(max_length=255, blank=True)

    symbol = models.CharField(max_length=64)
    exchange = models.CharField(max_length=20)
    broker_symbol = models.CharField(max_length=96, blank=True)
    broker_token = models.CharField(max_length=64, blank=True)
    side = models.CharField(max_length=4, choices=[(s.value, s.value) for s in Side])
    quantity = models.DecimalField(**QUANTITY)
    order_type = models.CharField(max_length=12, choices=[(t.value, t.value) for t in OrderType])
    product = models.CharField(
        max_length=10, choices=[(p.value, p.value) for p in Product], default=Product.INTRADAY
    )
    price = models.DecimalField(**MONEY, null=True, blank=True)
    trigger_price = models.DecimalField(**MONEY, null=True, blank=True)
    validity = models.CharField(
        max_length=4, choices=[(v.value, v.value) for v in Validity], default=Validity.DAY
    )
    #: The price the notional risk check used for a MARKET order (given by the client).
    reference_price = models.DecimalField(**MONEY, null=True, blank=True)

    status = models.CharField(
        max_length=20, choices=OrderStatus.choices, default=OrderStatus.PENDING, db_index=True
    )
    broker_order_id = models.CharField(max_length=64, blank=True, db_index=True)
    broker_status = models.CharField(max_length=64, blank=True)
    broker_message = models.TextField(blank=True)
    filled_quantity = models.DecimalField(**QUANTITY, default=0)
    average_price = models.DecimalField(**MONEY, null=True, blank=True)
    rejection_reason = models.TextField(blank=True)

    placed_by_membership = models.ForeignKey(
        "accounts.Membership", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    placed_by_api_key = models.ForeignKey(
        "accounts.TeamAPIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: The scheduled order that placed it (scheduled orders arrive later; an id for now).
    placed_by_schedule = models.CharField(max_length=64, blank=True)

    submit_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    #: When a task was last queued for it; the sweeper does not queue it again sooner.
    enqueued_at = models.DateTimeField(null=True, blank=True)

    objects = OrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["broker_account", "client_order_id"],
                name="unique_client_order_id_per_account",
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_quantity_positive"),
        ]
        indexes = [
            models.Index(fields=["team", "status"]),
            models.Index(fields=["broker_account", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.exchange}:{self.symbol} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def clean(self) -> None:
        if self.broker_account_id and self.team_id and self.broker_account.team_id != self.team_id:
            raise ValidationError({"broker_account": ["The account belongs to another team."]})


class OrderEvent(models.Model):
    """One step in an order's life: append-only, written with the status change it records."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=20, choices=OrderStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=OrderStatus.choices)
    source = models.CharField(max_length=10, choices=EventSource.choices)
    broker_status = models.CharField(max_length=64, blank=True)
    message = models.TextField(blank=True)
    data = models.JSONField(encoder=DjangoJSONEncoder, default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    TEAM_FIELD = "order__team"
    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.from_status or 'new'} -> {self.to_status} ({self.source})"


class IdempotencyStatus(models.TextChoices):
    IN_FLIGHT = "in_flight", "In flight"
    COMPLETED = "completed", "Completed"


class IdempotencyRecord(models.Model):
    """The first response to a request sent with an ``Idempotency-Key``, replayed on retries."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    status = models.CharField(
        max_length=10, choices=IdempotencyStatus.choices, default=IdempotencyStatus.IN_FLIGHT
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(encoder=DjangoJSONEncoder, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "key"], name="unique_idempotency_key_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class RiskLimits(models.Model):
    """Pre-trade limits of a whole team (no account) or of one broker account.

    Empty fields mean no limit. An order must pass both its account's and its team's limits.
    """

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="risk_limits")
    broker_account = models.ForeignKey(
        "brokers.BrokerAccount",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="risk_limits",
        help_text="Empty: the limits apply to the whole team.",
    )
    max_quantity = models.DecimalField(**QUANTITY, null=True, blank=True)
    max_notional = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Quantity x price of one order."
    )
    allowed_exchanges = models.JSONField(
        default=list, blank=True, help_text='e.g. ["NSE", "BSE"]; empty allows every exchange.'
    )
    allowed_symbols = models.JSONField(
        default=list, blank=True, help_text='e.g. ["INFY", "TCS"]; empty allows every symbol.'
    )
    max_orders_per_minute = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "risk limits"
        ordering = ["team", "broker_account"]
        constraints = [
            models.UniqueConstraint(
                fields=["team"],
                condition=Q(broker_account__isnull=True),
                name="one_team_risk_limits",
            ),
            models.UniqueConstraint(
                fields=["team", "broker_account"],
                condition=Q(broker_account__isnull=False),
                name="one_account_risk_limits",
            ),
        ]

    def __str__(self) -> str:
        return f"Risk limits of {self.broker_account or self.team}"

    def clean(self) -> None:
        if self.broker_account_id and self.team_id and self.broker_account.team_id != self.team_id:
            raise ValidationError({"broker_account": ["The account belongs to another team."]})
        for name in ("allowed_exchanges", "allowed_symbols"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValidationError({name: ["A list of strings."]})


class TeamTradingState(models.Model):
    """The team-wide kill switch (each broker account has its own ``trading_halted`` too)."""

    team = models.OneToOneField(
        "accounts.Team", on_delete=models.CASCADE, related_name="trading_state"
    )
    trading_halted = models.BooleanField(default=False)
    halt_reason = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField(auto_now=True)

    objects = TeamScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.team}: {'halted' if self.trading_halted else 'trading'}"


class RateLimitCounter(models.Model):
    """A fixed-window counter of outbound broker calls, shared by every worker (no-Redis setups).

    Times are epoch seconds: they are only ever compared with ``time.time()``.
    """

    key = models.CharField(max_length=255, unique=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.FloatField()

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


from .schedule_models import ScheduledOrder, ScheduledOrderRun  # noqa: E402,F401
