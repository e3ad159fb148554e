"""Console pages for orders: the ticket with its confirmation step, lists, detail, baskets, halts.

Viewers read; traders place and cancel; admins switch the kill switch, as in the API.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Role
from algoways.console import console_context, console_view
from brokers.adapters.errors import BrokerError
from brokers.models import BrokerAccount

from . import schedules, services
from .forms import (
    BasketForm,
    OrderTicketForm,
    ScheduleForm,
    client_order_id_for,
    new_form_token,
)
from .models import FINAL_STATUSES, Order, OrderGroup, OrderStatus, TeamTradingState
from .schedule_models import ScheduledOrder

CANCELLABLE = {"pending", "open", "partially_filled"}


def _order(request, pk: int) -> Order:
    return get_object_or_404(
        Order.objects.for_team(request.team).select_related("broker_account"), pk=pk
    )


def _placed_by(request) -> services.PlacedBy:
    return services.PlacedBy(membership=request.membership)


def _account_brokers(team) -> dict[str, str]:
    """Account id -> broker code, for the symbol search of the ticket's selected account."""
    return {
        str(pk): broker
        for pk, broker in BrokerAccount.objects.for_team(team).values_list("pk", "broker")
    }


def _today(team):
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return (
        Order.objects.for_team(team).filter(created_at__gte=start).select_related("broker_account")
    )


# Lists and detail --------------------------------------------------------------------------------


@console_view()
def order_list(request):
    orders = Order.objects.for_team(request.team).select_related("broker_account")
    status = request.GET.get("status", "")
    if status:
        orders = orders.filter(status=status)
    return render(
        request,
        "console/order_list.html",
        console_context(
            request, orders=orders[:200], status=status, status_choices=OrderStatus.choices
        ),
    )


@console_view()
@require_GET
def orders_today_fragment(request):
    """Today's orders with their current status: the dashboard reloads this every few seconds."""
    trading_state = TeamTradingState.objects.for_team(request.team).first()
    return render(
        request,
        "console/orders_today_fragment.html",
        {"orders": _today(request.team)[:50], "trading_state": trading_state},
    )


@console_view()
def order_detail(request, pk: int):
    order = _order(request, pk)
    return render(
        request,
        "console/order_detail.html",
        console_context(request, order=order, cancellable=order.status in CANCELLABLE),
    )


@console_view()
@require_GET
def order_status_fragment(request, pk: int):
    """An order's status and its event timeline (the detail page reloads this)."""
    order = _order(request, pk)
    return render(
        request,
        "console/order_status_fragment.html",
        {"order": order, "events": order.events.all(), "final": order.status in FINAL_STATUSES},
    )


@console_view(Role.TRADER)
@require_POST
def order_cancel(request, pk: int):
    order = _order(request, pk)
    try:
        services.order_cancel(order=order)
    except services.OrderConflict as exc:
        messages.error(request, str(exc))
    except BrokerError as exc:
        messages.error(request, f"The broker refused the cancel: {exc.message}")
    else:
        messages.success(request, "Cancel sent.")
    return redirect("order-detail", pk=pk)


# The ticket ------------------------------------------------------------------------------------


@console_view(Role.TRADER)
def order_new(request):
    """Enter an order, review it, confirm it. Only the confirmation places it."""
    action = request.POST.get("action", "")
    if request.method != "POST":
        form = OrderTicketForm(
            team=request.team,
            initial={"form_token": new_form_token(), "account": request.GET.get("account")},
        )
        return _ticket(request, form)
    form = OrderTicketForm(request.POST, team=request.team)
    if action == "edit" or not form.is_valid():
        return _ticket(request, form, status=200 if action == "edit" else 400)
    if action != "confirm":
        return _ticket(request, form, confirming=True)

    account = form.cleaned_data["account"]
    client_order_id = client_order_id_for(
        membership=request.membership,
        token=form.cleaned_data["form_token"],
        max_length=account.adapter_class.client_order_id_max_length,
    )
    try:
        order, created = services.order_place(
            team=request.team,
            account=account,
            spec=form.spec(client_order_id=client_order_id),
            placed_by=_placed_by(request),
        )
    except services.DuplicateClientOrderId:
        form.add_error(
            None,
            "This ticket already placed a different order. Start a new ticket to place this one.",
        )
        return _ticket(request, form, status=409)
    if order.status == "rejected" and order.rejection_reason:
        messages.error(request, f"Order rejected: {order.rejection_reason}")
    elif created:
        messages.success(request, "Order placed.")
    else:
        messages.info(request, "This order was already placed; here it is.")
    return redirect("order-detail", pk=order.pk)


def _ticket(request, form, *, confirming: bool = False, status: int = 200):
    no_accounts = not form.fields["account"].queryset.exists()
    summary = None
    if confirming:
        account = form.cleaned_data["account"]
        summary = [("Account", f"{account.label} · {account.adapter_class.name}")]
        summary += form.summary()
    return render(
        request,
        "console/order_new.html",
        console_context(
            request,
            form=form,
            confirming=confirming,
            no_accounts=no_accounts,
            account_brokers=_account_brokers(request.team),
            summary=summary,
            account=form.cleaned_data.get("account") if confirming else None,
        ),
        status=status,
    )


