from __future__ import annotations

import re

from rest_framework import serializers

from algoways.api.serializers import (
    StrictSerializerMixin,
    TeamScopedRelatedField,
    TeamScopedRelatedListField,
)
from algoways.db import PrecompiledQuery
from brokers.adapters.base import OrderType, Product, Side, Validity
from brokers.models import BrokerAccount

from .. import risk
from ..models import Order, OrderEvent, OrderGroup, RiskLimits, TeamTradingState
from ..services import OrderSpec

CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9]+$")
SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._&:/-]*$")
NEEDS_PRICE = {OrderType.LIMIT, OrderType.STOP_LIMIT}
NEEDS_TRIGGER = {OrderType.STOP, OrderType.STOP_LIMIT}
#: What validating orders of a group needs of its accounts: which team and which broker. Placing
#: reads them again, locked, with their trading controls; nobody here needs their secrets.
ACCOUNT_FIELDS_TO_VALIDATE = ("team", "broker")


def decimal_field(**kwargs):
    return serializers.DecimalField(max_digits=24, decimal_places=8, **kwargs)


class OrderSpecSerializer(StrictSerializerMixin, serializers.Serializer):
    """One order, without its account (an order group applies it to many)."""

    symbol = serializers.CharField(max_length=64)
    exchange = serializers.CharField(max_length=20)
    side = serializers.ChoiceField(choices=[s.value for s in Side])
    quantity = decimal_field(min_value=0)
    order_type = serializers.ChoiceField(choices=[t.value for t in OrderType])
    product = serializers.ChoiceField(
        choices=[p.value for p in Product], default=Product.INTRADAY.value
    )
    price = decimal_field(required=False, allow_null=True, min_value=0)
    trigger_price = decimal_field(required=False, allow_null=True, min_value=0)
    validity = serializers.ChoiceField(
        choices=[v.value for v in Validity], default=Validity.DAY.value
    )
    client_order_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Your id for the order (letters and digits, within the broker's length "
        "limit). A retry with the same id on the same account returns the first order.",
    )
    reference_price = decimal_field(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="For MARKET orders: the price the notional risk limit is checked against.",
    )

    def validate_symbol(self, value: str) -> str:
        if not SYMBOL.match(value):
            raise serializers.ValidationError("Not a valid symbol.")
        return value

    def validate_exchange(self, value: str) -> str:
        if not SYMBOL.match(value):
            raise serializers.ValidationError("Not a valid exchange.")
        return value.upper()

    def validate_quantity(self, value):
        if value <= 0:
            raise serializers.ValidationError("Must be greater than zero.")
        return value

    def validate_client_order_id(self, value: str) -> str:
        if value and not CLIENT_ORDER_ID.match(value):
            raise serializers.ValidationError("Only letters and digits.")
        return value

    def validate(self, attrs):
        order_type = OrderType(attrs["order_type"])
        problems = {}
        for name in ("price", "trigger_price"):
            value = attrs.get(name)
            if value is not None and value <= 0:
                problems[name] = ["Must be greater than zero."]
        if order_type in NEEDS_PRICE and attrs.get("price") is None:
            problems["price"] = [f"A {order_type} order needs a price."]
        if order_type not in NEEDS_PRICE and attrs.get("price") is not None:
            problems["price"] = [f"A {order_type} order takes no price."]
        if order_type in NEEDS_TRIGGER and attrs.get("trigger_price") is None:
            problems["trigger_price"] = [f"A {order_type} order needs a trigger price."]
        if order_type not in NEEDS_TRIGGER and attrs.get("trigger_price") is not None:
            problems["trigger_price"] = [f"A {order_type} order takes no trigger price."]
        if problems:
            raise serializers.ValidationError(problems)
        return attrs

    @staticmethod
    def validate_for_account(attrs: dict, account: BrokerAccount) -> dict:
        """Problems with the spec on this account's broker, as field errors."""
        adapter_class = account.adapter_class
        problems = {}
        client_order_id = attrs.get("client_order_id") or ""
        if len(client_order_id) > adapter_class.client_order_id_max_length:
            problems["client_order_id"] = [
                f"{adapter_class.name} takes client order ids of at most "
                f"{adapter_class.client_order_id_max_length} characters."
            ]
        if OrderType(attrs["order_type"]) not in adapter_class.order_types:
            problems["order_type"] = [f"{adapter_class.name} does not take this order type."]
        return problems

    @staticmethod
    def to_spec(attrs: dict) -> OrderSpec:
        return OrderSpec(
            symbol=attrs["symbol"],
            exchange=attrs["exchange"],
            side=Side(attrs["side"]),
            quantity=attrs["quantity"],
            order_type=OrderType(attrs["order_type"]),
            product=Product(attrs.get("product") or Product.INTRADAY),
            price=attrs.get("price"),
            trigger_price=attrs.get("trigger_price"),
            validity=Validity(attrs.get("validity") or Validity.DAY),
            client_order_id=attrs.get("client_order_id") or "",
            reference_price=attrs.get("reference_price"),
        )


