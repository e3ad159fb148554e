"""Every change to an order goes through here: the API, the admin, schedules and tasks call these.

The life of an order:

1. ``order_place`` runs the pre-trade checks and writes the order PENDING (or REJECTED, with the
   reason, when a check fails: nothing reaches the broker), then queues ``order_submit_task``
   once the transaction commits.
2. ``order_submit`` claims the order: PENDING -> SUBMITTING with its event, a compare-and-set
   that locks the row and commits (one statement on PostgreSQL); then, holding no transaction,
   it calls the broker and records the answer. A broker that certainly did not
   take the order (unreachable, 503, 429) sends it back to PENDING to be retried with backoff; an
   answer that never came (timeout, reset after sending) makes it UNKNOWN.
3. ``order_reconcile`` resolves SUBMITTING (a worker died mid-submit) and UNKNOWN orders by asking
   the broker for the order by its client order id. It never sends the order again: if the
   broker's order book still lacks it once ``ORDERS_RECONCILE_GRACE_SECONDS`` have passed since
   it was sent, the book is taken as authoritative, and the order is REJECTED with a reason
   saying it never reached the broker and was not resent. The client may place it again.
4. ``order_sync`` follows working orders (fills, cancellations) from the broker.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from algoways.cache import cache_add_many
from algoways.db import PrecompiledQuery
from brokers import instruments
from brokers.adapters import errors
from brokers.adapters.base import (
    BrokerOrder,
    OrderAck,
    OrderModification,
    OrderRequest,
    OrderType,
    Product,
    Side,
    Validity,
)
from brokers.adapters.base import OrderStatus as BrokerStatus
from brokers.models import BrokerAccount
from brokers.services import broker_call

from . import notify, risk
from .models import (
    FINAL_STATUSES,
    INITIAL_STATUSES,
    WORKING_STATUSES,
    EventSource,
    IdempotencyRecord,
    IllegalTransition,
    Order,
    OrderEvent,
    OrderGroup,
    OrderStatus,
    TeamTradingState,
    check_transition,
)

logger = logging.getLogger(__name__)
S = OrderStatus

#: The broker's normalized status -> ours. The broker's PENDING means received and not yet
#: working on the exchange: for us the broker has acknowledged it, so it is OPEN.
STATUS_FROM_BROKER: dict[BrokerStatus, OrderStatus] = {
    BrokerStatus.PENDING: S.OPEN,
    BrokerStatus.OPEN: S.OPEN,
    BrokerStatus.PARTIALLY_FILLED: S.PARTIALLY_FILLED,
    BrokerStatus.FILLED: S.FILLED,
    BrokerStatus.CANCELLED: S.CANCELLED,
    BrokerStatus.REJECTED: S.REJECTED,
    BrokerStatus.EXPIRED: S.EXPIRED,
}
SESSION_EXPIRED_REASON = "Broker session expired: log in again."


def setting(name: str, default):
    return getattr(settings, name, default)


# Errors the API maps onto answers --------------------------------------------------------------


class OrderConflict(Exception):
    """The order is not in a state that allows this (409 for API clients)."""


class DuplicateClientOrderId(OrderConflict):
    """The client order id is already used on this account by a different order."""


# Inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderSpec:
    """What a client asks for; validated by the API serializer or the caller."""

    symbol: str
    exchange: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    product: Product = Product.INTRADAY
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    validity: Validity = Validity.DAY
    client_order_id: str = ""
    reference_price: Decimal | None = None

    FIELDS = (
        "symbol",
        "exchange",
        "side",
        "quantity",
        "order_type",
        "product",
        "price",
        "trigger_price",
        "validity",
    )

    def matches(self, order: Order) -> bool:
        """True when ``order`` is this spec (a retry with the same client order id)."""
        return all(_same(getattr(self, name), getattr(order, name)) for name in self.FIELDS)


def _same(ours, theirs) -> bool:
    if ours is None or theirs is None:
        return ours is None and theirs is None
    if isinstance(ours, Decimal) or isinstance(theirs, Decimal):
        return Decimal(str(ours)) == Decimal(str(theirs))
    return str(ours) == str(theirs)


@dataclass(frozen=True)
class PlacedBy:
    membership: Any = None
    api_key: Any = None
    schedule: str = ""


@dataclass
class SubmitResult:
    """What a submit or reconcile attempt left behind, and what the task should do next."""

    order_id: int
    status: str
    #: Send again after this many seconds (the order is PENDING again).
    retry_in: float | None = None
    #: Ask the broker about the order after this many seconds (SUBMITTING or UNKNOWN).
    reconcile_in: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.retry_in is None and self.reconcile_in is None

    @property
    def resume_in(self) -> float | None:
        """Seconds until the order's next step (a resend or a reconciliation); None if settled."""
        return self.retry_in if self.retry_in is not None else self.reconcile_in


# The state machine -----------------------------------------------------------------------------


class OrderChanged(Exception):
    """The order's status changed under us (another worker); re-read it and decide again."""


def order_transition(
    *,
    order: Order,
    to_status: str,
    source: str,
    message: str = "",
    broker_status: str = "",
    data: dict | None = None,
    **fields,
) -> OrderEvent:
    """Apply one status change and write its event, in one transaction, or raise.

    Raises IllegalTransition for a move the state machine forbids, and OrderChanged when the row
    no longer has the status ``order`` says it has (a compare-and-set, so that a worker without
    a lock cannot overwrite another's change). Either way nothing is written.
    """
    change = _transition(
        order,
        to_status=to_status,
        source=source,
        message=message,
        broker_status=broker_status,
        data=data,
        now=timezone.now(),
        **fields,
    )
    _transitions_write([change], from_status=order.status)
    return change[2]


def _transition(
    order: Order,
    *,
    to_status: str,
    source: str,
    now,
    message: str = "",
    broker_status: str = "",
    data: dict | None = None,
    **fields,
) -> tuple[Order, dict, OrderEvent]:
    """One status change of ``order``, not written yet: (order, row values, event).

    Raises IllegalTransition for a move the state machine forbids.
    """
    check_transition(order.status, to_status)
    values = {"status": to_status, "updated_at": now, **fields}
    if broker_status:
        values["broker_status"] = broker_status[:64]
    event = OrderEvent(
        order=order,
        from_status=order.status,
        to_status=to_status,
        source=source,
        broker_status=broker_status[:64],
        message=message,
        data=data or {},
        created_at=now,
    )
    return order, values, event


def _transitions_write(changes: list[tuple[Order, dict, OrderEvent]], *, from_status: str) -> None:
    """Write status changes of orders that are all ``from_status`` and their events; the orders
    then hold the new values.

    A compare-and-set: when a row is no longer ``from_status`` (another worker changed it),
    raises OrderChanged and nothing is written. On PostgreSQL one statement locks the rows,
    checks them all, updates them and inserts the events: atomic by itself, so outside a
    transaction it commits alone, one round trip in all. On SQLite an UPDATE and an insert in a
    transaction (a savepoint for several, so that a partial match is undone without spoiling
    the caller's transaction).
    """
    if not changes:
        return
    from django.db import connection

    fields = sorted({name for _, values, _ in changes for name in values})
    rows = _row_values(changes, fields)
    if connection.vendor == "postgresql":
        written = _transitions_write_in_one_statement(rows, fields, changes, from_status)
    elif len(changes) == 1:
        # No savepoint (two round trips saved on every change): nothing in the block raises.
        with transaction.atomic(savepoint=False):
            written = _rows_update(rows, fields, from_status=from_status) == 1
            if written:
                OrderEvent.objects.bulk_create([event for _, _, event in changes])
    else:
        try:
            with transaction.atomic():
                if _rows_update(rows, fields, from_status=from_status) != len(rows):
                    raise OrderChanged(f"An order is no longer {from_status}.")
                OrderEvent.objects.bulk_create([event for _, _, event in changes])
            written = True
        except OrderChanged:
            written = False
    if not written:
        raise OrderChanged(f"An order is no longer {from_status}.")
    for order, values, _ in changes:
        for name, value in values.items():
            setattr(order, name, value)
    _settled_notify(changes)