# Baskets -----------------------------------------------------------------------------------------


@console_view()
def basket_list(request):
    groups = OrderGroup.objects.for_team(request.team).prefetch_related("orders")[:100]
    return render(request, "console/basket_list.html", console_context(request, groups=groups))


@console_view(Role.TRADER)
def basket_new(request):
    """One order on several accounts at once (an order group), with a confirmation step."""
    action = request.POST.get("action", "")
    if request.method != "POST":
        form = BasketForm(team=request.team, initial={"form_token": new_form_token()})
        return _basket(request, form)
    form = BasketForm(request.POST, team=request.team)
    if action == "edit" or not form.is_valid():
        return _basket(request, form, status=200 if action == "edit" else 400)
    if action != "confirm":
        return _basket(request, form, confirming=True)

    accounts = list(form.cleaned_data["accounts"])
    token = form.cleaned_data["form_token"]
    # One client order id for every child: unique per account, and the same on a resubmission.
    client_order_id = client_order_id_for(
        membership=request.membership,
        token=token,
        max_length=min(a.adapter_class.client_order_id_max_length for a in accounts),
    )
    earlier = (
        Order.objects.for_team(request.team)
        .filter(client_order_id=client_order_id, group__isnull=False)
        .first()
    )
    if earlier is not None:
        messages.info(request, "This basket was already placed; here it is.")
        return redirect("basket-detail", pk=earlier.group_id)
    group = services.order_group_place(
        team=request.team,
        accounts=accounts,
        specs=[form.spec(client_order_id=client_order_id)],
        placed_by=_placed_by(request),
    )
    messages.success(request, f"Basket placed on {len(accounts)} account(s).")
    return redirect("basket-detail", pk=group.pk)


def _basket(request, form, *, confirming: bool = False, status: int = 200):
    return render(
        request,
        "console/basket_new.html",
        console_context(
            request,
            form=form,
            confirming=confirming,
            no_accounts=not form.fields["accounts"].queryset.exists(),
            account_brokers=_account_brokers(request.team),
            summary=form.summary() if confirming else None,
            accounts=form.cleaned_data.get("accounts") if confirming else None,
        ),
        status=status,
    )


@console_view()
def basket_detail(request, pk: int):
    group = get_object_or_404(OrderGroup.objects.for_team(request.team), pk=pk)
    return render(request, "console/basket_detail.html", console_context(request, group=group))


@console_view()
@require_GET
def basket_results_fragment(request, pk: int):
    group = get_object_or_404(OrderGroup.objects.for_team(request.team), pk=pk)
    orders = group.orders.select_related("broker_account").order_by("broker_account__label", "pk")
    return render(request, "console/basket_results_fragment.html", {"orders": orders})


# The kill switch -------------------------------------------------------------------------------


@console_view(Role.ADMIN)
@require_POST
def trading_halt(request):
    """Halt or resume the whole team, or one account (``account`` in the form)."""
    halted = request.POST.get("action") == "halt"
    account = None
    if request.POST.get("account"):
        account = get_object_or_404(
            BrokerAccount.objects.for_team(request.team), pk=request.POST["account"]
        )
    services.trading_halt_set(
        team=request.team,
        account=account,
        halted=halted,
        reason=request.POST.get("reason", "")[:200],
    )
    what = account.label if account else "the whole team"
    messages.success(request, f"Trading {'halted' if halted else 'resumed'} for {what}.")
    if account is not None:
        return redirect("account-detail", pk=account.pk)
    return redirect("dashboard")


# Scheduled orders --------------------------------------------------------------------------------


@console_view()
def schedule_list(request):
    """The team's schedules; admins create them and switch them on or off (as in the API)."""
    can_manage = request.membership.role_enum.at_least(Role.ADMIN)
    form = ScheduleForm(request.POST or None, team=request.team)
    if request.method == "POST":
        if not can_manage:
            raise PermissionDenied("Only admins and owners manage schedules.")
        if form.is_valid():
            try:
                schedule = schedules.schedule_create(
                    team=request.team, created_by=request.membership, **form.service_arguments()
                )
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                messages.success(request, f"Schedule {schedule.name!r} created.")
                return redirect("schedule-list")
    team_schedules = ScheduledOrder.objects.for_team(request.team).prefetch_related(
        "accounts", "runs"
    )
    return render(
        request,
        "console/schedules.html",
        console_context(
            request,
            schedules=team_schedules,
            form=form,
            account_brokers=_account_brokers(request.team),
        ),
        status=400 if request.method == "POST" else 200,
    )


@console_view(Role.ADMIN)
@require_POST
def schedule_toggle(request, pk: int):
    schedule = get_object_or_404(ScheduledOrder.objects.for_team(request.team), pk=pk)
    enabled = request.POST.get("enabled") == "1"
    try:
        schedules.schedule_enable(schedule=schedule, enabled=enabled)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
    else:
        messages.success(request, f"{schedule.name} is {'on' if enabled else 'off'}.")
    return redirect("schedule-list")
