from __future__ import annotations

import re

import django_filters
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.models import Role
from algoways.api.errors import error_body
from algoways.api.views import TeamScopedViewSet
from brokers.models import BrokerAccount

from .. import notify, services
from ..idempotency import HEADER as IDEMPOTENCY_HEADER
from ..idempotency import idempotent
from ..models import Order, OrderGroup, OrderStatus, RiskLimits, TeamTradingState
from ..risk import RiskRejected
from .serializers import (
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderGroupCreateSerializer,
    OrderGroupSerializer,
    OrderModifySerializer,
    OrderSerializer,
    RiskLimitsSerializer,
    TradingHaltSerializer,
    TradingStateSerializer,
)

PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Makes retries safe: the same key and body return the first response.",
)
PREFER_PARAMETER = OpenApiParameter(
    "Prefer",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="wait=N: wait up to N seconds (at most ORDERS_WAIT_MAX_SECONDS) for the "
    "broker's answer. 201 with the answered order, else 202 with the pending one.",
)


def placed_by_from(request) -> services.PlacedBy:
    context = request.team_context
    return services.PlacedBy(membership=context.membership, api_key=context.api_key)


def conflict(message: str, code: str = "conflict") -> Response:
    return Response(error_body(code, message), status=409)


def risk_rejected(exc: RiskRejected) -> Response:
    return Response(error_body(exc.verdict.code, exc.verdict.reason), status=422)


class OrderFilter(django_filters.FilterSet):
    account = django_filters.NumberFilter(field_name="broker_account_id")
    status = django_filters.MultipleChoiceFilter(choices=OrderStatus.choices)
    symbol = django_filters.CharFilter(field_name="symbol", lookup_expr="iexact")
    exchange = django_filters.CharFilter(field_name="exchange", lookup_expr="iexact")
    group = django_filters.NumberFilter(field_name="group_id")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Order
        fields = ["account", "status", "symbol", "exchange", "group"]


class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """The team's orders. Viewers read; traders place, modify and cancel."""

    queryset = Order.objects.select_related("broker_account")
    serializer_class = OrderSerializer
    filterset_class = OrderFilter
    write_role = Role.TRADER
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("events")
        return queryset

    def get_serializer_class(self):
        if self.action == "retrieve":
            return OrderDetailSerializer
        return super().get_serializer_class()

    @extend_schema(
        request=OrderCreateSerializer,
        responses={201: OrderSerializer, 202: OrderSerializer},
        parameters=[IDEMPOTENCY_PARAMETER, PREFER_PARAMETER],
    )
    @idempotent(recover=lambda view, request, key: view._order_placed_with(key))
    def create(self, request):
        """Place an order: 202 with the pending order at once (or 201 after a Prefer: wait)."""
        serializer = OrderCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        attrs = serializer.validated_data
        try:
            order, created = services.order_place(
                team=self.team,
                account=attrs["account"],
                spec=OrderCreateSerializer.to_spec(attrs),
                placed_by=placed_by_from(request),
                idempotency_key=request.headers.get(IDEMPOTENCY_HEADER, "")[:255],
            )
        except services.DuplicateClientOrderId as exc:
            return conflict(str(exc), "duplicate_client_order_id")
        if order.status == OrderStatus.REJECTED and created:
            return Response(
                error_body(
                    "order_rejected",
                    order.rejection_reason,
                    order=OrderSerializer.represent(order),
                ),
                status=422,
            )
        wait = self._prefer_wait(request)
        headers = {}
        if created and wait:
            order = notify.order_wait(order.pk, wait)
            headers["Preference-Applied"] = f"wait={wait:g}"
        settled = order.status not in notify.IN_FLIGHT
        status = 201 if (wait and settled) else (202 if created else 200)
        return Response(OrderSerializer.represent(order), status=status, headers=headers)

    def _order_placed_with(self, idempotency_key: str) -> Response | None:
        """The order an earlier request with this key created before it died, if any."""
        order = (
            Order.objects.for_team(self.team)
            .filter(idempotency_key=idempotency_key[:255])
            .order_by("pk")
            .first()
        )
        return Response(OrderSerializer.represent(order), status=200) if order else None

    @staticmethod
    def _prefer_wait(request) -> float:
        match = PREFER_WAIT.search(request.headers.get("Prefer", ""))
        if not match:
            return 0.0
        cap = float(getattr(settings, "ORDERS_WAIT_MAX_SECONDS", 10))
        return min(float(match.group(1)), cap)

    @extend_schema(request=OrderModifySerializer, responses=OrderSerializer)
    def partial_update(self, request, pk=None):
        """Modify a pending or working order (quantity, price, trigger price, type)."""
        order = self.get_object()
        serializer = OrderModifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            order = services.order_modify(order=order, changes=dict(serializer.validated_data))
        except services.OrderConflict as exc:
            return conflict(str(exc))
        except RiskRejected as exc:
            return risk_rejected(exc)
        return Response(OrderSerializer.represent(order))

    @extend_schema(request=None, responses=OrderSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel: at once if not yet sent, else at the broker."""
        order = self.get_object()
        try:
            order = services.order_cancel(order=order)
        except services.OrderConflict as exc:
            return conflict(str(exc))
        return Response(OrderSerializer.represent(order))


class OrderGroupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """Baskets and fan-out: the same order(s) on many accounts, with each account's result."""

    queryset = OrderGroup.objects.all()
    serializer_class = OrderGroupSerializer
    write_role = Role.TRADER
    http_method_names = ["get", "post", "head", "options"]

    @extend_schema(
        request=OrderGroupCreateSerializer,
        responses={202: OrderGroupSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def create(self, request):
        serializer = OrderGroupCreateSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        group = services.order_group_place(
            team=self.team,
            accounts=serializer.validated_data["accounts"],
            specs=serializer.validated_data["specs"],
            placed_by=placed_by_from(request),
        )
        return Response(OrderGroupSerializer(group).data, status=202)


class RiskLimitsViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TeamScopedViewSet,
):
    """Pre-trade limits of the team (no account) and of each account. Admins change them."""

    queryset = RiskLimits.objects.select_related("broker_account")
    serializer_class = RiskLimitsSerializer
    write_role = Role.ADMIN
    filterset_fields = ["broker_account"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer):
        serializer.save(team=self.team)  # the mixin's save() would not know the team


class TradingHaltViewSet(TeamScopedViewSet):
    """The kill switch: halt or resume one account, or the whole team at once (admins)."""

    queryset = TeamTradingState.objects.all()
    serializer_class = TradingHaltSerializer
    write_role = Role.ADMIN

    @extend_schema(responses=TradingStateSerializer)
    def list(self, request):
        return Response(TradingStateSerializer.for_team(self.team))

    @extend_schema(request=TradingHaltSerializer, responses=TradingStateSerializer)
    @action(detail=False, methods=["post"])
    def halt(self, request):
        return self._switch(request, halted=True)

    @extend_schema(request=TradingHaltSerializer, responses=TradingStateSerializer)
    @action(detail=False, methods=["post"])
    def resume(self, request):
        return self._switch(request, halted=False)

    def _switch(self, request, *, halted: bool):
        serializer = TradingHaltSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        account: BrokerAccount | None = serializer.validated_data.get("account")
        services.trading_halt_set(
            team=self.team,
            account=account,
            halted=halted,
            reason=serializer.validated_data.get("reason", ""),
        )
        return Response(TradingStateSerializer.for_team(self.team))