def _row_values(changes: list[tuple[Order, dict, OrderEvent]], fields: list[str]) -> list[list]:
    """Per change, the database values of its order's primary key and of ``fields``: the
    change's new value, else the order's own. (The orders keep their values until written.)"""
    connection = _connection_itself()
    columns = [Order._meta.get_field(name) for name in fields]
    return [
        [
            order.pk,
            *(
                field.get_db_prep_save(
                    values[field.name] if field.name in values else getattr(order, field.attname),
                    connection,
                )
                for field in columns
            ),
        ]
        for order, values, _ in changes
    ]


def _connection_itself():
    """This thread's default database connection itself, not ``django.db.connection``'s proxy,
    which finds it again on every attribute read: a field's preparation reads several, for every
    value of hundreds of rows in a fan-out."""
    from django.db import DEFAULT_DB_ALIAS, connections

    return connections[DEFAULT_DB_ALIAS]


def _rows_update(rows: list[list], fields: list[str], *, from_status: str) -> int:
    """UPDATE ``fields`` of ``rows`` (_row_values) that are still ``from_status``, each row its
    own values, in one statement: ``UPDATE ... FROM (VALUES ...)``. Returns how many matched.

    Django's bulk_update says the same with a CASE WHEN per field and row, which it builds and
    compiles in Python: for a fan-out's hundreds of rows that cost more CPU than their broker
    calls (a profile of 500 accounts: 45% of the worker's time). SQLite only; PostgreSQL's is
    _transitions_write_in_one_statement.
    """
    from django.db import connection

    sql = _rows_update_sql(tuple(fields), row_count=len(rows))
    params = [value for row in rows for value in row]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, from_status])
        return cursor.rowcount


@functools.lru_cache(maxsize=256)
def _rows_update_sql(fields: tuple[str, ...], *, row_count: int) -> str:
    """_rows_update's statement (built once: a few kinds of change make most of them)."""
    from django.db import connection

    quote = connection.ops.quote_name
    table = quote(Order._meta.db_table)
    columns = [Order._meta.pk, *(Order._meta.get_field(name) for name in fields)]
    row_placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # VALUES columns are column1, column2, ... on SQLite.
    assignments = ", ".join(
        f"{quote(field.column)} = v.column{number}"
        for number, field in enumerate(columns[1:], start=2)
    )
    return (
        f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row_placeholder] * row_count)})"
        f" AS v WHERE {table}.{quote(Order._meta.pk.column)} = v.column1 "
        f"AND {table}.{quote(Order._meta.get_field('status').column)} = %s"
    )


def _transitions_write_in_one_statement(
    rows: list[list],
    fields: list[str],
    changes: list[tuple[Order, dict, OrderEvent]],
    from_status: str,
) -> bool:
    """PostgreSQL: lock the orders of ``rows`` (_row_values) still ``from_status``, and only if
    all are, UPDATE them (each its own values) and insert the events, in one statement;
    whether it wrote.

    Rows and events travel as one typed array per column, as Django's bulk_create sends rows:
    the statement's text is the same whatever the number of rows, so psycopg and PostgreSQL
    parse and plan it once (a statement of over 50 parameters psycopg parses on every call, in
    Python: 13% of the worker's time in a 500-account fan-out).

    One row, the usual claim or answer of a single order, needs no lock taken first: its
    UPDATE ... WHERE status is the whole compare-and-set, and its event is inserted only if
    it updated (_one_transition_write_sql). Writing a FOR UPDATE lock into the row, then the row,
    took a third more time (1.2 against 0.8 ms a claim, committed, in process).
    """
    from django.db import connection

    events = [event for _, _, event in changes]
    if len(rows) == 1:
        order_id, *values = rows[0]
        sql = _one_transition_write_sql(tuple(fields))
        params = [*values, order_id, from_status]
        params += _insert_values(events[0], _insert_fields(OrderEvent, skip="order"))
    else:
        event_fields = _insert_fields(OrderEvent)
        params = [list(column) for column in zip(*rows, strict=True)]
        params += [from_status, from_status, len(rows)]
        params += [
            list(column)
            for column in zip(
                *(_insert_values(event, event_fields) for event in events), strict=True
            )
        ]
        sql = _transitions_write_sql(tuple(fields))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        written = cursor.fetchall()
    if not written:
        return False
    event_ids = dict(written)
    for event in events:
        _mark_inserted(event, event_ids[event.order_id])
    return True


@functools.lru_cache(maxsize=64)
def _one_transition_write_sql(fields: tuple[str, ...]) -> str:
    """_transitions_write_in_one_statement's statement for one order (built once per kind)."""
    from django.db import connection

    quote = connection.ops.quote_name
    table = quote(Order._meta.db_table)
    pk = quote(Order._meta.pk.column)
    columns = [Order._meta.get_field(name) for name in fields]
    assignments = ", ".join(
        f"{quote(field.column)} = {_typed_placeholders([field])}" for field in columns
    )
    return (
        f"WITH changed AS (UPDATE {table} SET {assignments} WHERE {pk} = %s "
        f"AND {quote(Order._meta.get_field('status').column)} = %s RETURNING {pk}) "
        f"{_event_insert_sql(source='changed')}"
    )


@functools.lru_cache(maxsize=64)
def _transitions_write_sql(fields: tuple[str, ...]) -> str:
    """_transitions_write_in_one_statement's statement (built once per kind of change).

    ``locked`` takes the rows' locks (FOR UPDATE re-checks the status of a row another
    transaction changed meanwhile); ``changed`` updates them only when every row was locked;
    the events are inserted for the rows changed. One statement sees one snapshot and is
    atomic: all or nothing.
    """
    from django.db import connection

    quote = connection.ops.quote_name
    table = quote(Order._meta.db_table)
    pk = f"{table}.{quote(Order._meta.pk.column)}"
    status = f"{table}.{quote(Order._meta.get_field('status').column)}"

    columns = [Order._meta.pk, *(Order._meta.get_field(name) for name in fields)]
    names = [f"column{number}" for number in range(1, len(columns) + 1)]
    assignments = ", ".join(
        f"{quote(field.column)} = v.{name}"
        for name, field in zip(names[1:], columns[1:], strict=True)
    )
    event_fields = _insert_fields(OrderEvent)
    event_columns = ", ".join(quote(field.column) for field in event_fields)
    event_order = quote(OrderEvent._meta.get_field("order").column)
    return (
        f"WITH v AS (SELECT * FROM UNNEST({_typed_placeholders(columns, arrays=True)}) "
        f"AS v({', '.join(names)})), "
        f"locked AS (SELECT {pk} FROM {table} JOIN v ON {pk} = v.column1 "
        f"WHERE {status} = %s FOR UPDATE OF {table}), "
        f"changed AS (UPDATE {table} SET {assignments} FROM v WHERE {pk} = v.column1 "
        f"AND {status} = %s AND (SELECT count(*) FROM locked) = %s RETURNING {pk}), "
        f"new_events AS (INSERT INTO {quote(OrderEvent._meta.db_table)} ({event_columns}) "
        f"SELECT * FROM UNNEST({_typed_placeholders(event_fields, arrays=True)}) "
        f"AS e({event_columns}) "
        f"WHERE e.{event_order} IN (SELECT * FROM changed) "
        f"RETURNING {event_order}, {quote(OrderEvent._meta.pk.column)}) "
        f"SELECT * FROM new_events"
    )


def _settled_notify(changes: list[tuple[Order, dict, OrderEvent]]) -> None:
    """A waiting API request hears of each order settled, once the change is committed."""
    settled = [
        order.pk
        for order, _, event in changes
        if event.to_status != event.from_status and event.to_status not in notify.IN_FLIGHT
    ]
    if settled:
        transaction.on_commit(lambda: notify.orders_settled(settled), robust=True)


# Placing -------------------------------------------------------------------------------------

