"""A tiny in-memory exchange shared by the broker simulators.

Each simulator speaks its broker's wire format and keeps its own vocabulary; underneath, this
engine gives every one of them the same honest order lifecycle: market orders fill at the last
price, limit orders rest until the price crosses or they are cancelled, stop orders trigger,
modify works on open orders, and orders beyond available funds are rejected.

It never imports adapter code: simulators are written from the brokers' documentation.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

MARKET, LIMIT, STOP, STOP_LIMIT = "MARKET", "LIMIT", "STOP", "STOP_LIMIT"
BUY, SELL = "BUY", "SELL"
# Engine statuses; each simulator maps them to its broker's words.
OPEN, TRIGGER_PENDING, FILLED, CANCELLED, REJECTED = (
    "OPEN",
    "TRIGGER_PENDING",
    "FILLED",
    "CANCELLED",
    "REJECTED",
)
FINAL = frozenset({FILLED, CANCELLED, REJECTED})


class EngineError(Exception):
    """A request the engine refuses; ``kind`` lets each simulator pick its broker's error."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "not_found", "not_open", "invalid_instrument", "input"
        self.message = message


@dataclass
class SimOrder:
    order_id: str
    account_id: str
    instrument: str  # the simulator's own instrument key, e.g. "NSE:INFY"
    side: str
    quantity: Decimal
    order_type: str
    price: Decimal | None
    trigger_price: Decimal | None
    product: str
    tag: str
    status: str = OPEN
    filled_quantity: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)
    message: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    history: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def pending_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity


@dataclass
class SimPosition:
    instrument: str
    product: str
    quantity: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)
    realised: Decimal = Decimal(0)
    position_id: str = ""


@dataclass
class SimAccount:
    account_id: str
    cash: Decimal
    currency: str = "INR"
    orders: dict[str, SimOrder] = field(default_factory=dict)
    positions: dict[tuple[str, str], SimPosition] = field(default_factory=dict)
    holdings: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # qty, avg

    def blocked_margin(self, prices: dict[str, Decimal]) -> Decimal:
        total = Decimal(0)
        for order in self.orders.values():
            if order.status not in FINAL:
                ref = order.price or order.trigger_price or prices.get(order.instrument, 0)
                total += order.pending_quantity * Decimal(ref)
        return total

    def available(self, prices: dict[str, Decimal]) -> Decimal:
        return self.cash - self.blocked_margin(prices)


