"""Console pages for broker accounts: add, look at, connect (every auth flow), disconnect."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Role
from algoways.console import console_context, console_view

from . import services
from .adapters import registry
from .adapters.base import AuthFlow
from .adapters.errors import BrokerError
from .forms import BrokerAccountForm, BrokerChoiceForm
from .models import BrokerAccount


def _account(request, pk: int) -> BrokerAccount:
    return get_object_or_404(BrokerAccount.objects.for_team(request.team), pk=pk)


@console_view(Role.ADMIN)
def account_new(request):
    code = request.GET.get("broker") or request.POST.get("broker")
    if not code:
        return render(
            request, "console/account_new.html", console_context(request, choice=BrokerChoiceForm())
        )
    try:
        adapter_class = registry.get(code)
    except registry.UnknownBroker:
        return redirect("account-new")
    form = BrokerAccountForm(request.POST or None, adapter_class=adapter_class)
    if request.method == "POST" and form.is_valid():
        try:
            account = services.broker_account_create(
                team=request.team,
                broker=code,
                label=form.cleaned_data["label"],
                base_url=form.cleaned_data["base_url"],
                credentials=form.credentials(),
            )
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
        else:
            messages.success(request, f"{account.label} added. Connect it to start trading.")
            return redirect("account-detail", pk=account.pk)
    return render(
        request,
        "console/account_new.html",
        console_context(
            request,
            form=form,
            # Templates call callables: a class would be instantiated, so pass its attributes.
            broker_code=adapter_class.code,
            broker_name=adapter_class.name,
        ),
    )


@console_view()
def account_detail(request, pk: int):
    account = _account(request, pk)
    funds = positions = None
    broker_error = ""
    if account.connection_state == "connected":
        try:
            funds, positions = services.broker_call(
                account, lambda adapter: (adapter.funds(), adapter.positions())
            )
        except BrokerError as exc:
            broker_error = exc.message
    return render(
        request,
        "console/account_detail.html",
        console_context(
            request,
            account=account,
            funds=funds,
            positions=positions,
            broker_error=broker_error,
            broker_name=account.adapter_class.name,
            oauth=account.adapter_class.auth_flow == AuthFlow.OAUTH_REDIRECT,
            totp=account.adapter_class.auth_flow == AuthFlow.CREDENTIALS_TOTP,
        ),
    )


@console_view()
@require_GET
def account_funds(request, pk: int):
    """A small HTML fragment with the account's available funds (loaded by the dashboard)."""
    account = _account(request, pk)
    try:
        funds = services.broker_call(account, lambda adapter: adapter.funds())
    except BrokerError as exc:
        return render(request, "console/funds_fragment.html", {"error": exc.message})
    return render(request, "console/funds_fragment.html", {"funds": funds})


@console_view(Role.TRADER)
@require_GET
def account_login(request, pk: int):
    """Send the browser to the broker's login page (OAuth-style brokers)."""
    account = _account(request, pk)
    try:
        return redirect(services.oauth_login_url(account=account))
    except BrokerError as exc:
        messages.error(request, f"Could not start the broker login: {exc.message}")
        return redirect("account-detail", pk=pk)


@console_view(Role.TRADER)
@require_POST
def account_connect(request, pk: int):
    """Sign in with the stored credentials (the "test sign-in" of TOTP brokers too)."""
    account = _account(request, pk)
    try:
        services.broker_account_connect(account=account)
    except BrokerError as exc:
        messages.error(request, f"Sign-in failed: {exc.message}")
    else:
        messages.success(request, f"{account.label} is connected.")
    return redirect("account-detail", pk=pk)


@console_view(Role.TRADER)
@require_POST
def account_disconnect(request, pk: int):
    account = _account(request, pk)
    services.broker_account_disconnect(account=account)
    messages.success(request, f"{account.label} is disconnected.")
    return redirect("account-detail", pk=pk)


@require_GET
def oauth_callback(request, broker: str):
    """Finish a broker login. The signed, single-use ``state`` names the account and team."""
    state = request.GET.get("state", "")
    context = {"broker": broker, "ok": False}
    try:
        session = services.oauth_login_complete(state=state, params=request.GET.dict())
    except ValidationError as exc:
        context["error"] = " ".join(exc.messages)
        return render(request, "console/broker_callback.html", context, status=400)
    except BrokerError as exc:
        context["error"] = f"The broker refused the login: {exc.message}"
        return render(request, "console/broker_callback.html", context, status=400)
    context.update(ok=True, account=session.broker_account)
    return render(request, "console/broker_callback.html", context)