#: Placement's locking read: the account with its kill switches and whether risk limits apply.
ACCOUNT_FOR_PLACING = PrecompiledQuery(
    lambda pk: risk.with_trading_controls(
        BrokerAccount.objects.select_for_update(of=("self",))
    ).filter(pk=pk),
    pk=int,
)


def order_place(
    *,
    team,
    account: BrokerAccount,
    spec: OrderSpec,
    placed_by: PlacedBy | None = None,
    idempotency_key: str = "",
    group: OrderGroup | None = None,
    sequence: int = 0,
    source: str = EventSource.API,
    enqueue: bool = True,
) -> tuple[Order, bool]:
    """Accept an order: checks, then a PENDING row queued for submission after commit.

    Returns ``(order, created)``. A retry with a client order id already used on the account for
    the same spec returns that order (``created`` False); for another spec it raises
    DuplicateClientOrderId. An order failing a pre-trade check (halt, risk limits, unknown
    instrument) is stored REJECTED with the reason and never reaches the broker.

    An ``account`` read with its trading controls just before (``risk.with_trading_controls``,
    as the API's validation reads it) is not read again, unless the checks must see every
    earlier order of the account: then it is read locked. A halt switched on meanwhile still
    stops the order: the worker checks the switches again when it claims the order to send it.
    """
    if account.team_id != team.pk:
        raise ValueError("The broker account belongs to another team.")
    placed_by = placed_by or PlacedBy()
    placing = {
        "team": team,
        "spec": spec,
        "client_order_id": spec.client_order_id or account.adapter_class.new_client_order_id(),
        "placed_by": placed_by,
        "idempotency_key": idempotency_key,
        "group": group,
        "sequence": sequence,
        "source": source,
    }
    if risk.read_with_trading_controls(account) and not _checks_need_earlier_orders(
        account, [spec]
    ):
        # No lock and no transaction of our own: on PostgreSQL the order and its event go in
        # in one statement, which commits by itself (three round trips fewer than BEGIN,
        # two INSERTs and COMMIT).
        order = _order_create(account=account, **placing)
    else:
        with transaction.atomic():
            # One placement at a time per account (PostgreSQL), so orders-per-minute counts and
            # the client order id check see every earlier order. The same read brings the
            # account's and the team's kill switches and whether any risk limits apply.
            account = ACCOUNT_FOR_PLACING.first(pk=account.pk)
            if account is None:
                raise BrokerAccount.DoesNotExist("The broker account was deleted.")
            if spec.client_order_id:  # the client's own id: this may be a retry
                existing = Order.objects.filter(
                    broker_account=account, client_order_id=spec.client_order_id
                ).first()
                if existing is not None:
                    return _existing_for_retry(existing, spec), False
                try:
                    with transaction.atomic():
                        order = _order_create(account=account, **placing)
                except IntegrityError:
                    # A concurrent request with the same client order id won (SQLite, or a
                    # race around the account lock): theirs is the order.
                    existing = Order.objects.get(
                        broker_account=account, client_order_id=spec.client_order_id
                    )
                    return _existing_for_retry(existing, spec), False
            else:
                # A generated id has 76 or more random bits: it collides with nothing, so the
                # insert needs no savepoint to recover from (two round trips fewer).
                order = _order_create(account=account, **placing)
    if order.status == S.PENDING and enqueue:
        order_id = order.pk
        transaction.on_commit(lambda: _enqueue_submit(order_id), robust=True)
    return order, True


def _order_create(*, account: BrokerAccount, source: str, **checking) -> Order:
    """Check and store one order with its creation event: PENDING, or REJECTED with the reason
    of the first pre-trade check it fails."""
    order, rejection = _checked_order(account=account, **checking)
    assert order.status in INITIAL_STATUSES
    _order_insert(order, _creation_event(order, rejection, source))
    return order


def _checks_need_earlier_orders(account: BrokerAccount, specs: list[OrderSpec]) -> bool:
    """Whether checking these orders needs every earlier order of the account stored first, so
    under the account's lock: a client's own order id (a retry?) or orders-per-minute counts
    (``account`` read with its trading controls)."""
    return account.has_risk_limits or any(spec.client_order_id for spec in specs)


def _checked_order(
    *,
    team,
    account: BrokerAccount,
    spec: OrderSpec,
    client_order_id: str,
    placed_by: PlacedBy,
    idempotency_key: str = "",
    group: OrderGroup | None = None,
    sequence: int = 0,
    instrument_cache: dict | None = None,
) -> tuple[Order, risk.RiskVerdict | None]:
    """The unsaved Order for ``spec`` on ``account`` (locked by the caller) after the pre-trade
    checks: PENDING, or REJECTED with the first check it fails (also returned).

    ``instrument_cache`` shares instrument lookups among the children of one group.
    """
    rejection = _pre_trade_rejection(team=team, account=account, spec=spec)
    instrument = None
    if rejection is None:
        lookup = (account.broker, spec.exchange, spec.symbol)
        try:
            if instrument_cache is not None and lookup in instrument_cache:
                instrument = instrument_cache[lookup]
            else:
                instrument = instruments.ensure_known_instrument(
                    broker=account.broker, exchange=spec.exchange, symbol=spec.symbol
                )
        except errors.InvalidInstrument as exc:
            instrument = exc
        if instrument_cache is not None:
            instrument_cache[lookup] = instrument
        if isinstance(instrument, errors.InvalidInstrument):
            rejection = risk.RiskVerdict("invalid_instrument", instrument.message)
            instrument = None
    order = Order(
        team=team,
        broker_account=account,
        group=group,
        sequence=sequence,
        client_order_id=client_order_id,
        idempotency_key=idempotency_key,
        symbol=spec.symbol,
        exchange=spec.exchange,
        broker_symbol=instrument.broker_symbol if instrument else "",
        broker_token=instrument.broker_token if instrument else "",
        side=spec.side,
        quantity=spec.quantity,
        order_type=spec.order_type,
        product=spec.product,
        price=spec.price,
        trigger_price=spec.trigger_price,
        validity=spec.validity,
        reference_price=spec.reference_price,
        status=S.REJECTED if rejection else S.PENDING,
        rejection_reason=rejection.reason if rejection else "",
        placed_by_membership=placed_by.membership,
        placed_by_api_key=placed_by.api_key,
        placed_by_schedule=placed_by.schedule,
        enqueued_at=None if rejection else timezone.now(),
    )
    return order, rejection


def _order_insert(order: Order, event: OrderEvent) -> None:
    """Insert a new order with its creation event, and give both their ids.

    On PostgreSQL in one statement (the event's INSERT takes the order's id from the order's
    INSERT ... RETURNING): atomic by itself, it needs no transaction of the caller's. It sends
    no save signals (nothing listens for these models'). On SQLite, which has no INSERT in a
    WITH, two saves in a transaction.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        with transaction.atomic(savepoint=False):
            order.save()
            event.save()
        return
    params = _insert_values(order, _insert_fields(Order))
    params += _insert_values(event, _insert_fields(OrderEvent, skip="order"))
    with connection.cursor() as cursor:
        cursor.execute(_order_insert_sql(), params)
        order_id, event_id = cursor.fetchone()
    _mark_inserted(order, order_id)
    _mark_inserted(event, event_id)
    event.order = order


def _mark_inserted(instance, pk: int) -> None:
    """Give a row inserted by raw SQL its id and mark it saved, as Django's save would."""
    from django.db import connection

    instance.pk = pk
    instance._state.adding = False
    instance._state.db = connection.alias


def _insert_values(instance, fields) -> list:
    """The database values of ``fields`` of a new ``instance``, as Django's save prepares them."""
    connection = _connection_itself()
    return [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]


@functools.cache
def _insert_fields(model, *, skip: str = "") -> tuple:
    """The columns an INSERT of ``model`` gives values for, as Django's save does: all but the
    auto-incremented primary key (and ``skip``). Listed once: every accept asks."""
    return tuple(
        field
        for field in model._meta.local_concrete_fields
        if field is not model._meta.auto_field and not field.generated and field.name != skip
    )