#: The account an order names, read on every POST /api/orders/ with its trading controls:
#: validating needs its team and broker, placing its kill switches and whether risk limits
#: apply (``order_place`` reads it again, locked, only when its checks must see earlier orders).
ACCOUNT_TO_PLACE = PrecompiledQuery(
    lambda team_id, pk: (
        risk.with_trading_controls(BrokerAccount.objects.for_team(team_id)).filter(pk=pk).order_by()
    ),
    team_id=int,
    pk=int,
)


class OrderCreateSerializer(OrderSpecSerializer):
    account = TeamScopedRelatedField(
        queryset=risk.with_trading_controls(BrokerAccount.objects.all()), rows=ACCOUNT_TO_PLACE
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        problems = self.validate_for_account(attrs, attrs["account"])
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


class OrderModifySerializer(StrictSerializerMixin, serializers.Serializer):
    quantity = decimal_field(required=False, min_value=0)
    price = decimal_field(required=False, min_value=0)
    trigger_price = decimal_field(required=False, min_value=0)
    order_type = serializers.ChoiceField(choices=[t.value for t in OrderType], required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Give at least one of: " + ", ".join(self.fields))
        problems = {
            name: ["Must be greater than zero."]
            for name in ("quantity", "price", "trigger_price")
            if name in attrs and attrs[name] <= 0
        }
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


class OrderEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderEvent
        fields = [
            "created_at",
            "from_status",
            "to_status",
            "source",
            "broker_status",
            "message",
            "data",
        ]


class OrderSerializer(serializers.ModelSerializer):
    account = serializers.PrimaryKeyRelatedField(source="broker_account", read_only=True)
    placed_by = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "id",
            "account",
            "group",
            "sequence",
            "client_order_id",
            "symbol",
            "exchange",
            "side",
            "quantity",
            "order_type",
            "product",
            "price",
            "trigger_price",
            "validity",
            "reference_price",
            "status",
            "broker_order_id",
            "broker_status",
            "broker_message",
            "filled_quantity",
            "average_price",
            "rejection_reason",
            "placed_by",
            "created_at",
            "updated_at",
            "submitted_at",
        ]
        read_only_fields = fields

    @classmethod
    def represent(cls, order: Order) -> dict:
        """``cls(order).data``, without building the serializer's fields again.

        A ModelSerializer builds its fields from the model for every instance it is made for,
        most of the CPU of serializing one order (a profile of POST /api/orders/ under load:
        8% of the web process). One instance per class, made on first use, serializes every
        order: ``to_representation`` only reads its bound fields, and no field of this
        serializer reads the request or any other context, so threads can share it.
        """
        serializer = cls.__dict__.get("_shared")
        if serializer is None:
            serializer = cls()
            serializer.fields  # noqa: B018 - built now, before any thread shares it
            cls._shared = serializer
        return serializer.to_representation(order)

    def get_placed_by(self, order) -> dict:
        return {
            "membership": order.placed_by_membership_id,
            # The key's primary key embeds its hash: only the public prefix is ever shown.
            "api_key": order.placed_by_api_key_id.partition(".")[0]
            if order.placed_by_api_key_id
            else None,
            "schedule": order.placed_by_schedule or None,
        }


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "events"]
        read_only_fields = fields


