"""Console forms for orders: the order ticket and the basket, validated by the API's own rules."""

from __future__ import annotations

import secrets
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.utils.crypto import salted_hmac

from brokers.adapters.base import OrderType, Product, Side, Validity
from brokers.models import BrokerAccount

from .api.serializers import OrderSpecSerializer
from .schedule_models import ScheduleKind
from .services import OrderSpec

TICKET_SALT = "algoways.orders.ticket"
SPEC_FIELDS = (
    "instrument",
    "side",
    "quantity",
    "order_type",
    "product",
    "price",
    "trigger_price",
    "validity",
    "reference_price",
)


def new_form_token() -> str:
    return secrets.token_hex(12)


def client_order_id_for(*, membership, token: str, max_length: int) -> str:
    """The client order id of one ticket: the same token always gives the same id, so a double
    click or a resubmitted confirmation finds the first order instead of placing a second."""
    digest = salted_hmac(TICKET_SALT, f"{membership.pk}:{token}", algorithm="sha256").hexdigest()
    return digest[: min(max_length, 24)]


def _decimal(label: str, **kwargs) -> forms.DecimalField:
    return forms.DecimalField(
        label=label, max_digits=24, decimal_places=8, min_value=0, required=False, **kwargs
    )


class OrderSpecForm(forms.Form):
    """One order without its account; the API's serializer decides what is valid."""

    instrument = forms.CharField(
        max_length=90,
        label="Symbol",
        help_text="EXCHANGE:SYMBOL, e.g. NSE:INFY. Type to search the instrument master.",
        widget=forms.TextInput(attrs={"list": "instrument-options", "autocomplete": "off"}),
    )
    side = forms.ChoiceField(choices=[(s.value, s.value) for s in Side], widget=forms.RadioSelect)
    quantity = forms.DecimalField(max_digits=24, decimal_places=8, min_value=0)
    order_type = forms.ChoiceField(
        label="Type", choices=[(t.value, t.value) for t in OrderType], initial=OrderType.LIMIT
    )
    product = forms.ChoiceField(
        choices=[(p.value, p.value) for p in Product], initial=Product.INTRADAY
    )
    price = _decimal("Price", help_text="LIMIT and STOP_LIMIT orders.")
    trigger_price = _decimal("Trigger price", help_text="STOP and STOP_LIMIT orders.")
    validity = forms.ChoiceField(
        choices=[(v.value, v.value) for v in Validity], initial=Validity.DAY
    )
    reference_price = _decimal(
        "Reference price", help_text="MARKET orders: the price the risk limits are checked at."
    )
    form_token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def clean_instrument(self) -> str:
        value = self.cleaned_data["instrument"].strip()
        exchange, sep, symbol = value.partition(":")
        if not sep or not exchange or not symbol:
            raise forms.ValidationError("Write the instrument as EXCHANGE:SYMBOL, e.g. NSE:INFY.")
        return f"{exchange.upper()}:{symbol}"

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        exchange, _, symbol = cleaned["instrument"].partition(":")
        data = {
            "symbol": symbol,
            "exchange": exchange,
            **{name: cleaned.get(name) for name in SPEC_FIELDS if name != "instrument"},
        }
        data = {key: value for key, value in data.items() if value not in (None, "")}
        serializer = OrderSpecSerializer(data=data)
        if not serializer.is_valid():
            self._add_serializer_errors(serializer.errors)
            return cleaned
        self.spec_attrs = dict(serializer.validated_data)
        return cleaned

    def _add_serializer_errors(self, errors: dict) -> None:
        for name, messages in errors.items():
            field = "instrument" if name in ("symbol", "exchange") else name
            for message in messages if isinstance(messages, list) else [messages]:
                self.add_error(field if field in self.fields else None, str(message))

    def check_account(self, account: BrokerAccount) -> bool:
        """Add the errors this spec has on ``account``'s broker; True when there are none."""
        problems = OrderSpecSerializer.validate_for_account(self.spec_attrs, account)
        for name, messages in problems.items():
            for message in messages:
                label = f"{account.label}: {message}"
                self.add_error(name if name in self.fields else None, label)
        return not problems

    def spec(self, *, client_order_id: str = "") -> OrderSpec:
        return OrderSpecSerializer.to_spec({**self.spec_attrs, "client_order_id": client_order_id})

    def summary(self) -> list[tuple[str, object]]:
        """What the confirmation step shows."""
        attrs = self.spec_attrs
        rows = [
            ("Instrument", f"{attrs['exchange']}:{attrs['symbol']}"),
            ("Side", attrs["side"]),
            ("Quantity", attrs["quantity"].normalize()),
            ("Type", attrs["order_type"]),
            ("Product", attrs["product"]),
            ("Validity", attrs["validity"]),
        ]
        for name, label in (
            ("price", "Price"),
            ("trigger_price", "Trigger price"),
            ("reference_price", "Reference price"),
        ):
            if attrs.get(name) is not None:
                rows.append((label, attrs[name].normalize()))
        return rows