def _typed_placeholders(fields, *, arrays: bool = False) -> str:
    """A parameter per field, cast to its column's type (to an array of it, with ``arrays``):
    PostgreSQL then knows every parameter's type when it prepares the statement."""
    from django.db import connection

    suffix = "[]" if arrays else ""
    return ", ".join(f"%s::{field.db_type(connection).split('(')[0]}{suffix}" for field in fields)


@functools.cache
def _order_insert_sql() -> str:
    """_order_insert's statement on PostgreSQL (built once)."""
    from django.db import connection

    quote = connection.ops.quote_name
    order_fields = _insert_fields(Order)
    return (
        f"WITH new_order AS (INSERT INTO {quote(Order._meta.db_table)} "
        f"({', '.join(quote(field.column) for field in order_fields)}) "
        f"VALUES ({_typed_placeholders(order_fields)}) "
        f"RETURNING {quote(Order._meta.pk.column)}) "
        f"{_event_insert_sql(source='new_order')}"
    )


def _event_insert_sql(*, source: str) -> str:
    """INSERT of one event (its values as parameters, but for its order) for the order whose id
    the query ``source`` returns, if it returns one; RETURNING the order's and the event's ids."""
    from django.db import connection

    quote = connection.ops.quote_name
    event_fields = _insert_fields(OrderEvent, skip="order")
    event_order = quote(OrderEvent._meta.get_field("order").column)
    return (
        f"INSERT INTO {quote(OrderEvent._meta.db_table)} "
        f"({event_order}, {', '.join(quote(field.column) for field in event_fields)}) "
        f"SELECT {source}.{quote(Order._meta.pk.column)}, {_typed_placeholders(event_fields)} "
        f"FROM {source} RETURNING {event_order}, {quote(OrderEvent._meta.pk.column)}"
    )


def _creation_event(order: Order, rejection: risk.RiskVerdict | None, source: str) -> OrderEvent:
    return OrderEvent(
        order=order,
        from_status="",
        to_status=order.status,
        source=source,
        message=rejection.reason if rejection else "Accepted.",
        data={"code": rejection.code} if rejection else {},
    )


def _existing_for_retry(existing: Order, spec: OrderSpec) -> Order:
    if not spec.matches(existing):
        raise DuplicateClientOrderId(
            f"The client order id {existing.client_order_id!r} is already used on this "
            "account by a different order."
        )
    return existing


def _pre_trade_rejection(*, team, account, spec: OrderSpec) -> risk.RiskVerdict | None:
    if spec.order_type not in account.adapter_class.order_types:
        return risk.RiskVerdict(
            "order_type_not_supported",
            f"{account.adapter_class.name} does not take {spec.order_type} orders.",
        )
    return risk.risk_check(
        team=team,
        account=account,
        symbol=spec.symbol,
        exchange=spec.exchange,
        quantity=spec.quantity,
        price=spec.price,
        trigger_price=spec.trigger_price,
        reference_price=spec.reference_price,
    )


def _enqueue_submit(order_id: int) -> None:
    from .tasks import order_submit_task

    order_submit_task.delay(order_id)


def order_group_place(
    *,
    team,
    accounts: Iterable[BrokerAccount],
    specs: list[OrderSpec],
    placed_by: PlacedBy | None = None,
    enqueue: bool = True,
) -> OrderGroup:
    """Place every spec on every account: one ordinary child Order each, in one transaction.

    After commit the children are submitted concurrently across accounts, and in ``specs``
    order within each account (see ``order_group_submit``).
    """
    placed_by = placed_by or PlacedBy()
    accounts = list(accounts)
    account_ids = {account.pk for account in accounts if account.team_id == team.pk}
    if len(account_ids) != len({account.pk for account in accounts}):
        raise ValueError("A broker account belongs to another team.")
    with transaction.atomic():
        group = OrderGroup.objects.create(
            team=team,
            specs=[_spec_json(spec) for spec in specs],
            placed_by_membership=placed_by.membership,
            placed_by_api_key=placed_by.api_key,
        )
        # Every account locked (in a stable order) and read with its controls in one query.
        locked = risk.with_trading_controls(
            BrokerAccount.objects.select_for_update(of=("self",))
        ).filter(pk__in=account_ids)
        children: list[tuple[Order, risk.RiskVerdict | None]] = []
        instrument_cache: dict = {}
        for account in locked.order_by("pk"):
            # Those accounts take order_place, one child at a time.
            one_by_one = _checks_need_earlier_orders(account, specs)
            for sequence, spec in enumerate(specs):
                if one_by_one:
                    order_place(
                        team=team,
                        account=account,
                        spec=spec,
                        placed_by=placed_by,
                        group=group,
                        sequence=sequence,
                        enqueue=False,
                    )
                    continue
                children.append(
                    _checked_order(
                        team=team,
                        account=account,
                        spec=spec,
                        client_order_id=account.adapter_class.new_client_order_id(),
                        placed_by=placed_by,
                        group=group,
                        sequence=sequence,
                        instrument_cache=instrument_cache,
                    )
                )
        Order.objects.bulk_create([order for order, _ in children])
        OrderEvent.objects.bulk_create(
            [_creation_event(order, rejection, EventSource.API) for order, rejection in children]
        )
        account_ids = list(
            group.orders.filter(status=S.PENDING)
            .order_by("broker_account_id")
            .values_list("broker_account_id", flat=True)
            .distinct()
        )
        if enqueue and account_ids:
            group_id = group.pk
            transaction.on_commit(lambda: group_submit_enqueue(group_id, account_ids), robust=True)
    return group


def _spec_json(spec: OrderSpec) -> dict:
    return {
        name: (str(value) if value is not None else None)
        for name in (*OrderSpec.FIELDS, "client_order_id", "reference_price")
        for value in [getattr(spec, name)]
    }


def group_submit_enqueue(group_id: int, account_ids: list[int]) -> None:
    """Queue the sending of a group's children: one task per ORDERS_FANOUT_CHUNK accounts, so
    that a large fan-out is spread over the worker processes."""
    from .tasks import order_group_submit_task

    chunk = int(setting("ORDERS_FANOUT_CHUNK", 256))
    for start in range(0, len(account_ids), chunk):
        order_group_submit_task.delay(group_id, account_ids[start : start + chunk])


# Submitting ------------------------------------------------------------------------------------


def _order_to_send(queryset, pk: int):
    return (
        queryset.select_related("broker_account__session", "broker_account__team__trading_state")
        .filter(pk=pk)
        .order_by()
    )


#: The worker's read: the order with its account, session and halt switches.
ORDER_TO_SEND = PrecompiledQuery(lambda pk: _order_to_send(Order.objects, pk), pk=int)

#: The same, locking the order row, when a claim found the order changed. of=("self",): lock the
#: order row only; locking the account and team rows too would deadlock with order_place, which
#: may hold the account row and key-share locks the team row to insert an order.
ORDER_TO_SEND_LOCKED = PrecompiledQuery(
    lambda pk: _order_to_send(Order.objects.select_for_update(of=("self",)), pk), pk=int
)


def order_submit(*, order_id: int) -> SubmitResult:
    """Send one PENDING order to its broker, exactly once; see the module docstring.

    Safe to run any number of times: an order already past PENDING is reconciled (SUBMITTING,
    UNKNOWN) or left alone (anything else), never sent again. The usual case reads the order
    and claims it (PENDING -> SUBMITTING, a compare-and-set committed by itself); when the claim
    finds the order changed by another worker, it decides again under the order's row lock.
    """
    order = ORDER_TO_SEND.first(pk=order_id)
    if order is not None and order.status == S.PENDING:
        try:
            claimed = _claim_for_sending([order])
        except OrderChanged:
            pass
        else:
            return _send(order) if claimed else SubmitResult(order_id, order.status)
    with transaction.atomic():
        order = ORDER_TO_SEND_LOCKED.first(pk=order_id)
        if order is None:
            return SubmitResult(order_id, "gone")
        if order.status in (S.SUBMITTING, S.UNKNOWN):
            found_in_flight = True
        elif order.status != S.PENDING:
            return SubmitResult(order_id, order.status)
        else:
            found_in_flight = False
            if not _claim_for_sending([order]):
                return SubmitResult(order_id, order.status)
    if found_in_flight:
        # A redelivered task (the worker died mid-submit) or a sweep: ask, never resend.
        return order_reconcile(order_id=order_id)
    return _send(order)


