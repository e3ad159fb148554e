"""Scheduled orders: create and change schedules, and the scheduler tick that fires them.

The tick (``schedules_tick``, run by Celery beat every few seconds) fires each due schedule in its
own transaction, holding the schedule's row lock taken with ``SKIP LOCKED``: a second tick (a
second beat, a slow first tick) skips a row being fired and, once that commits, no longer finds
it due. The unique (schedule, scheduled_for) of ``ScheduledOrderRun`` is the database's own
guarantee on top, and every order gets a client order id derived from the schedule, the run time
and the account, so even a re-fire could only find the orders it placed the first time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from croniter import croniter
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from brokers.adapters.base import OrderType, Product, Side, Validity
from brokers.models import BrokerAccount
from brokers.services import broker_call

from .models import EventSource, Order, OrderGroup, OrderStatus
from .schedule_models import RunOutcome, ScheduledOrder, ScheduledOrderRun, ScheduleKind
from .services import OrderSpec, PlacedBy, group_submit_enqueue, order_place

logger = logging.getLogger(__name__)

MAX_SPECS = 50
#: Fields a change may touch; the others belong to the tick.
CHANGEABLE_FIELDS = frozenset(
    {
        "name",
        "kind",
        "whole_team",
        "specs",
        "run_at",
        "cron",
        "timezone",
        "enabled",
        "grace_seconds",
    }
)
#: Changing one of these moves the next run.
TIMING_FIELDS = frozenset({"run_at", "cron", "timezone", "enabled"})


# Times ---------------------------------------------------------------------------------------


def next_run_after(*, cron: str, tz: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron`` names on the wall clock of ``tz``.

    When the clocks go back, the repeated hour's wall-clock times have already run once: they
    are not run a second time (croniter alone would fire "30 1 * * *" twice that night).
    """
    zone = ZoneInfo(tz)
    local_after = after.astimezone(zone)
    iterator = croniter(cron, local_after)
    for _ in range(1000):
        candidate = iterator.get_next(datetime)
        if candidate.replace(tzinfo=None) > local_after.replace(tzinfo=None):
            return candidate.astimezone(UTC)
    raise ValueError(f"No run of {cron!r} found after {after}.")  # pragma: no cover


def schedule_next_run(schedule: ScheduledOrder, *, now: datetime) -> datetime | None:
    """When an enabled schedule runs next: its one-off time, or its cron's next time after now."""
    if not schedule.enabled:
        return None
    if schedule.cron:
        return next_run_after(cron=schedule.cron, tz=schedule.timezone, after=now)
    return schedule.run_at


# Specs ----------------------------------------------------------------------------------------


def specs_validate(specs) -> list[dict]:
    """Validate order specs as the order API does; return them as JSON-ready dicts."""
    from .api.serializers import OrderSpecSerializer

    if not isinstance(specs, list):
        raise ValidationError({"specs": ["A list of order specs."]})
    if len(specs) > MAX_SPECS:
        raise ValidationError({"specs": [f"At most {MAX_SPECS} order specs."]})
    cleaned, problems = [], []
    for index, spec in enumerate(specs):
        if isinstance(spec, dict) and spec.get("client_order_id"):
            problems.append(
                f"Spec {index}: no client_order_id: each run derives its own from the schedule "
                "and the run time."
            )
            continue
        serializer = OrderSpecSerializer(data=spec)
        if not serializer.is_valid():
            for name, messages in _flatten(serializer.errors).items():
                problems.extend(f"Spec {index}: {name}: {message}" for message in messages)
            continue
        cleaned.append(spec_json(serializer.validated_data))
    if problems:
        raise ValidationError({"specs": problems})
    return cleaned


def _flatten(errors) -> dict[str, list[str]]:
    if isinstance(errors, dict):
        return {name: [str(m) for m in messages] for name, messages in errors.items()}
    return {"non_field_errors": [str(m) for m in errors]}


def spec_json(attrs: dict) -> dict:
    """A validated spec as stored on a schedule: decimals as strings, no client order id."""
    return {
        name: (str(attrs[name]) if attrs.get(name) is not None else None)
        for name in (*OrderSpec.FIELDS, "reference_price")
    }


def spec_from_json(data: dict) -> OrderSpec:
    def decimal(name):
        return Decimal(data[name]) if data.get(name) is not None else None

    return OrderSpec(
        symbol=data["symbol"],
        exchange=data["exchange"],
        side=Side(data["side"]),
        quantity=Decimal(data["quantity"]),
        order_type=OrderType(data["order_type"]),
        product=Product(data.get("product") or Product.INTRADAY),
        price=decimal("price"),
        trigger_price=decimal("trigger_price"),
        validity=Validity(data.get("validity") or Validity.DAY),
        reference_price=decimal("reference_price"),
    )


