"""Services of the paper broker: give a team a connected paper account, and move the market."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from .adapters.paper import PaperAdapter, fill_crossing_orders
from .models import BrokerAccount, ConnectionState, PaperBook, PaperQuote
from .services import broker_account_connect, broker_account_create


def paper_account_ensure(*, team, label: str) -> BrokerAccount:
    """The team's paper account called ``label``, created and connected if it is not yet."""
    account = BrokerAccount.objects.for_team(team).filter(label=label).first()
    if account is None:
        account = broker_account_create(
            team=team, broker=PaperAdapter.code, label=label, credentials={}
        )
    elif account.broker != PaperAdapter.code:
        raise ValidationError(
            {"label": [f"The account {label!r} is a {account.broker} account, not a paper one."]}
        )
    has_book = PaperBook.objects.filter(broker_account=account).exists()
    if account.connection_state != ConnectionState.CONNECTED or not has_book:
        broker_account_connect(account=account)
    return account


def paper_price_set(*, exchange: str, symbol: str, price: Decimal) -> PaperQuote:
    """Move (or add) a paper quote, then fill every open order in every book that it crosses."""
    if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        raise ValidationError({"price": ["The price must be a positive Decimal."]})
    with transaction.atomic():
        quote, _ = PaperQuote.objects.update_or_create(
            exchange=exchange, symbol=symbol, defaults={"last_price": price}
        )
    # Concurrency: the new price is committed before any book is locked, and place_order reads
    # the price only after locking its book. So an order placed concurrently either sees the new
    # price itself, or holds its book's lock until committed, and the loop below (which takes
    # every book's lock in turn, in pk order so two price moves cannot deadlock) then sees it.
    # Books are never locked while the quote row is, so there is no lock-order cycle with orders.
    for book_id in PaperBook.objects.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            book = PaperBook.objects.select_for_update().filter(pk=book_id).first()
            if book is not None:  # not deleted with its account meanwhile
                fill_crossing_orders(book, exchange=exchange, symbol=symbol)
    quote.refresh_from_db()
    return quote
