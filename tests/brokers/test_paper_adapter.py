"""The paper broker's own behaviour, beyond the shared contract suite."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.management import call_command

from accounts.models import Team
from brokers.adapters import errors
from brokers.adapters.base import (
    OrderModification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from brokers.adapters.paper import PaperAdapter
from brokers.models import BrokerAccount, ConnectionState, PaperBook, PaperOrder, PaperQuote
from brokers.paper import paper_account_ensure, paper_price_set
from brokers.services import adapter_for_account, broker_account_create

INFY = ("NSE", "INFY")
START = Decimal("1000000")


@pytest.fixture
def infy_at_1500(db):
    PaperQuote.objects.update_or_create(
        exchange="NSE", symbol="INFY", defaults={"last_price": Decimal("1500")}
    )


@pytest.fixture
def adapter(team, infy_at_1500):
    account = paper_account_ensure(team=team, label="Paper")
    adapter = adapter_for_account(account)
    yield adapter
    adapter.close()


def order(**overrides) -> OrderRequest:
    fields = dict(
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        quantity=Decimal(10),
        order_type=OrderType.MARKET,
        product=Product.INTRADAY,
        client_order_id=PaperAdapter.new_client_order_id(),
    )
    fields.update(overrides)
    return OrderRequest(**fields)


# Accounts and logins -------------------------------------------------------------------------


def test_paper_account_ensure_creates_a_connected_account_with_a_book(team):
    account = paper_account_ensure(team=team, label="Paper")
    assert account.broker == "paper"
    assert account.connection_state == ConnectionState.CONNECTED
    assert account.session.access_token
    assert PaperBook.objects.get(broker_account=account).cash == START


def test_paper_account_ensure_is_idempotent(team):
    first = paper_account_ensure(team=team, label="Paper")
    second = paper_account_ensure(team=team, label="Paper")
    assert first.pk == second.pk
    assert BrokerAccount.objects.filter(team=team).count() == 1
    assert PaperBook.objects.filter(broker_account=first).count() == 1


def test_starting_cash_credential_sets_the_opening_cash(team):
    account = broker_account_create(
        team=team, broker="paper", label="Small", credentials={"starting_cash": "25000"}
    )
    adapter = adapter_for_account(account)
    adapter.login()
    assert adapter.funds().available == Decimal("25000")


@pytest.mark.parametrize("starting_cash", ["-5", "0", "lots", "NaN"])
def test_login_refuses_a_starting_cash_that_is_not_a_positive_amount(team, starting_cash):
    account = broker_account_create(
        team=team, broker="paper", label="Bad", credentials={"starting_cash": starting_cash}
    )
    with pytest.raises(errors.InvalidCredentials):
        adapter_for_account(account).login()
    assert not PaperBook.objects.filter(broker_account=account).exists()


def test_operations_before_the_first_login_ask_for_a_login(team, infy_at_1500):
    account = broker_account_create(team=team, broker="paper", label="New", credentials={})
    with pytest.raises(errors.SessionExpired):
        adapter_for_account(account).funds()


# Orders --------------------------------------------------------------------------------------


def test_retry_with_the_same_client_order_id_returns_the_first_order(adapter):
    request = order()
    first = adapter.place_order(request)
    second = adapter.place_order(order(client_order_id=request.client_order_id, quantity=99))
    assert second.broker_order_id == first.broker_order_id
    assert PaperOrder.objects.filter(client_order_id=request.client_order_id).count() == 1
    assert adapter.positions()[0].quantity == Decimal(10)  # filled once, not twice


def test_same_client_order_id_in_two_books_gives_two_orders(adapter, other_team, infy_at_1500):
    other = adapter_for_account(paper_account_ensure(team=other_team, label="Paper"))
    request = order()
    assert (
        adapter.place_order(request).broker_order_id != other.place_order(request).broker_order_id
    )


def test_market_order_fills_at_the_quote_price(adapter):
    ack = adapter.place_order(order())
    assert ack.status == OrderStatus.FILLED
    placed = adapter.order_status(ack.broker_order_id)
    assert placed.filled_quantity == Decimal(10)
    assert placed.average_price == Decimal("1500")


def test_limit_buy_rests_then_fills_when_paper_price_set_crosses_it(adapter):
    ack = adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1490")))
    assert ack.status == OrderStatus.OPEN
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1495"))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.OPEN
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1488"))
    filled = adapter.order_status(ack.broker_order_id)
    assert filled.status == OrderStatus.FILLED
    assert filled.average_price == Decimal("1488")
    assert adapter.funds().available == START - Decimal("14880")


def test_limit_sell_fills_when_the_price_rises_to_it(adapter):
    adapter.place_order(order())
    ack = adapter.place_order(
        order(side=Side.SELL, order_type=OrderType.LIMIT, price=Decimal("1510"))
    )
    assert ack.status == OrderStatus.OPEN
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1510"))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.FILLED


def test_stop_buy_triggers_when_the_price_rises_through_the_trigger(adapter):
    ack = adapter.place_order(order(order_type=OrderType.STOP, trigger_price=Decimal("1520")))
    assert ack.status == OrderStatus.OPEN
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1510"))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.OPEN
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1525"))
    filled = adapter.order_status(ack.broker_order_id)
    assert filled.status == OrderStatus.FILLED
    assert filled.average_price == Decimal("1525")


def test_stop_limit_sell_triggers_then_waits_for_its_limit(adapter):
    adapter.place_order(order())
    ack = adapter.place_order(
        order(
            side=Side.SELL,
            order_type=OrderType.STOP_LIMIT,
            trigger_price=Decimal("1480"),
            price=Decimal("1485"),
        )
    )
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1479"))  # triggers, below limit
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.OPEN
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1486"))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.FILLED


def test_ioc_limit_that_cannot_fill_at_once_is_cancelled(adapter):
    ack = adapter.place_order(
        order(order_type=OrderType.LIMIT, price=Decimal("1400"), validity=Validity.IOC)
    )
    assert ack.status == OrderStatus.CANCELLED


def test_cash_accounting_after_a_buy_and_a_sell(adapter):
    adapter.place_order(order())  # buy 10 @ 1500
    funds = adapter.funds()
    assert funds.available == START - Decimal("15000")
    assert funds.total == START  # cash plus the position at market
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1600"))
    assert adapter.funds().total == START + Decimal("1000")
    adapter.place_order(order(side=Side.SELL, quantity=Decimal(4)))  # sell 4 @ 1600
    funds = adapter.funds()
    assert funds.available == START - Decimal("15000") + Decimal("6400")
    assert funds.total == START + Decimal("1000")
    [position] = adapter.positions()
    assert position.quantity == Decimal(6)
    assert position.average_price == Decimal("1500")
    assert position.pnl == Decimal("1000")  # 400 realised + 600 unrealised
    assert all(isinstance(v, Decimal) for v in (funds.total, funds.available, funds.used_margin))


def test_realised_pnl_accumulates_until_the_position_is_flat(adapter):
    adapter.place_order(order())  # buy 10 @ 1500
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1600"))
    adapter.place_order(order(side=Side.SELL, quantity=Decimal(4)))  # +400
    paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1700"))
    adapter.place_order(order(side=Side.SELL, quantity=Decimal(6)))  # +1200
    [position] = adapter.positions()
    assert position.quantity == Decimal(0)
    assert position.pnl == Decimal("1600")
    assert adapter.funds().available == START + Decimal("1600")


def test_open_orders_reserve_cash_and_cancelling_releases_it(adapter):
    ack = adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1400")))
    funds = adapter.funds()
    assert funds.used_margin == Decimal("14000")
    assert funds.available == START - Decimal("14000")
    adapter.cancel_order(ack.broker_order_id)
    assert adapter.funds().available == START


def test_order_beyond_available_cash_is_recorded_as_rejected(adapter):
    # 600 x 1600 = 960,000 is reserved, so 100 more at 1500 (150,000) no longer fits.
    adapter.place_order(
        order(quantity=Decimal(600), order_type=OrderType.LIMIT, price=Decimal("1600"))
    )
    ack = adapter.place_order(order(quantity=Decimal(100)))
    assert ack.status == OrderStatus.REJECTED
    assert "Insufficient funds" in ack.message
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.REJECTED


def test_modify_beyond_available_cash_raises_and_keeps_the_order(adapter):
    ack = adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1400")))
    with pytest.raises(errors.InsufficientFunds):
        adapter.modify_order(ack.broker_order_id, OrderModification(quantity=Decimal(1000)))
    assert adapter.order_status(ack.broker_order_id).quantity == Decimal(10)


def test_modify_counts_the_orders_own_reservation_as_available(adapter):
    # 600 x 1400 reserves 840,000 of 1,000,000; 600 x 1450 fits once that is released.
    ack = adapter.place_order(
        order(quantity=Decimal(600), order_type=OrderType.LIMIT, price=Decimal("1400"))
    )
    adapter.modify_order(ack.broker_order_id, OrderModification(price=Decimal("1450")))
    assert adapter.order_status(ack.broker_order_id).price == Decimal("1450")
    assert adapter.funds().used_margin == Decimal("870000")


def test_modify_to_a_marketable_price_fills_the_order(adapter):
    ack = adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1400")))
    adapter.modify_order(ack.broker_order_id, OrderModification(price=Decimal("1500")))
    assert adapter.order_status(ack.broker_order_id).status == OrderStatus.FILLED


def test_modify_or_cancel_of_a_cancelled_order_is_refused(adapter):
    ack = adapter.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1400")))
    adapter.cancel_order(ack.broker_order_id)
    with pytest.raises(errors.OrderRejected):
        adapter.modify_order(ack.broker_order_id, OrderModification(price=Decimal("1390")))
    with pytest.raises(errors.OrderRejected):
        adapter.cancel_order(ack.broker_order_id)


def test_another_books_order_id_is_not_found(adapter, other_team, infy_at_1500):
    other = adapter_for_account(paper_account_ensure(team=other_team, label="Paper"))
    ack = other.place_order(order(order_type=OrderType.LIMIT, price=Decimal("1400")))
    with pytest.raises(errors.NotFound):
        adapter.order_status(ack.broker_order_id)
    with pytest.raises(errors.NotFound):
        adapter.cancel_order(ack.broker_order_id)


def test_unknown_symbol_raises_invalid_instrument_everywhere(adapter):
    with pytest.raises(errors.InvalidInstrument):
        adapter.place_order(order(symbol="NOSUCH"))
    with pytest.raises(errors.InvalidInstrument):
        adapter.quotes([("NSE", "NOSUCH")])


def test_delivery_buys_are_holdings_and_intraday_ones_are_not(adapter):
    adapter.place_order(order(product=Product.DELIVERY, quantity=Decimal(3)))
    adapter.place_order(order(product=Product.INTRADAY, quantity=Decimal(5)))
    [holding] = adapter.holdings()
    assert holding.quantity == Decimal(3)


def test_instrument_master_lists_the_quote_table(adapter):
    records = adapter.instrument_master()
    assert {(r.exchange, r.symbol) for r in records} == set(
        PaperQuote.objects.values_list("exchange", "symbol")
    )


def test_default_quotes_are_seeded_by_migration(db):
    assert PaperQuote.objects.get(exchange="NSE", symbol="SBIN").last_price == Decimal("800")


# demo_setup ----------------------------------------------------------------------------------


def test_demo_setup_gives_the_demo_team_a_connected_paper_account_idempotently(db, capsys):
    call_command("demo_setup", "--json")
    first = json.loads(capsys.readouterr().out)
    call_command("demo_setup", "--json")
    second = json.loads(capsys.readouterr().out)

    assert first["paper_account_id"] is not None
    assert second["paper_account_id"] == first["paper_account_id"]
    team = Team.objects.get(slug=first["team"])
    [account] = BrokerAccount.objects.filter(team=team)
    assert account.pk == first["paper_account_id"]
    assert account.broker == "paper"
    assert account.connection_state == ConnectionState.CONNECTED
    assert PaperBook.objects.filter(broker_account=account).count() == 1
