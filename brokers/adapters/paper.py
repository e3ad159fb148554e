"""The paper broker: an in-process broker whose books, orders and positions live in our database.

Every paper account trades against one global quote table (``PaperQuote``) that operators and
tests move with ``brokers.paper.paper_price_set``. The lifecycle mirrors a real broker's, and is
deterministic:

- MARKET orders fill in full at once at the last price.
- LIMIT orders rest (OPEN) until the last price crosses them (BUY: last <= limit, SELL: last >=
  limit), then fill in full at the last price; a marketable limit fills at once.
- STOP and STOP_LIMIT orders show OPEN until triggered (BUY: last >= trigger, SELL: last <=
  trigger), then behave as MARKET or LIMIT orders.
- IOC orders that cannot fill at once are CANCELLED; DAY and GTC orders rest until filled or
  cancelled (the paper market has no session close).
- Every order, BUY or SELL, must be covered by available cash (cash minus what open orders
  reserve, priced at their limit or trigger price). An order beyond it is recorded as REJECTED
  with the reason, as a real broker does, rather than raised: the order book then shows it, and a
  retry with the same client order id gets the same answer.
- Holdings are the long DELIVERY positions: the paper market has no T+1 settlement, so a
  delivery buy shows in ``positions()`` and in ``holdings()`` alike.

Every write locks the account's ``PaperBook`` row (``select_for_update``) inside a transaction,
so concurrent workers on PostgreSQL place, fill and cancel one after another per account.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from ..models import PaperBook, PaperOrder, PaperPosition, PaperQuote
from . import errors
from .base import (
    FINAL_ORDER_STATUSES,
    AuthFlow,
    BrokerAdapter,
    BrokerOrder,
    CredentialField,
    Funds,
    Holding,
    InstrumentRecord,
    OrderAck,
    OrderModification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Quote,
    SessionData,
    Side,
    Trade,
    Validity,
)

DEFAULT_STARTING_CASH = Decimal("1000000")
#: The paper session never expires by itself; a far expiry keeps the refresh scheduler quiet.
SESSION_LIFETIME = timedelta(days=3650)
#: Money and quantities are stored with six decimal places.
QUANTUM = Decimal("0.000001")

#: Which side of the last price a resting order needs before it fills (limit) or triggers (stop).
LIMIT_CROSSED = {
    Side.BUY: lambda last, limit: last <= limit,
    Side.SELL: lambda last, limit: last >= limit,
}
STOP_TRIGGERED = {
    Side.BUY: lambda last, trigger: last >= trigger,
    Side.SELL: lambda last, trigger: last <= trigger,
}
#: Order types that fill at the last price once live (not waiting for a trigger).
FILLS_AT_MARKET = frozenset({OrderType.MARKET, OrderType.STOP})
NEEDS_PRICE = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
NEEDS_TRIGGER = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})


class PaperAdapter(BrokerAdapter):
    """Paper trading: a simulated broker in the database, for practice and for demos."""

    code = "paper"
    name = "Paper trading"
    auth_flow = AuthFlow.CREDENTIALS
    credential_fields = (
        CredentialField(
            name="starting_cash",
            label="Starting cash",
            secret=False,
            required=False,
            help_text="Cash the paper book opens with (INR); default 1,000,000. Used only when "
            "the book is first created.",
        ),
    )
    has = {
        "oauth_login": False,
        "credentials_login": True,
        "refresh_session": True,
        "logout": True,
        "place_order": True,
        "modify_order": True,
        "cancel_order": True,
        "order_status": True,
        "order_book": True,
        "trade_book": True,
        "positions": True,
        "holdings": True,
        "funds": True,
        "quotes": True,
        "instrument_master": True,
    }
    client_order_id_max_length = 24
    currency = "INR"

    # Authentication --------------------------------------------------------------------------

    def login(self) -> SessionData:
        """Check the starting cash, open the book if it is new, and hand out a session token.

        The token is never checked afterwards: the broker runs in process and the account id is
        the identity. It exists so the platform treats paper like every other broker.
        """
        starting_cash = _starting_cash(self.credentials)
        # get_or_create survives a concurrent first login: the loser re-reads the winner's book.
        PaperBook.objects.get_or_create(
            broker_account_id=self._account_id(),
            defaults={"cash": starting_cash, "currency": self.currency},
        )
        return _new_session()

    def refresh(self) -> SessionData:
        self._book()  # a refresh without a book means the account was never logged in
        return _new_session()

    def logout(self) -> None:
        """Nothing to end: the paper broker keeps no server-side sessions."""

    # Orders ----------------------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderAck:
        with transaction.atomic():
            book = self._book(lock=True)
            # Under the book lock, so two workers sending the same order serialize here.
            existing = book.orders.filter(client_order_id=order.client_order_id).first()
            if existing is not None:  # a retry: answer with the first order, never a second
                return _ack(existing)
            quote = _quote(order.exchange, order.symbol)
            _check_order_fields(order.quantity, order.order_type, order.price, order.trigger_price)
            paper_order = PaperOrder(
                book=book,
                order_id=_new_order_id(),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                exchange=order.exchange,
                side=Side(order.side),
                quantity=order.quantity,
                order_type=OrderType(order.order_type),
                product=Product(order.product),
                validity=Validity(order.validity),
                price=order.price,
                trigger_price=order.trigger_price,
                status=OrderStatus.OPEN,
            )
            notional = order.quantity * _reference_price(paper_order, quote.last_price)
            if notional > _available(book):
                paper_order.status = OrderStatus.REJECTED
                paper_order.message = (
                    f"Insufficient funds: the order needs {_q(notional)} {book.currency}, "
                    f"{_q(_available(book))} is available."
                )
                paper_order.save()
                return _ack(paper_order)
            paper_order.save()
            _match(book, paper_order, quote.last_price)
            if paper_order.validity == Validity.IOC and paper_order.status == OrderStatus.OPEN:
                _finish(paper_order, OrderStatus.CANCELLED, "IOC order could not fill at once.")
            return _ack(paper_order)

    def modify_order(self, broker_order_id: str, changes: OrderModification) -> OrderAck:
        with transaction.atomic():
            book = self._book(lock=True)
            paper_order = _order(book, broker_order_id)
            _ensure_open(paper_order, "modified")
            quantity = changes.quantity if changes.quantity is not None else paper_order.quantity
            order_type = OrderType(changes.order_type or paper_order.order_type)
            price = changes.price if changes.price is not None else paper_order.price
            trigger_price = (
                changes.trigger_price
                if changes.trigger_price is not None
                else paper_order.trigger_price
            )
            _check_order_fields(quantity, order_type, price, trigger_price)
            last_price = _quote(paper_order.exchange, paper_order.symbol).last_price
            # The order's own reservation is released before the modified one is checked.
            available = _available(book) + _reserved(paper_order, last_price)
            paper_order.quantity = quantity
            paper_order.order_type = order_type
            paper_order.price = price
            paper_order.trigger_price = trigger_price
            notional = quantity * _reference_price(paper_order, last_price)
            if notional > available:
                raise errors.InsufficientFunds(
                    f"Insufficient funds: the modified order needs {_q(notional)} "
                    f"{book.currency}, {_q(available)} is available."
                )
            paper_order.save()
            _match(book, paper_order, last_price)
            return _ack(paper_order)

    def cancel_order(self, broker_order_id: str) -> OrderAck:
        with transaction.atomic():
            book = self._book(lock=True)
            paper_order = _order(book, broker_order_id)
            _ensure_open(paper_order, "cancelled")
            _finish(paper_order, OrderStatus.CANCELLED, "Cancelled by the user.")
            return _ack(paper_order)

    def order_status(self, broker_order_id: str) -> BrokerOrder:
        return _broker_order(_order(self._book(), broker_order_id))

    def find_order(self, client_order_id: str) -> BrokerOrder | None:
        paper_order = self._book().orders.filter(client_order_id=client_order_id).first()
        return _broker_order(paper_order) if paper_order else None

    def order_book(self) -> list[BrokerOrder]:
        return [_broker_order(o) for o in self._book().orders.all()]

    def trade_book(self) -> list[Trade]:
        # Paper orders fill in full at one price, so each filled order is exactly one trade.
        filled = self._book().orders.filter(status=OrderStatus.FILLED)
        return [
            Trade(
                trade_id=f"T{o.order_id}",
                broker_order_id=o.order_id,
                symbol=o.symbol,
                exchange=o.exchange,
                side=Side(o.side),
                quantity=o.filled_quantity,
                price=o.average_price,
                traded_at=o.filled_at,
            )
            for o in filled
        ]

    # Portfolio and market data ---------------------------------------------------------------

    def positions(self) -> list[Position]:
        """Every position of the book, flat ones included so their realised P&L stays visible."""
        prices = _last_prices()
        result = []
        for position in self._book().positions.all():
            last_price = prices.get((position.exchange, position.symbol))
            unrealised = (
                (last_price - position.average_price) * position.quantity
                if last_price is not None
                else Decimal(0)
            )
            result.append(
                Position(
                    symbol=position.symbol,
                    exchange=position.exchange,
                    quantity=position.quantity,
                    average_price=position.average_price,
                    product=position.product,
                    last_price=last_price,
                    pnl=_q(position.realised_pnl + unrealised),
                    position_id=str(position.pk),
                )
            )
        return result

    def holdings(self) -> list[Holding]:
        prices = _last_prices()
        delivery = self._book().positions.filter(product=Product.DELIVERY, quantity__gt=0)
        result = []
        for position in delivery:
            last_price = prices.get((position.exchange, position.symbol))
            pnl = (
                _q((last_price - position.average_price) * position.quantity)
                if last_price is not None
                else None
            )
            result.append(
                Holding(
                    symbol=position.symbol,
                    exchange=position.exchange,
                    quantity=position.quantity,
                    average_price=position.average_price,
                    last_price=last_price,
                    pnl=pnl,
                )
            )
        return result

    def funds(self) -> Funds:
        """Total is cash plus the market value of positions; open orders reserve cash."""
        book = self._book()
        prices = _last_prices()
        position_value = sum(
            (
                p.quantity * prices.get((p.exchange, p.symbol), p.average_price)
                for p in book.positions.exclude(quantity=0)
            ),
            Decimal(0),
        )
        reserved = _reserved_total(book)
        total = _q(book.cash + position_value)
        return Funds(
            total=total,
            available=_q(book.cash - reserved),
            used_margin=_q(reserved),
            currency=book.currency,
            equity=total,
        )

    def quotes(self, instruments: list[tuple[str, str]]) -> list[Quote]:
        result = []
        for exchange, symbol in instruments:
            quote = _quote(exchange, symbol)
            result.append(Quote(symbol=symbol, exchange=exchange, last_price=quote.last_price))
        return result

    def instrument_master(self) -> list[InstrumentRecord]:
        return [
            InstrumentRecord(
                symbol=quote.symbol,
                exchange=quote.exchange,
                broker_symbol=quote.symbol,
                broker_token=f"{quote.exchange}:{quote.symbol}",
                name=quote.symbol,
            )
            for quote in PaperQuote.objects.all()
        ]

    # Book access -----------------------------------------------------------------------------

    def _account_id(self) -> int:
        if self.account_id is None:
            raise errors.BrokerError("The paper broker needs the broker account's id.")
        return self.account_id

    def _book(self, *, lock: bool = False) -> PaperBook:
        books = PaperBook.objects.filter(broker_account_id=self._account_id())
        if lock:
            books = books.select_for_update()
        book = books.first()
        if book is None:
            raise errors.SessionExpired("This paper account has no book yet; log in first.")
        return book


def fill_crossing_orders(book: PaperBook, *, exchange: str, symbol: str) -> list[PaperOrder]:
    """Match every open order of ``book`` in one instrument against its current last price.

    The caller holds the lock on ``book`` (``select_for_update`` inside ``transaction.atomic``).
    Returns the orders that filled.
    """
    last_price = _quote(exchange, symbol).last_price
    open_orders = book.orders.filter(exchange=exchange, symbol=symbol, status=OrderStatus.OPEN)
    filled = []
    for paper_order in open_orders:
        _match(book, paper_order, last_price)
        if paper_order.status == OrderStatus.FILLED:
            filled.append(paper_order)
    return filled


# Private helpers ---------------------------------------------------------------------------------


def _starting_cash(credentials) -> Decimal:
    raw = (credentials.get("starting_cash") or "").strip()
    if not raw:
        return DEFAULT_STARTING_CASH
    try:
        value = Decimal(raw.replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise errors.InvalidCredentials("Starting cash must be a number.") from None
    if not value.is_finite() or value <= 0:
        raise errors.InvalidCredentials("Starting cash must be a positive amount.")
    return _q(value)


def _new_session() -> SessionData:
    now = timezone.now()
    return SessionData(
        access_token=secrets.token_urlsafe(32), issued_at=now, expires_at=now + SESSION_LIFETIME
    )


def _new_order_id() -> str:
    return f"P{secrets.token_hex(8)}"


def _q(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def _quote(exchange: str, symbol: str) -> PaperQuote:
    quote = PaperQuote.objects.filter(exchange=exchange, symbol=symbol).first()
    if quote is None:
        raise errors.InvalidInstrument(f"The paper broker has no quote for {exchange}:{symbol}.")
    return quote


def _last_prices() -> dict[tuple[str, str], Decimal]:
    return {(q.exchange, q.symbol): q.last_price for q in PaperQuote.objects.all()}


def _check_order_fields(quantity, order_type, price, trigger_price) -> None:
    if quantity is None or quantity <= 0:
        raise errors.InputError("Quantity must be positive.")
    if order_type in NEEDS_PRICE and not (price and price > 0):
        raise errors.InputError(f"A {order_type} order needs a positive price.")
    if order_type in NEEDS_TRIGGER and not (trigger_price and trigger_price > 0):
        raise errors.InputError(f"A {order_type} order needs a positive trigger price.")


def _order(book: PaperBook, broker_order_id: str) -> PaperOrder:
    paper_order = book.orders.filter(order_id=broker_order_id).first()
    if paper_order is None:  # another book's order id is as unknown as a made-up one
        raise errors.NotFound(f"No paper order {broker_order_id}.")
    return paper_order


def _ensure_open(paper_order: PaperOrder, verb: str) -> None:
    if paper_order.status in FINAL_ORDER_STATUSES:
        raise errors.OrderRejected(
            f"Order {paper_order.order_id} is {paper_order.status.lower()} and cannot be {verb}."
        )


def _reference_price(paper_order: PaperOrder, last_price: Decimal) -> Decimal:
    """The price an order reserves cash at: its limit, else its trigger, else the last price."""
    return paper_order.price or paper_order.trigger_price or last_price


def _reserved(paper_order: PaperOrder, last_price: Decimal) -> Decimal:
    if paper_order.status in FINAL_ORDER_STATUSES:
        return Decimal(0)
    pending = paper_order.quantity - paper_order.filled_quantity
    return pending * _reference_price(paper_order, last_price)


def _reserved_total(book: PaperBook) -> Decimal:
    prices = _last_prices()
    return sum(
        (
            _reserved(o, prices.get((o.exchange, o.symbol), Decimal(0)))
            for o in book.orders.filter(status=OrderStatus.OPEN)
        ),
        Decimal(0),
    )


def _available(book: PaperBook) -> Decimal:
    return book.cash - _reserved_total(book)


def _match(book: PaperBook, paper_order: PaperOrder, last_price: Decimal) -> None:
    """Trigger and fill ``paper_order`` if the last price allows it; the book is locked."""
    if paper_order.status != OrderStatus.OPEN:
        return
    side = Side(paper_order.side)
    order_type = OrderType(paper_order.order_type)
    if order_type in NEEDS_TRIGGER and not paper_order.triggered:
        if not STOP_TRIGGERED[side](last_price, paper_order.trigger_price):
            return
        paper_order.triggered = True
        paper_order.save(update_fields=["triggered", "updated_at"])
    if order_type in FILLS_AT_MARKET or LIMIT_CROSSED[side](last_price, paper_order.price):
        _fill(book, paper_order, last_price)


def _fill(book: PaperBook, paper_order: PaperOrder, price: Decimal) -> None:
    """Fill the whole order at ``price``: move cash and the position, record realised P&L."""
    quantity = paper_order.quantity - paper_order.filled_quantity
    signed = quantity if paper_order.side == Side.BUY else -quantity
    book.cash = _q(book.cash - signed * price)
    book.save(update_fields=["cash", "updated_at"])

    position, _ = PaperPosition.objects.get_or_create(
        book=book,
        exchange=paper_order.exchange,
        symbol=paper_order.symbol,
        product=paper_order.product,
    )
    held = position.quantity
    new_quantity = held + signed
    if held == 0 or (held > 0) == (signed > 0):  # opening or adding: average in
        position.average_price = _q((held * position.average_price + signed * price) / new_quantity)
    else:  # reducing, closing or flipping: realise P&L on the closed part
        closed = min(abs(signed), abs(held))
        direction = 1 if held > 0 else -1
        position.realised_pnl = _q(
            position.realised_pnl + closed * (price - position.average_price) * direction
        )
        if new_quantity == 0:
            position.average_price = Decimal(0)
        elif (new_quantity > 0) != (held > 0):  # flipped: the remainder opened at this price
            position.average_price = price
    position.quantity = new_quantity
    position.save()

    paper_order.filled_quantity = paper_order.quantity
    paper_order.average_price = price
    paper_order.filled_at = timezone.now()
    _finish(paper_order, OrderStatus.FILLED, "")


def _finish(paper_order: PaperOrder, status: OrderStatus, message: str) -> None:
    paper_order.status = status
    paper_order.message = message
    paper_order.save()


def _ack(paper_order: PaperOrder) -> OrderAck:
    return OrderAck(
        broker_order_id=paper_order.order_id,
        status=OrderStatus(paper_order.status),
        raw_status=paper_order.status,
        message=paper_order.message,
    )


def _broker_order(paper_order: PaperOrder) -> BrokerOrder:
    return BrokerOrder(
        broker_order_id=paper_order.order_id,
        client_order_id=paper_order.client_order_id,
        symbol=paper_order.symbol,
        exchange=paper_order.exchange,
        side=Side(paper_order.side),
        order_type=OrderType(paper_order.order_type),
        quantity=paper_order.quantity,
        status=OrderStatus(paper_order.status),
        raw_status=paper_order.status,
        filled_quantity=paper_order.filled_quantity,
        average_price=paper_order.average_price,
        price=paper_order.price,
        trigger_price=paper_order.trigger_price,
        message=paper_order.message,
        placed_at=paper_order.created_at,
    )