def _claim_for_sending(orders: list[Order]) -> list[Order]:
    """Move PENDING ``orders`` to SUBMITTING; the orders to send, once the caller committed.

    Reads their accounts (with sessions and halt switches, as they are now) in one query, unless
    the caller's read brought them; closes instead those failing a last-moment check (a halt,
    too old to send), and moves the rest with one compare-and-set of their rows and events
    (_transitions_write: OrderChanged, and nothing written, if one is no longer PENDING).
    """
    unread = {
        order.broker_account_id for order in orders if not Order.broker_account.is_cached(order)
    }
    accounts = BrokerAccount.objects.select_related("session", "team__trading_state").in_bulk(
        unread
    )
    to_send = []
    for order in orders:
        if order.broker_account_id in accounts:
            order.broker_account = accounts[order.broker_account_id]
        last_moment = _last_moment_rejection(order)
        if last_moment is None:
            to_send.append(order)
            continue
        to_status, reason = last_moment
        order_transition(
            order=order,
            to_status=to_status,
            source=EventSource.TASK,
            message=reason,
            rejection_reason=reason,
        )
    now = timezone.now()
    _transitions_write(
        [
            _transition(
                order,
                to_status=S.SUBMITTING,
                source=EventSource.TASK,
                now=now,
                message=f"Sending to the broker (attempt {order.submit_attempts + 1}).",
                submitted_at=now,
                submit_attempts=order.submit_attempts + 1,
            )
            for order in to_send
        ],
        from_status=S.PENDING,
    )
    return to_send


def _last_moment_rejection(order: Order) -> tuple[str, str] | None:
    """Checks repeated just before sending: a halt switched on, or an order too old to send."""
    halted = risk.trading_halt_reason(account=order.broker_account)
    if halted:
        return S.REJECTED, halted
    ttl = setting("ORDERS_PENDING_TTL_SECONDS", 600)
    if ttl and order.created_at < timezone.now() - timedelta(seconds=ttl):
        return S.EXPIRED, f"Not sent within {ttl} seconds of being placed; it was not sent."
    return None


def _send(order: Order) -> SubmitResult:
    """Send a claimed (SUBMITTING) order to its broker and record the answer."""
    return _answers_record([(order, _broker_answer(order))])[order.pk]


def _broker_answer(order: Order) -> OrderAck | Exception:
    """The broker's answer to placing ``order``: its acknowledgement, or the error it raised."""
    request = order_request(order)
    try:
        return broker_call(order.broker_account, lambda adapter: adapter.place_order(request))
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, by its kind
        return exc


def _answers_record(answers: list[tuple[Order, OrderAck | Exception]]) -> dict[int, SubmitResult]:
    """Record the brokers' answers to SUBMITTING orders: ``{order id: result}``.

    Acknowledgements are written together (one UPDATE, one insert of events), failures one by
    one. An order no longer SUBMITTING had its outcome recorded first by a reconciliation (a
    redelivered task, the sweeper), from the broker's own book: that record stands.
    """
    acks = [(order, answer) for order, answer in answers if isinstance(answer, OrderAck)]
    results = _acks_record(acks) if acks else {}
    for order, answer in answers:
        if not isinstance(answer, OrderAck):
            results[order.pk] = _failure_record(order, answer)
    return results


def _acks_record(acks: list[tuple[Order, OrderAck]]) -> dict[int, SubmitResult]:
    now = timezone.now()
    changes = []
    for order, ack in acks:
        change = _broker_state_change(
            order,
            status=ack.status,
            broker_status=ack.raw_status,
            message=ack.message or "Acknowledged by the broker.",
            broker_order_id=ack.broker_order_id,
            filled_quantity=order.quantity if ack.status == BrokerStatus.FILLED else None,
            source=EventSource.BROKER,
        )
        if change is not None:
            changes.append(_transition(order, now=now, **change))
    try:
        _transitions_write(changes, from_status=S.SUBMITTING)  # committed, if no caller's atomic
    except OrderChanged:
        if len(acks) > 1:  # some were recorded first: the others one by one
            return {
                order_id: result for ack in acks for order_id, result in _acks_record([ack]).items()
            }
        acks[0][0].refresh_from_db()
    else:
        accounts = sorted(
            {order.broker_account_id for order, _, _ in changes if _fill_price_missing(order)}
        )
        if accounts:
            transaction.on_commit(lambda: _enqueue_fill_prices_read(accounts), robust=True)
    return {order.pk: SubmitResult(order.pk, order.status) for order, _ in acks}


def _failure_record(order: Order, exc: Exception) -> SubmitResult:
    """Record a placement that failed, by how: retried later, rejected, or unknown (reconciled
    against the broker's book, never resent)."""
    try:
        if isinstance(exc, errors.RateLimited):
            # Back off by the broker's Retry-After (capped: a countdown must stay well inside
            # the queue's visibility timeout); without one, the usual backoff.
            cap = float(setting("ORDERS_RETRY_MAX_SECONDS", 60.0))
            delay = min(float(exc.retry_after), cap) if exc.retry_after is not None else None
            return _back_to_pending(order, exc, delay if delay is not None else _backoff(order))
        if isinstance(exc, errors.BrokerUnavailable):
            return _back_to_pending(order, exc, _backoff(order))
        if isinstance(exc, errors.SessionExpired):
            return _reject(order, SESSION_EXPIRED_REASON, exc)
        if isinstance(
            exc,
            (
                errors.OrderRejected,
                errors.InputError,
                errors.NotSupported,
                errors.AuthError,
                errors.NotFound,
            ),
        ):
            return _reject(order, str(exc), exc)
        if isinstance(exc, errors.OutcomeUnknown):
            return _unknown(order, exc.message, exc)
        # An adapter bug or a garbled answer after sending: the broker may have the order.
        logger.error("Placing order %s failed unexpectedly", order.pk, exc_info=exc)
        return _unknown(order, f"Unexpected failure while sending: {exc}", exc)
    except OrderChanged:
        order.refresh_from_db()
        return SubmitResult(order.pk, order.status)


def _fill_price_missing(order: Order) -> bool:
    """Filled, its price not given with the acknowledgement, and the broker can tell it."""
    return (
        order.status == S.FILLED
        and order.average_price is None
        and order.broker_account.adapter_class.supports("order_status")
    )


def _enqueue_fill_prices_read(account_ids: list[int]) -> None:
    """Have the fill prices of these accounts' just-filled orders read: each account's at most
    once per ORDERS_FILL_PRICES_WINDOW_SECONDS, all its orders filled meanwhile together (a
    burst), after the window so that every one of them is stored by then. One task reads the
    accounts of one batch of acknowledgements: a fan-out acknowledges hundreds at once, and a
    task published per account cost a fifth of the fan-out worker's CPU."""
    from django.core.cache import cache

    from .tasks import account_fill_prices_read_task

    window = max(1, int(setting("ORDERS_FILL_PRICES_WINDOW_SECONDS", 1)))
    keys = {f"fill-prices-soon:{account_id}": account_id for account_id in account_ids}
    added = set(cache_add_many(list(keys), 1, window))  # one round trip for a fan-out's hundreds
    not_added = [key for key in keys if key not in added]
    # Not added and not there: the cache is down, so nothing says a read is coming.
    there = cache.get_many(not_added) if not_added else {}
    due = [account_id for key, account_id in keys.items() if key in added or key not in there]
    if due:
        account_fill_prices_read_task.apply_async((due,), countdown=window)


#: How far back an account's orders still missing their fill price are looked for.
FILL_PRICES_LOOKBACK = timedelta(hours=1)