# Creating and changing ---------------------------------------------------------------------------


def schedule_create(
    *,
    team,
    name: str,
    kind: str = ScheduleKind.ORDER,
    accounts=(),
    whole_team: bool = False,
    specs=(),
    run_at: datetime | None = None,
    cron: str = "",
    timezone: str = "UTC",
    enabled: bool = True,
    grace_seconds: int = 60,
    created_by=None,
    now: datetime | None = None,
) -> ScheduledOrder:
    """Create a schedule and compute its first run; ValidationError names what is wrong."""
    schedule = ScheduledOrder(
        team=team,
        name=name,
        kind=kind,
        whole_team=whole_team,
        specs=list(specs),
        run_at=run_at,
        cron=cron or "",
        timezone=timezone or "UTC",
        enabled=enabled,
        grace_seconds=grace_seconds,
        created_by=created_by,
    )
    accounts = list(accounts)
    now = now or _now()
    schedule_validate(schedule, accounts=accounts, now=now, timing_changed=True)
    schedule.next_run_at = schedule_next_run(schedule, now=now)
    with transaction.atomic():
        schedule.save()
        schedule.accounts.set(accounts)
    return schedule


def schedule_update(
    *, schedule: ScheduledOrder, accounts=None, now: datetime | None = None, **changes
) -> ScheduledOrder:
    """Change a schedule; a change of its timing moves its next run (from now, no catch-up)."""
    unknown = set(changes) - CHANGEABLE_FIELDS
    if unknown:
        raise ValueError(f"Cannot change {sorted(unknown)}")
    now = now or _now()
    with transaction.atomic():
        # Waits for a tick firing this schedule right now, then changes what it left.
        locked = ScheduledOrder.objects.select_for_update().get(pk=schedule.pk)
        timing_changed = any(
            name in TIMING_FIELDS and getattr(locked, name) != value
            for name, value in changes.items()
        )
        for name, value in changes.items():
            setattr(locked, name, value)
        account_list = list(accounts) if accounts is not None else list(locked.accounts.all())
        schedule_validate(locked, accounts=account_list, now=now, timing_changed=timing_changed)
        if timing_changed:
            locked.next_run_at = schedule_next_run(locked, now=now)
        locked.save()
        if accounts is not None:
            locked.accounts.set(account_list)
    return locked


def schedule_enable(*, schedule: ScheduledOrder, enabled: bool, now=None) -> ScheduledOrder:
    """Switch a schedule on (its next run counts from now) or off."""
    return schedule_update(schedule=schedule, enabled=enabled, now=now)


def schedule_validate(
    schedule: ScheduledOrder, *, accounts: list[BrokerAccount], now: datetime, timing_changed: bool
) -> None:
    """Every rule of a schedule, with its accounts; raises one ValidationError naming fields."""
    problems: dict[str, list[str]] = {}
    if schedule.kind != ScheduleKind.SQUARE_OFF:
        try:
            schedule.specs = specs_validate(schedule.specs)
        except ValidationError as exc:
            problems.update(exc.message_dict)
    try:
        schedule.full_clean(exclude=["team", "created_by", "specs", "next_run_at"])
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            problems.setdefault(name, []).extend(messages)
    if any(account.team_id != schedule.team_id for account in accounts):
        problems.setdefault("accounts", []).append("An account belongs to another team.")
    if len({account.pk for account in accounts}) != len(accounts):
        problems.setdefault("accounts", []).append("An account is listed twice.")
    kind = schedule.kind
    if kind == ScheduleKind.ORDER and (len(accounts) != 1 or len(schedule.specs) != 1):
        problems.setdefault("accounts", []).append(
            "An order schedule places one spec on one account; use a basket for more."
        )
    elif kind == ScheduleKind.BASKET and not accounts:
        problems.setdefault("accounts", []).append("Give at least one account.")
    elif kind == ScheduleKind.SQUARE_OFF and bool(accounts) == schedule.whole_team:
        problems.setdefault("accounts", []).append(
            "Give the accounts to square off, or whole_team, not both."
        )
    if kind != ScheduleKind.SQUARE_OFF and "specs" not in problems:
        _check_specs_fit_accounts(schedule.specs, accounts, problems)
    if (
        timing_changed
        and schedule.enabled
        and schedule.run_at is not None
        and not schedule.cron
        and schedule.run_at <= now
    ):
        problems.setdefault("run_at", []).append("Must be in the future.")
    if problems:
        raise ValidationError(problems)