class Exchange:
    """Instruments with last prices, accounts with cash, orders, positions and holdings."""

    def __init__(
        self,
        *,
        prices: dict[str, Decimal],
        id_prefix: str = "",
        on_fill: Callable[[SimOrder], None] | None = None,
    ):
        """``on_fill`` hears of every order as it fills, so a simulator need not scan for fills."""
        self.lock = threading.RLock()
        self.on_fill = on_fill
        self.prices = {key: Decimal(str(value)) for key, value in prices.items()}
        self.accounts: dict[str, SimAccount] = {}
        self._ids = itertools.count(1)
        self.id_prefix = id_prefix

    def next_id(self) -> str:
        return f"{self.id_prefix}{int(time.time())}{next(self._ids):06d}"

    def open_account(self, account_id: str, cash: Decimal, currency: str = "INR") -> SimAccount:
        with self.lock:
            account = SimAccount(account_id=account_id, cash=Decimal(str(cash)), currency=currency)
            self.accounts[account_id] = account
            return account

    def account(self, account_id: str) -> SimAccount:
        return self.accounts[account_id]

    def price(self, instrument: str) -> Decimal:
        try:
            return self.prices[instrument]
        except KeyError:
            raise EngineError("invalid_instrument", f"Unknown instrument {instrument}") from None

    # Orders ----------------------------------------------------------------------------------

    def place(
        self,
        account_id: str,
        *,
        instrument: str,
        side: str,
        quantity: Decimal,
        order_type: str,
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        product: str = "",
        tag: str = "",
        order_id: str | None = None,
        extra: dict | None = None,
    ) -> SimOrder:
        """Accept an order; it may fill at once, rest, or be rejected for lack of funds."""
        with self.lock:
            last = self.price(instrument)
            if quantity <= 0:
                raise EngineError("input", "Quantity must be positive")
            if order_type in (LIMIT, STOP_LIMIT) and not price:
                raise EngineError("input", "Price is required for limit orders")
            if order_type in (STOP, STOP_LIMIT) and not trigger_price:
                raise EngineError("input", "Trigger price is required for stop orders")
            account = self.accounts[account_id]
            order = SimOrder(
                order_id=order_id or self.next_id(),
                account_id=account_id,
                instrument=instrument,
                side=side,
                quantity=quantity,
                order_type=order_type,
                price=price,
                trigger_price=trigger_price,
                product=product,
                tag=tag,
                extra=extra or {},
            )
            order.history.append("RECEIVED")
            notional = quantity * (price or trigger_price or last)
            if notional > account.available(self.prices):
                order.status = REJECTED
                order.message = "Insufficient funds"
                order.history.append(REJECTED)
                account.orders[order.order_id] = order
                return order
            order.status = TRIGGER_PENDING if order_type in (STOP, STOP_LIMIT) else OPEN
            order.history.append(order.status)
            account.orders[order.order_id] = order
            self._match(account, order)
            return order

    def modify(
        self,
        account_id: str,
        order_id: str,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        order_type: str | None = None,
    ) -> SimOrder:
        with self.lock:
            order = self.get(account_id, order_id)
            if order.status in FINAL:
                raise EngineError("not_open", f"Order {order_id} is {order.status.lower()}")
            if quantity is not None:
                if quantity < order.filled_quantity or quantity <= 0:
                    raise EngineError("input", "Quantity below filled quantity")
                order.quantity = quantity
            if price is not None:
                order.price = price
            if trigger_price is not None:
                order.trigger_price = trigger_price
            if order_type is not None:
                order.order_type = order_type
            order.updated_at = time.time()
            order.history.append("MODIFIED")
            self._match(self.accounts[account_id], order)
            return order

    def cancel(self, account_id: str, order_id: str) -> SimOrder:
        with self.lock:
            order = self.get(account_id, order_id)
            if order.status in FINAL:
                raise EngineError("not_open", f"Order {order_id} is {order.status.lower()}")
            order.status = CANCELLED
            order.updated_at = time.time()
            order.history.append(CANCELLED)
            return order

    def get(self, account_id: str, order_id: str) -> SimOrder:
        try:
            return self.accounts[account_id].orders[order_id]
        except KeyError:
            raise EngineError("not_found", f"Order {order_id} not found") from None

    def set_price(self, instrument: str, price: Decimal) -> None:
        """Move the market; resting orders that the new price crosses fill."""
        with self.lock:
            self.prices[instrument] = Decimal(str(price))
            for account in self.accounts.values():
                for order in list(account.orders.values()):
                    if order.instrument == instrument and order.status not in FINAL:
                        self._match(account, order)

    # Matching --------------------------------------------------------------------------------

    def _match(self, account: SimAccount, order: SimOrder) -> None:
        last = self.prices[order.instrument]
        if order.status == TRIGGER_PENDING:
            triggered = (order.side == BUY and last >= order.trigger_price) or (
                order.side == SELL and last <= order.trigger_price
            )
            if not triggered:
                return
            order.status = OPEN
            order.history.append("TRIGGERED")
        if order.status != OPEN:
            return
        if order.order_type in (MARKET, STOP):
            self._fill(account, order, last)
        elif (order.side == BUY and last <= order.price) or (
            order.side == SELL and last >= order.price
        ):
            self._fill(account, order, min(last, order.price) if order.side == BUY else last)

    def _fill(self, account: SimAccount, order: SimOrder, price: Decimal) -> None:
        quantity = order.pending_quantity
        order.filled_quantity = order.quantity
        order.average_price = price
        order.status = FILLED
        order.updated_at = time.time()
        order.history.append(FILLED)
        signed = quantity if order.side == BUY else -quantity
        account.cash -= signed * price
        key = (order.instrument, order.product)
        position = account.positions.get(key)
        if position is None:
            position = SimPosition(
                instrument=order.instrument, product=order.product, position_id=self.next_id()
            )
            account.positions[key] = position
        new_quantity = position.quantity + signed
        if position.quantity == 0 or (position.quantity > 0) == (signed > 0):
            total = position.quantity * position.average_price + signed * price
            position.average_price = (total / new_quantity) if new_quantity else Decimal(0)
        else:
            closed = min(abs(signed), abs(position.quantity))
            direction = 1 if position.quantity > 0 else -1
            position.realised += closed * (price - position.average_price) * direction
            if new_quantity and (new_quantity > 0) != (position.quantity > 0):
                position.average_price = price
        position.quantity = new_quantity
        if self.on_fill is not None:
            self.on_fill(order)

    def unrealised(self, position: SimPosition) -> Decimal:
        last = self.prices.get(position.instrument, position.average_price)
        return (last - position.average_price) * position.quantity