def account_fill_prices_read(*, account_id: int) -> int:
    """Complete the fill prices of an account's orders acknowledged filled without one (some
    brokers acknowledge a market order so); returns how many got theirs. Best effort.

    One order-book read answers for all of them where the broker has an order book (Match-Trader
    reads its whole book even for one order's status), else one status read each. It runs on the
    housekeeping queue, after the acknowledgements are recorded: sending never waits for it.
    """
    orders = list(
        Order.objects.select_related("broker_account__session")
        .filter(
            broker_account_id=account_id,
            status__in=(S.FILLED, S.PARTIALLY_FILLED),
            average_price__isnull=True,
            created_at__gte=timezone.now() - FILL_PRICES_LOOKBACK,
        )
        .order_by("pk")
    )
    if not orders or not orders[0].broker_account.adapter_class.supports("order_status"):
        return 0
    account = orders[0].broker_account
    try:
        found = broker_call(account, lambda adapter: _broker_orders(adapter, orders))
    except errors.BrokerError as exc:
        # The orders are placed and filled; the account's next such read (within the lookback)
        # tries their prices again.
        logger.info("Fill prices of account %s unavailable: %s", account_id, exc)
        return 0
    completed = 0
    for order in orders:
        details = found.get(order.pk)
        if details is not None and details.average_price is not None:
            completed += _fill_price_record(order, details)
    return completed


def _fill_price_record(order: Order, details: BrokerOrder) -> bool:
    with transaction.atomic():
        updated = Order.objects.filter(
            pk=order.pk, status__in=(S.FILLED, S.PARTIALLY_FILLED), average_price__isnull=True
        ).update(average_price=details.average_price, updated_at=timezone.now())
        if updated:
            OrderEvent.objects.create(
                order=order,
                from_status=order.status,
                to_status=order.status,
                source=EventSource.BROKER,
                broker_status=details.raw_status[:64],
                message="Fill price reported by the broker.",
                data={"average_price": str(details.average_price)},
            )
    order.average_price = details.average_price
    return bool(updated)


def _broker_orders(adapter, orders: list[Order]) -> dict[int, BrokerOrder]:
    """The broker's view of ``orders`` (of one account), by order id: one order-book request
    when the broker has one, else one status request per order. Orders it lacks are left out."""
    found: dict[int, BrokerOrder] = {}
    if adapter.supports("order_book"):
        book = adapter.order_book()
        by_broker_id = {row.broker_order_id: row for row in book}
        by_client_id = {row.client_order_id: row for row in book if row.client_order_id}
        for order in orders:
            row = by_broker_id.get(order.broker_order_id) or by_client_id.get(order.client_order_id)
            if row is not None:
                found[order.pk] = row
    else:
        for order in orders:
            try:
                found[order.pk] = adapter.order_status(order.broker_order_id)
            except errors.NotFound:
                continue
    return found


def order_request(order: Order) -> OrderRequest:
    return OrderRequest(
        symbol=order.symbol,
        exchange=order.exchange,
        side=Side(order.side),
        quantity=order.quantity,
        order_type=OrderType(order.order_type),
        client_order_id=order.client_order_id,
        product=Product(order.product),
        price=order.price,
        trigger_price=order.trigger_price,
        validity=Validity(order.validity),
        broker_symbol=order.broker_symbol,
        broker_token=order.broker_token,
    )