class OrderTicketForm(OrderSpecForm):
    """An order on one of the team's connected accounts."""

    field_order = ["account", *SPEC_FIELDS]

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"] = forms.ModelChoiceField(
            queryset=BrokerAccount.objects.for_team(team).connected().order_by("label"),
            empty_label=None,
        )
        self.order_fields(self.field_order)

    def clean(self):
        cleaned = super().clean()
        if not self.errors and cleaned.get("account"):
            self.check_account(cleaned["account"])
        return cleaned


class BasketForm(OrderSpecForm):
    """The same order on several of the team's connected accounts."""

    field_order = ["accounts", *SPEC_FIELDS]

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["accounts"] = forms.ModelMultipleChoiceField(
            queryset=BrokerAccount.objects.for_team(team).connected().order_by("label"),
            widget=forms.CheckboxSelectMultiple,
        )
        self.order_fields(self.field_order)

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            for account in cleaned.get("accounts") or []:
                self.check_account(account)
        return cleaned


class ScheduleForm(forms.Form):
    """A scheduled order, basket or square-off; the schedules service decides what is valid."""

    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=ScheduleKind.choices, initial=ScheduleKind.ORDER)
    accounts = forms.ModelMultipleChoiceField(
        queryset=BrokerAccount.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    whole_team = forms.BooleanField(
        required=False, help_text="Square-off only: every connected account of the team."
    )
    instrument = forms.CharField(
        max_length=90,
        required=False,
        label="Symbol",
        help_text="EXCHANGE:SYMBOL (not for a square-off).",
        widget=forms.TextInput(attrs={"list": "instrument-options", "autocomplete": "off"}),
    )
    side = forms.ChoiceField(
        choices=[(s.value, s.value) for s in Side], required=False, widget=forms.RadioSelect
    )
    quantity = _decimal("Quantity")
    order_type = forms.ChoiceField(
        label="Type", choices=[(t.value, t.value) for t in OrderType], initial=OrderType.MARKET
    )
    product = forms.ChoiceField(
        choices=[(p.value, p.value) for p in Product], initial=Product.INTRADAY
    )
    price = _decimal("Price", help_text="LIMIT and STOP_LIMIT orders.")
    trigger_price = _decimal("Trigger price", help_text="STOP and STOP_LIMIT orders.")
    run_at = forms.DateTimeField(
        required=False,
        label="Run once at",
        input_formats=["%Y-%m-%dT%H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="In the time zone below. Or give a cron line instead.",
    )
    cron = forms.CharField(
        max_length=100,
        required=False,
        help_text="Recurring, e.g. 15 9 * * 1-5 (09:15 on weekdays).",
    )
    timezone = forms.CharField(max_length=64, initial="Asia/Kolkata")

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["accounts"].queryset = BrokerAccount.objects.for_team(team).order_by("label")

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        specs = []
        if data["kind"] != ScheduleKind.SQUARE_OFF:
            exchange, _, symbol = (data.get("instrument") or "").strip().partition(":")
            spec = {
                "symbol": symbol,
                "exchange": exchange,
                "side": data.get("side") or "",
                "quantity": data.get("quantity"),
                "order_type": data["order_type"],
                "product": data["product"],
                "price": data.get("price"),
                "trigger_price": data.get("trigger_price"),
            }
            specs = [{key: value for key, value in spec.items() if value not in (None, "")}]
        run_at = data.get("run_at")
        if run_at is not None:
            try:
                zone = ZoneInfo(data["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
            if zone is not None:
                run_at = run_at.replace(tzinfo=None).replace(tzinfo=zone)
        return {
            "name": data["name"],
            "kind": data["kind"],
            "accounts": list(data["accounts"]),
            "whole_team": data["whole_team"],
            "specs": specs,
            "run_at": run_at,
            "cron": data.get("cron", "").strip(),
            "timezone": data["timezone"],
        }

    def add_service_errors(self, exc) -> None:
        for name, messages in getattr(exc, "message_dict", {"__all__": exc.messages}).items():
            field = name if name in self.fields else None
            for message in messages:
                plain = field or name == "__all__"
                self.add_error(field, message if plain else f"{name}: {message}")
