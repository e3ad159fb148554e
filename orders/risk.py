"""Pre-trade risk checks: run on every order before it is queued, never after a broker call.

The notional of an order is quantity x price, where the price is the order's limit price, else
its trigger price, else the ``reference_price`` the client gave for a MARKET order. A MARKET order
with no reference price cannot be measured: when a notional limit applies, it is rejected with a
reason asking for one (the platform keeps no live quotes it could trust for this).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from .models import Order, OrderStatus, RiskLimits, TeamTradingState


@dataclass(frozen=True)
class RiskVerdict:
    """Why an order may not go out; ``code`` is stable for API clients."""

    code: str
    reason: str


class RiskRejected(Exception):
    """A change (a modification) breaks a risk limit; nothing was sent or written."""

    def __init__(self, verdict: RiskVerdict):
        self.verdict = verdict
        super().__init__(verdict.reason)


def order_notional(*, quantity: Decimal, price, trigger_price, reference_price) -> Decimal | None:
    for candidate in (price, trigger_price, reference_price):
        if candidate is not None:
            return quantity * candidate
    return None


def with_trading_controls(accounts: QuerySet) -> QuerySet:
    """Broker accounts read with their team's kill switch and whether any risk limits apply.

    Every order asks both; reading them with the account saves a query for the switch and, for
    the usual account without limits, one for the limits. Placing an order never needs the
    account's secrets (the worker reads them to send it), so they are not read or decrypted.
    """
    applicable = RiskLimits.objects.filter(team_id=OuterRef("team_id")).filter(
        Q(broker_account_id=OuterRef("pk")) | Q(broker_account__isnull=True)
    )
    return (
        accounts.select_related("team__trading_state")
        .defer("secret_credentials")
        .annotate(has_risk_limits=Exists(applicable))
    )


def read_with_trading_controls(account) -> bool:
    """Whether ``account`` was read by ``with_trading_controls`` (its switches came with it)."""
    return hasattr(account, "has_risk_limits")


def trading_halt_reason(*, account) -> str:
    """Why trading is halted for ``account`` (its own switch or its team's), or ''.

    Reads the team's switch through ``account.team``: pass an account read just now
    (``with_trading_controls``, or ``select_related`` of ``team__trading_state``), never one
    kept from earlier.
    """
    if account.trading_halted:
        return f"Trading is halted on the account {account.label}."
    try:
        state = account.team.trading_state
    except TeamTradingState.DoesNotExist:
        state = None
    if state is not None and state.trading_halted:
        suffix = f": {state.halt_reason}" if state.halt_reason else ""
        return f"Trading is halted for the whole team{suffix}."
    return ""


def risk_check(
    *,
    team,
    account,
    symbol: str,
    exchange: str,
    quantity: Decimal,
    price=None,
    trigger_price=None,
    reference_price=None,
    count_rate: bool = True,
    exclude_order_id: int | None = None,
) -> RiskVerdict | None:
    """The first limit the order breaks (account limits, then team limits), or None."""
    halted = trading_halt_reason(account=account)
    if halted:
        return RiskVerdict("trading_halted", halted)
    if getattr(account, "has_risk_limits", True) is False:  # read by with_trading_controls
        return None
    limit_rows = RiskLimits.objects.filter(
        Q(broker_account=account) | Q(broker_account__isnull=True), team=team
    )
    # Account limits first: their reason is the more specific one.
    for limits in sorted(limit_rows, key=lambda row: row.broker_account_id is None):
        scope = f"account {account.label}" if limits.broker_account_id else "team"
        verdict = _check_one(
            limits,
            scope=scope,
            team=team,
            account=account,
            symbol=symbol,
            exchange=exchange,
            quantity=quantity,
            notional=order_notional(
                quantity=quantity,
                price=price,
                trigger_price=trigger_price,
                reference_price=reference_price,
            ),
            count_rate=count_rate,
            exclude_order_id=exclude_order_id,
        )
        if verdict is not None:
            return verdict
    return None


def _check_one(
    limits: RiskLimits,
    *,
    scope,
    team,
    account,
    symbol,
    exchange,
    quantity,
    notional,
    count_rate,
    exclude_order_id,
):
    if limits.allowed_exchanges and exchange not in limits.allowed_exchanges:
        return RiskVerdict(
            "exchange_not_allowed", f"The {scope} may not trade on {exchange} (risk limits)."
        )
    if limits.allowed_symbols and symbol not in limits.allowed_symbols:
        return RiskVerdict(
            "symbol_not_allowed", f"The {scope} may not trade {symbol} (risk limits)."
        )
    if limits.max_quantity is not None and quantity > limits.max_quantity:
        return RiskVerdict(
            "max_quantity",
            f"Quantity {quantity} is above the {scope} maximum of {limits.max_quantity}.",
        )
    if limits.max_notional is not None:
        if notional is None:
            return RiskVerdict(
                "notional_unknown",
                f"The {scope} has a maximum notional; give a price or a reference_price "
                "for this MARKET order.",
            )
        if notional > limits.max_notional:
            return RiskVerdict(
                "max_notional",
                f"Notional {notional} is above the {scope} maximum of {limits.max_notional}.",
            )
    if count_rate and limits.max_orders_per_minute is not None:
        recent = Order.objects.filter(created_at__gte=timezone.now() - timedelta(minutes=1))
        # Orders refused before sending do not count against the rate.
        recent = recent.exclude(status=OrderStatus.REJECTED, submitted_at__isnull=True)
        if limits.broker_account_id:
            recent = recent.filter(broker_account=account)
        else:
            recent = recent.filter(team=team)
        if exclude_order_id is not None:
            recent = recent.exclude(pk=exclude_order_id)
        if recent.count() >= limits.max_orders_per_minute:
            return RiskVerdict(
                "max_orders_per_minute",
                f"The {scope} may place at most {limits.max_orders_per_minute} orders a minute.",
            )
    return None