class OrderGroupCreateSerializer(StrictSerializerMixin, serializers.Serializer):
    accounts = TeamScopedRelatedListField(
        queryset=BrokerAccount.objects.only(*ACCOUNT_FIELDS_TO_VALIDATE),
        min_length=1,
        max_length=2000,
    )
    order = OrderSpecSerializer(required=False)
    orders = OrderSpecSerializer(many=True, required=False)

    def validate_accounts(self, value):
        if len({account.pk for account in value}) != len(value):
            raise serializers.ValidationError("An account is listed twice.")
        return value

    def validate(self, attrs):
        specs = ([attrs["order"]] if "order" in attrs else []) + list(attrs.get("orders") or [])
        if ("order" in attrs) == ("orders" in attrs):
            raise serializers.ValidationError(
                {"orders": ["Give either order (one spec) or orders (a list of specs)."]}
            )
        if not specs:
            raise serializers.ValidationError({"orders": ["Give at least one order."]})
        if len(specs) > 50:
            raise serializers.ValidationError({"orders": ["At most 50 orders per group."]})
        problems = {}
        for account in attrs["accounts"]:
            for spec in specs:
                for name, messages in OrderSpecSerializer.validate_for_account(
                    spec, account
                ).items():
                    problems.setdefault(name, []).extend(
                        f"Account {account.pk}: {message}" for message in messages
                    )
        if problems:
            raise serializers.ValidationError(problems)
        attrs["specs"] = [OrderSpecSerializer.to_spec(spec) for spec in specs]
        return attrs


class OrderGroupChildSerializer(serializers.ModelSerializer):
    account = serializers.PrimaryKeyRelatedField(source="broker_account", read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "account",
            "sequence",
            "client_order_id",
            "status",
            "broker_order_id",
            "filled_quantity",
            "average_price",
            "rejection_reason",
        ]
        read_only_fields = fields


class OrderGroupSerializer(serializers.ModelSerializer):
    """A group with each account's result."""

    results = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()

    class Meta:
        model = OrderGroup
        fields = ["id", "specs", "created_at", "summary", "results"]
        read_only_fields = fields

    def _children(self, group):
        cache = getattr(group, "_children_cache", None)
        if cache is None:
            cache = list(group.orders.order_by("broker_account_id", "sequence", "pk"))
            group._children_cache = cache
        return cache

    def get_results(self, group) -> list[dict]:
        by_account: dict[int, list] = {}
        # One list serializer for all children: its fields are built once, not once per child.
        for row in OrderGroupChildSerializer(self._children(group), many=True).data:
            by_account.setdefault(row["account"], []).append(row)
        return [{"account": account, "orders": orders} for account, orders in by_account.items()]

    def get_summary(self, group) -> dict[str, int]:
        counts: dict[str, int] = {}
        for child in self._children(group):
            counts[child.status] = counts.get(child.status, 0) + 1
        return counts


class RiskLimitsSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    account = TeamScopedRelatedField(
        source="broker_account",
        queryset=BrokerAccount.objects.all(),
        allow_null=True,
        required=False,
        help_text="Empty for the team-wide limits.",
    )
    allowed_exchanges = serializers.ListField(
        child=serializers.CharField(max_length=20), required=False
    )
    allowed_symbols = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False
    )
    max_quantity = decimal_field(required=False, allow_null=True, min_value=0)
    max_notional = decimal_field(required=False, allow_null=True, min_value=0)

    class Meta:
        model = RiskLimits
        fields = [
            "id",
            "account",
            "max_quantity",
            "max_notional",
            "allowed_exchanges",
            "allowed_symbols",
            "max_orders_per_minute",
            "updated_at",
        ]
        read_only_fields = ["id", "updated_at"]

    def validate_allowed_exchanges(self, value):
        return [item.upper() for item in value]

    def validate(self, attrs):
        team = self.context["team"]
        account = attrs.get("broker_account", getattr(self.instance, "broker_account", None))
        clash = RiskLimits.objects.filter(team=team, broker_account=account)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError(
                {"account": ["Limits for this account (or the team) exist already: change them."]}
            )
        return attrs


class TradingHaltSerializer(StrictSerializerMixin, serializers.Serializer):
    account = TeamScopedRelatedField(
        queryset=BrokerAccount.objects.all(),
        required=False,
        allow_null=True,
        help_text="Empty: the whole team.",
    )
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class TradingStateSerializer(serializers.Serializer):
    team_halted = serializers.BooleanField()
    team_halt_reason = serializers.CharField()
    halted_accounts = serializers.ListField(child=serializers.IntegerField())

    @staticmethod
    def for_team(team) -> dict:
        state = TeamTradingState.objects.filter(team=team).first()
        return {
            "team_halted": bool(state and state.trading_halted),
            "team_halt_reason": state.halt_reason if state else "",
            "halted_accounts": list(
                BrokerAccount.objects.for_team(team)
                .filter(trading_halted=True)
                .values_list("pk", flat=True)
            ),
        }