def _check_specs_fit_accounts(specs: list[dict], accounts, problems: dict) -> None:
    from .api.serializers import OrderSpecSerializer

    for account in accounts:
        for spec in specs:
            for name, messages in OrderSpecSerializer.validate_for_account(spec, account).items():
                problems.setdefault("specs", []).extend(
                    f"Account {account.pk}: {name}: {message}" for message in messages
                )


# The tick -------------------------------------------------------------------------------------


@dataclass
class FireResult:
    orders: list[Order] = field(default_factory=list)
    group: OrderGroup | None = None
    errors: list[dict] = field(default_factory=list)


def schedules_tick(*, now: datetime | None = None, limit: int = 500) -> list[ScheduledOrderRun]:
    """Fire (or skip, when missed) every due schedule, each at most once per due time."""
    now = now or _now()
    due = list(
        ScheduledOrder.objects.due(now)
        .order_by("next_run_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    runs = []
    for schedule_id in due:
        run = schedule_run_due(schedule_id=schedule_id, now=now)
        if run is not None:
            runs.append(run)
    return runs


def schedule_run_due(*, schedule_id: int, now: datetime) -> ScheduledOrderRun | None:
    """Run one schedule if it is still due and no other tick holds it; None otherwise."""
    with transaction.atomic():
        schedule = (
            ScheduledOrder.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("team")
            .due(now)
            .filter(pk=schedule_id)
            .first()
        )
        if schedule is None:
            return None  # another tick is firing it, or fired it and moved its next run
        scheduled_for = schedule.next_run_at
        late = (now - scheduled_for).total_seconds()
        missed = late > schedule.grace_seconds
        positions = None
        if not missed and schedule.kind == ScheduleKind.SQUARE_OFF:
            # Read before the run row is written: broker calls are slow, locks are not free.
            positions = _open_positions(schedule)
        try:
            with transaction.atomic():
                run = ScheduledOrderRun.objects.create(
                    schedule=schedule,
                    scheduled_for=scheduled_for,
                    fired_at=now,
                    outcome=RunOutcome.SKIPPED_MISSED if missed else RunOutcome.FIRED,
                )
        except IntegrityError:
            # This time was run already (its next run was set back by hand): never twice.
            _advance(schedule, now=now, result="")
            return None
        if missed:
            run.details = {"late_seconds": round(late, 3), "grace_seconds": schedule.grace_seconds}
            summary = f"Skipped: missed by {late:.0f}s (grace {schedule.grace_seconds}s)."
        else:
            result = _fire_safely(schedule, scheduled_for, positions)
            run.group = result.group
            run.details = {
                "orders": [
                    {
                        "id": o.pk,
                        "account": o.broker_account_id,
                        "client_order_id": o.client_order_id,
                        "status": o.status,
                        "rejection_reason": o.rejection_reason,
                    }
                    for o in result.orders
                ],
                "errors": result.errors,
            }
            if result.errors and not result.orders:
                run.outcome = RunOutcome.FAILED
            summary = _summary(run.outcome, result)
        run.save()
        if not missed:
            run.orders.set(result.orders)
        _advance(schedule, now=now, result=summary)
    return run


def _advance(schedule: ScheduledOrder, *, now: datetime, result: str) -> None:
    """Move a schedule past the time just handled: its cron's next time, or off for a one-off."""
    if schedule.cron:
        schedule.next_run_at = next_run_after(
            cron=schedule.cron, tz=schedule.timezone, after=max(now, schedule.next_run_at)
        )
    else:
        schedule.enabled = False
        schedule.next_run_at = None
    fields = ["next_run_at", "enabled", "updated_at"]
    if result:
        schedule.last_run_at = now
        schedule.last_result = result[:500]
        fields += ["last_run_at", "last_result"]
    schedule.save(update_fields=fields)


def _summary(outcome: str, result: FireResult) -> str:
    placed = len(result.orders)
    rejected = sum(1 for o in result.orders if o.status == OrderStatus.REJECTED)
    parts = [f"{'Fired' if outcome == RunOutcome.FIRED else 'Failed'}: {placed} order(s) placed"]
    if rejected:
        parts.append(f"{rejected} rejected")
    if result.errors:
        first = result.errors[0]
        where = f"account {first['account']}: " if first.get("account") else ""
        parts.append(f"{len(result.errors)} error(s), first {where}{first['error']}")
    return "; ".join(parts) + "."


def _fire_safely(schedule, scheduled_for, positions) -> FireResult:
    try:
        with transaction.atomic():
            return _fire(schedule, scheduled_for, positions)
    except Exception as exc:  # noqa: BLE001 - recorded on the run; the tick goes on
        logger.exception("Schedule %s failed to fire for %s", schedule.pk, scheduled_for)
        return FireResult(errors=[{"error": str(exc) or exc.__class__.__name__}])


def _fire(schedule: ScheduledOrder, scheduled_for: datetime, positions) -> FireResult:
    placed_by = PlacedBy(schedule=str(schedule.pk))
    idempotency_key = f"schedule-{schedule.pk}-{scheduled_for.astimezone(UTC):%Y%m%dT%H%M%S%fZ}"

    def place(account, spec: OrderSpec, key: str, **extra) -> Order:
        client_order_id = run_client_order_id(
            schedule_id=schedule.pk, scheduled_for=scheduled_for, account=account, key=key
        )
        order, _ = order_place(
            team=schedule.team,
            account=account,
            spec=replace(spec, client_order_id=client_order_id),
            placed_by=placed_by,
            idempotency_key=idempotency_key,
            source=EventSource.SCHEDULE,
            **extra,
        )
        return order

    result = FireResult()
    if schedule.kind == ScheduleKind.SQUARE_OFF:
        by_account, result.errors = positions
        for account, rows in by_account:
            for position in rows:
                spec = _closing_spec(position)
                key = f"close|{spec.exchange}|{spec.symbol}|{spec.product}"
                result.orders.append(place(account, spec, key))
        return result

    specs = [spec_from_json(data) for data in schedule.specs]
    accounts = sorted(schedule.accounts.all(), key=lambda a: a.pk)  # a stable lock order
    if schedule.kind == ScheduleKind.ORDER:
        result.orders.append(place(accounts[0], specs[0], "0"))
        return result

    result.group = OrderGroup.objects.create(team=schedule.team, specs=schedule.specs)
    for account in accounts:
        for sequence, spec in enumerate(specs):
            order = place(
                account, spec, str(sequence), group=result.group, sequence=sequence, enqueue=False
            )
            result.orders.append(order)
    pending_accounts = sorted(
        {o.broker_account_id for o in result.orders if o.status == OrderStatus.PENDING}
    )
    if pending_accounts:
        group_id = result.group.pk
        transaction.on_commit(lambda: group_submit_enqueue(group_id, pending_accounts), robust=True)
    return result


def run_client_order_id(
    *, schedule_id: int, scheduled_for: datetime, account: BrokerAccount, key: str
) -> str:
    """The same client order id for the same (schedule, run time, account, order), every time.

    Hex digits only (brokers take alphanumeric tags), cut to the broker's length limit (Angel
    takes 19 characters): 18 hex digits are 72 bits, no collision in practice.
    """
    raw = f"{schedule_id}|{scheduled_for.astimezone(UTC).isoformat()}|{account.pk}|{key}"
    digest = hashlib.sha256(raw.encode()).hexdigest()
    return ("s" + digest)[: min(account.adapter_class.client_order_id_max_length, 24)]


def _open_positions(schedule: ScheduledOrder) -> tuple[list, list[dict]]:
    """``([(account, non-flat positions)], errors)``: one account's failure is only recorded."""
    if schedule.whole_team:
        accounts = BrokerAccount.objects.for_team(schedule.team).connected()
    else:
        accounts = schedule.accounts.all()
    by_account, failures = [], []
    for account in sorted(accounts, key=lambda a: a.pk):
        try:
            rows = broker_call(account, lambda adapter: adapter.positions())
        except Exception as exc:  # noqa: BLE001 - a broker failure is recorded, not raised
            logger.info("Square-off of account %s: positions unavailable: %s", account.pk, exc)
            failures.append({"account": account.pk, "error": str(exc) or type(exc).__name__})
            continue
        by_account.append((account, [row for row in rows if row.quantity]))
    return by_account, failures


def _closing_spec(position) -> OrderSpec:
    product = position.product if position.product in {p.value for p in Product} else None
    return OrderSpec(
        symbol=position.symbol,
        exchange=position.exchange,
        side=Side.SELL if position.quantity > 0 else Side.BUY,
        quantity=abs(position.quantity),
        order_type=OrderType.MARKET,
        product=Product(product) if product else Product.INTRADAY,
        reference_price=position.last_price,
    )


def _now() -> datetime:
    return timezone.now()