def _backoff(order: Order) -> float:
    """Exponential backoff with jitter from the order's own attempt count (survives restarts)."""
    base = float(setting("ORDERS_RETRY_BASE_SECONDS", 1.0))
    cap = float(setting("ORDERS_RETRY_MAX_SECONDS", 60.0))
    ceiling = min(cap, base * 2 ** max(order.submit_attempts - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def _broker_data(exc: errors.BrokerError) -> dict:
    return {"error": exc.code, "broker_code": exc.broker_code, "http_status": exc.http_status}


def _back_to_pending(order: Order, exc: errors.BrokerError, delay: float) -> SubmitResult:
    order_transition(
        order=order,
        to_status=S.PENDING,
        source=EventSource.BROKER,
        message=f"Not taken by the broker ({exc}); retrying in {delay:.1f}s.",
        data=_broker_data(exc),
        enqueued_at=timezone.now(),
    )
    return SubmitResult(order.pk, order.status, retry_in=delay)


def _reject(order: Order, reason: str, exc: errors.BrokerError | None = None) -> SubmitResult:
    order_transition(
        order=order,
        to_status=S.REJECTED,
        source=EventSource.BROKER,
        message=reason,
        data=_broker_data(exc) if exc else {},
        rejection_reason=reason,
        broker_message=(exc.message if exc else "")[:2000],
    )
    return SubmitResult(order.pk, order.status)


def _unknown(order: Order, message: str, exc: Exception) -> SubmitResult:
    order_transition(
        order=order,
        to_status=S.UNKNOWN,
        source=EventSource.BROKER,
        message=f"{message} The order is reconciled with the broker's order book; "
        "it is not sent again.",
        data=_broker_data(exc) if isinstance(exc, errors.BrokerError) else {},
    )
    return SubmitResult(order.pk, order.status, reconcile_in=_reconcile_delay())


def _reconcile_delay() -> float:
    return float(setting("ORDERS_RECONCILE_DELAY_SECONDS", 2.0))


def reconcile_grace_seconds() -> float:
    """How long after sending an order may still be missing from the broker's book.

    Never shorter than one full broker round trip: an order cannot be declared missing while
    the request that carries it may still be on its way.
    """
    grace = float(setting("ORDERS_RECONCILE_GRACE_SECONDS", 30))
    round_trip = float(settings.BROKER_CONNECT_TIMEOUT) + float(settings.BROKER_READ_TIMEOUT)
    return max(grace, round_trip + 1)


def order_reconcile(*, order_id: int) -> SubmitResult:
    """Resolve a SUBMITTING or UNKNOWN order from the broker's book, by client order id."""
    order = Order.objects.select_related("broker_account").filter(pk=order_id).first()
    if order is None:
        return SubmitResult(order_id, "gone")
    if order.status not in (S.SUBMITTING, S.UNKNOWN):
        return SubmitResult(order_id, order.status)
    try:
        found = broker_call(
            order.broker_account, lambda adapter: adapter.find_order(order.client_order_id)
        )
    except errors.SessionExpired:
        # Cannot look until someone logs in again; keep asking, slowly.
        return SubmitResult(order_id, order.status, reconcile_in=60.0)
    except (errors.BrokerError, NotImplementedError) as exc:
        logger.info("Reconciling order %s: the broker did not answer (%s)", order_id, exc)
        return SubmitResult(order_id, order.status, reconcile_in=_reconcile_delay() * 5)

    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None or order.status not in (S.SUBMITTING, S.UNKNOWN):
            return SubmitResult(order_id, order.status if order else "gone")
        if found is not None:
            _apply_broker_state(
                order,
                status=found.status,
                broker_status=found.raw_status,
                message=found.message or "Found at the broker by its client order id.",
                broker_order_id=found.broker_order_id,
                filled_quantity=found.filled_quantity,
                average_price=found.average_price,
                source=EventSource.SYNC,
            )
            return SubmitResult(order_id, order.status)
        sent_at = order.submitted_at or order.created_at
        waited = (timezone.now() - sent_at).total_seconds()
        grace = reconcile_grace_seconds()
        if waited < grace:
            return SubmitResult(order_id, order.status, reconcile_in=grace - waited + 0.5)
        reason = (
            f"Never reached the broker: not in its order book {int(waited)}s after it was sent. "
            "It was not sent again; place it again if you still want it."
        )
        order_transition(
            order=order,
            to_status=S.REJECTED,
            source=EventSource.SYNC,
            message=reason,
            rejection_reason=reason,
        )
        return SubmitResult(order_id, order.status)


def _apply_broker_state(order: Order, **state) -> bool:
    """Record what the broker says about ``order``; True when anything changed."""
    change = _broker_state_change(order, **state)
    if change is None:
        return False
    order_transition(order=order, **change)
    return True


def _broker_state_change(
    order: Order,
    *,
    status: BrokerStatus,
    broker_status: str,
    message: str,
    source: str,
    broker_order_id: str = "",
    filled_quantity: Decimal | None = None,
    average_price: Decimal | None = None,
) -> dict | None:
    """What the broker's word on ``order`` changes, as ``order_transition`` arguments; None for
    nothing."""
    target = STATUS_FROM_BROKER[BrokerStatus(status)]
    fields: dict[str, Any] = {}
    if filled_quantity is not None and filled_quantity != order.filled_quantity:
        fields["filled_quantity"] = filled_quantity
    if average_price is not None and average_price != order.average_price:
        fields["average_price"] = average_price
    filled = fields.get("filled_quantity", order.filled_quantity)
    if target == S.OPEN and 0 < filled < order.quantity:
        target = S.PARTIALLY_FILLED
    if broker_order_id and broker_order_id != order.broker_order_id:
        fields["broker_order_id"] = broker_order_id
    new_broker_status = bool(broker_status) and broker_status[:64] != order.broker_status
    if target == order.status and not fields and not new_broker_status:
        return None
    if target == S.REJECTED:
        fields["rejection_reason"] = message or broker_status or "Rejected by the broker."
    if message:
        fields["broker_message"] = message[:2000]
    return {
        "to_status": target,
        "source": source,
        "message": message,
        "broker_status": broker_status,
        "data": {
            key: str(value) if value is not None else None
            for key, value in fields.items()
            if key in ("filled_quantity", "average_price", "broker_order_id")
        },
        **fields,
    }


# Groups ---------------------------------------------------------------------------------------


def order_group_submit(*, group_id: int, account_ids: list[int]) -> dict[int, float]:
    """Submit a group's children on ``account_ids`` concurrently, accounts at once.

    A pool of threads keeps many accounts' broker calls in flight at once, so 500 accounts cost
    about 500 / ORDERS_FANOUT_THREADS round trips of time, not 500. An account with one child to
    send (a trade copied across accounts) has it claimed with the others' in one transaction,
    and this thread records the answers as they come, together (one UPDATE for those arrived
    meanwhile). An account with several (a basket) sends them one after another in ``sequence``
    order on a thread of the same pool. An account stops at the first child that must wait
    (retry or reconcile): ``{account_id: seconds}`` says when to resume it.
    """
    threads = int(setting("ORDERS_FANOUT_THREADS", 32))
    from django.db import connection

    if connection.vendor == "sqlite":
        threads = 1  # SQLite has one writer at a time: threads would only fight over its lock
    claimed, one_by_one = _group_heads_claim(group_id=group_id, account_ids=account_ids)
    resume: dict[int, float] = {}

    def send(item: Order | int):
        if isinstance(item, Order):  # claimed: the broker call only, recorded by record()
            return _broker_answer(item)
        return order_account_children_submit(group_id=group_id, account_id=item)

    def record(finished: list) -> None:
        answered = [(item, result) for item, result in finished if isinstance(item, Order)]
        resume.update(_group_answers_record(group_id, answered))
        for item, delay in finished:
            if not isinstance(item, Order) and delay is not None:
                resume[item] = delay

    run_concurrently([*claimed, *sorted(one_by_one)], send, threads=threads, on_results=record)
    return resume


def _group_answers_record(
    group_id: int, answered: list[tuple[Order, OrderAck | Exception]]
) -> dict[int, float]:
    """Record answers to claimed children; ``{account_id: seconds}`` for those that must wait."""
    if not answered:
        return {}
    try:
        results = _answers_record(answered)
    except Exception:  # noqa: BLE001 - left SUBMITTING: the resumed task reconciles them
        logger.exception("Recording the answers of group %s failed", group_id)
        return {order.broker_account_id: _reconcile_delay() for order, _ in answered}
    return {
        order.broker_account_id: results[order.pk].resume_in
        for order, _ in answered
        if not results[order.pk].settled
    }


def _group_heads_claim(*, group_id: int, account_ids: list[int]) -> tuple[list[Order], set]:
    """Claim for sending the child of each account that has exactly one left, if PENDING.

    Returns ``(claimed orders, accounts for the one-by-one path)``: those with several children
    left, and those whose child was not claimed here (already SUBMITTING or UNKNOWN, locked by a
    sweep or reconciliation, or closed by a last-moment check).
    """
    unanswered = Order.objects.filter(
        group_id=group_id,
        broker_account_id__in=account_ids,
        status__in=[S.PENDING, S.SUBMITTING, S.UNKNOWN],
    ).values_list("pk", "broker_account_id", "status")
    children: dict[int, list[tuple[int, str]]] = {}
    for order_id, account_id, status in unanswered:
        children.setdefault(account_id, []).append((order_id, status))
    single = {
        account_id: rows[0][0]
        for account_id, rows in children.items()
        if len(rows) == 1 and rows[0][1] == S.PENDING
    }
    with transaction.atomic():
        # SKIP LOCKED: a child another worker holds is left to the one-by-one path, which waits.
        locked = Order.objects.select_for_update(skip_locked=True).filter(
            pk__in=single.values(), status=S.PENDING
        )
        claimed = _claim_for_sending(list(locked))
    one_by_one = children.keys() - {order.broker_account_id for order in claimed}
    return claimed, one_by_one


def run_concurrently(
    items: list, work: Callable, *, threads: int, on_results: Callable | None = None
) -> dict:
    """``work(item)`` for every item on ``threads`` threads; ``{item: result}`` for non-None.

    With ``on_results``, the calling thread is handed the results while the threads go on, in
    lists of ``(item, result)``: everything finished since its last call.

    Each thread takes items from a shared queue until none are left, on one database connection
    of its own (Django keeps one per thread), closed when the thread ends: handed back to the
    process's pool on PostgreSQL (settings.DATABASE_POOL), so no backend starts per thread.
    """
    import queue
    import threading

    from django.db import connection, connections

    results: dict = {}

    def deliver(batch: list) -> None:
        results.update((item, result) for item, result in batch if result is not None)
        if on_results is not None:
            on_results(batch)

    # Threads have their own connections: inside a transaction they could not see its rows.
    if threads <= 1 or len(items) <= 1 or connection.in_atomic_block:
        for item in items:
            deliver([(item, work(item))])
        return results

    pending: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    finished: queue.SimpleQueue = queue.SimpleQueue()
    failures: list[BaseException] = []

    def drain() -> None:
        try:
            while True:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                finished.put((item, work(item)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failures.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=drain) for _ in range(min(threads, len(items)))]
    for worker in workers:
        worker.start()
    try:
        delivered = 0
        while delivered < len(items):
            try:
                batch = [finished.get(timeout=0.1)]
            except queue.Empty:
                if any(worker.is_alive() for worker in workers) or not finished.empty():
                    continue
                break  # the threads ended early: a failure, raised below
            while True:
                try:
                    batch.append(finished.get_nowait())
                except queue.Empty:
                    break
            delivered += len(batch)
            deliver(batch)
    finally:
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    return results


def order_account_children_submit(*, group_id: int, account_id: int) -> float | None:
    """Send one account's children of a group in sequence; seconds until a resume, or None."""
    children = Order.objects.filter(
        group_id=group_id,
        broker_account_id=account_id,
        status__in=[S.PENDING, S.SUBMITTING, S.UNKNOWN],
    ).order_by("sequence", "pk")
    try:
        order_ids = list(children.values_list("pk", flat=True))
    except Exception:  # noqa: BLE001 - e.g. no database connection free: resume this account later
        logger.exception("Reading group %s's children on account %s failed", group_id, account_id)
        return _reconcile_delay()
    for order_id in order_ids:
        try:
            result = order_submit(order_id=order_id)
        except Exception:  # noqa: BLE001 - one account's failure must not stop the others
            logger.exception("Submitting order %s of group %s failed", order_id, group_id)
            return _reconcile_delay()
        if not result.settled:
            return result.resume_in
    return None


# Cancel and modify -----------------------------------------------------------------------------


def order_cancel(*, order: Order, source: str = EventSource.API) -> Order:
    """Cancel: locally if it was not sent yet, at the broker if it is working there."""
    with transaction.atomic():
        locked = (
            Order.objects.select_for_update(of=("self",))
            .select_related("broker_account")
            .get(pk=order.pk)
        )
        if locked.status == S.PENDING:
            order_transition(
                order=locked,
                to_status=S.CANCELLED,
                source=source,
                message="Cancelled before it was sent to the broker.",
            )
            return locked
    if locked.status in (S.SUBMITTING, S.UNKNOWN):
        raise OrderConflict(
            "The order is being sent to the broker and its outcome is not known yet; "
            "cancel again in a few seconds."
        )
    if locked.status not in WORKING_STATUSES:
        raise OrderConflict(
            f"The order is {locked.get_status_display().lower()}: nothing to cancel."
        )
    ack = broker_call(
        locked.broker_account, lambda adapter: adapter.cancel_order(locked.broker_order_id)
    )
    _record_ack_after_action(locked, ack, source=source, action="Cancel")
    return locked


def order_modify(*, order: Order, changes: dict, source: str = EventSource.API) -> Order:
    """Change quantity, price, trigger price or type of an order that is pending or working."""
    allowed = {"quantity", "price", "trigger_price", "order_type"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"Cannot modify {sorted(unknown)}")
    changes = {k: v for k, v in changes.items() if v is not None}
    with transaction.atomic():
        # The account first, as order_place takes it: risk limits see one change at a time.
        BrokerAccount.objects.select_for_update().filter(pk=order.broker_account_id).first()
        locked = (
            Order.objects.select_for_update(of=("self",))
            .select_related("broker_account", "team")
            .get(pk=order.pk)
        )
        if locked.status not in (S.PENDING, *WORKING_STATUSES):
            raise OrderConflict(
                f"Only pending or working orders can be modified; this one is {locked.status}."
            )
        verdict = risk.risk_check(
            team=locked.team,
            account=locked.broker_account,
            symbol=locked.symbol,
            exchange=locked.exchange,
            quantity=changes.get("quantity", locked.quantity),
            price=changes.get("price", locked.price),
            trigger_price=changes.get("trigger_price", locked.trigger_price),
            reference_price=locked.reference_price,
            count_rate=False,
        )
        if verdict is not None:
            raise risk.RiskRejected(verdict)
        if locked.status == S.PENDING:
            # Not sent yet: change it here; the worker sends the new version.
            order_transition(
                order=locked,
                to_status=S.PENDING,
                source=source,
                message=_describe_changes(locked, changes),
                data={k: str(v) for k, v in changes.items()},
                **changes,
            )
            return locked
    modification = OrderModification(
        quantity=changes.get("quantity"),
        price=changes.get("price"),
        trigger_price=changes.get("trigger_price"),
        order_type=OrderType(changes["order_type"]) if "order_type" in changes else None,
    )
    broker_call(
        locked.broker_account,
        lambda adapter: adapter.modify_order(locked.broker_order_id, modification),
    )
    order_transition(
        order=locked,
        to_status=locked.status,
        source=source,
        message=_describe_changes(locked, changes),
        data={k: str(v) for k, v in changes.items()},
        **changes,
    )
    return locked


def _describe_changes(order: Order, changes: dict) -> str:
    parts = [f"{name} {getattr(order, name)} -> {value}" for name, value in changes.items()]
    return "Modified: " + ", ".join(parts) + "."


def _record_ack_after_action(order: Order, ack: OrderAck, *, source: str, action: str) -> None:
    try:
        changed = _apply_broker_state(
            order,
            status=ack.status,
            broker_status=ack.raw_status,
            message=ack.message or f"{action} accepted by the broker.",
            source=source,
        )
    except (IllegalTransition, OrderChanged):
        changed = False
    if not changed and order.status in WORKING_STATUSES:
        order_transition(
            order=order,
            to_status=order.status,
            source=source,
            message=f"{action} requested at the broker; the status sync records the outcome.",
            broker_status=ack.raw_status,
        )


# Sync, sweep, housekeeping -------------------------------------------------------------------


def order_sync(*, account: BrokerAccount) -> int:
    """Pull the broker's status of ``account``'s working orders and apply it; returns changes.

    One order-book request when the broker has one (within its rate limits), else one status
    request per order.
    """
    orders = list(Order.objects.filter(broker_account=account).open().order_by("pk"))
    if not orders:
        return 0
    found = broker_call(account, lambda adapter: _broker_orders(adapter, orders))
    changed = 0
    for order in orders:
        row = found.get(order.pk)
        if row is None:
            continue
        try:
            changed += _apply_broker_state(
                order,
                status=row.status,
                broker_status=row.raw_status,
                message=row.message,
                filled_quantity=row.filled_quantity,
                average_price=row.average_price,
                source=EventSource.SYNC,
            )
        except (IllegalTransition, OrderChanged) as exc:
            # A stale answer (the order moved on meanwhile): the next sync sees the truth.
            logger.info("Sync of order %s skipped: %s", order.pk, exc)
    return changed


def accounts_with_open_orders() -> list[int]:
    return list(
        Order.objects.open().order_by().values_list("broker_account_id", flat=True).distinct()
    )


@dataclass
class SweepPlan:
    submit: list[int] = field(default_factory=list)  # PENDING orders to queue again
    groups: list[tuple[int, int]] = field(default_factory=list)  # (group, account) to resume
    reconcile: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)


def orders_sweep() -> SweepPlan:
    """Find stuck orders: PENDING ones whose message was lost or that wait out an outage,
    SUBMITTING ones whose worker died, UNKNOWN ones. Marks them queued and says what to queue.
    """
    stuck_after = timedelta(seconds=float(setting("ORDERS_STUCK_PENDING_SECONDS", 60)))
    grace = timedelta(seconds=reconcile_grace_seconds())
    now = timezone.now()
    plan = SweepPlan()
    candidates = (
        Order.objects.stuck(pending_for=stuck_after, submitting_for=grace)
        # Not queued recently: its message may still be waiting in a busy queue.
        .exclude(enqueued_at__gt=now - stuck_after)
        .order_by("pk")
        .values_list("pk", "status", "group_id", "broker_account_id")[:1000]
    )
    for order_id, status, group_id, account_id in candidates:
        if status == S.PENDING:
            if group_id and (group_id, account_id) not in plan.groups:
                plan.groups.append((group_id, account_id))
            elif not group_id:
                plan.submit.append(order_id)
        else:
            plan.reconcile.append(order_id)
    touched = plan.submit + plan.reconcile
    touched += [
        pk
        for pk in Order.objects.filter(
            status=S.PENDING, group_id__in=[g for g, _ in plan.groups]
        ).values_list("pk", flat=True)
    ]
    Order.objects.filter(pk__in=touched).update(enqueued_at=now)
    return plan


def idempotency_records_cleanup() -> int:
    """Forget idempotency keys older than IDEMPOTENCY_KEY_TTL_HOURS (at least 24 hours)."""
    hours = max(24, int(setting("IDEMPOTENCY_KEY_TTL_HOURS", 24)))
    deleted, _ = IdempotencyRecord.objects.filter(
        created_at__lt=timezone.now() - timedelta(hours=hours)
    ).delete()
    return deleted


# Kill switch -----------------------------------------------------------------------------------


def trading_halt_set(
    *, team, halted: bool, account: BrokerAccount | None = None, reason=""
) -> None:
    """Switch the kill switch of one account, or of the whole team, on or off.

    Orders already queued are checked again just before sending, so a halt stops them too.
    """
    if account is not None:
        if account.team_id != team.pk:
            raise ValueError("The broker account belongs to another team.")
        BrokerAccount.objects.filter(pk=account.pk).update(
            trading_halted=halted, updated_at=timezone.now()
        )
        account.trading_halted = halted
        return
    TeamTradingState.objects.update_or_create(
        team=team,
        defaults={"trading_halted": halted, "halt_reason": reason[:200] if halted else ""},
    )


def order_is_final(order: Order) -> bool:
    return order.status in FINAL_STATUSES
