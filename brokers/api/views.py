from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from accounts.models import Role
from algoways.api.views import TeamScopedViewSet
from brokers import services
from brokers.adapters import registry
from brokers.models import BrokerAccount, Instrument

from .serializers import (
    BrokerAccountSerializer,
    BrokerSerializer,
    FundsSerializer,
    InstrumentSerializer,
    LoginUrlSerializer,
    OAuthCompleteSerializer,
    dataclass_rows,
)


class BrokerViewSet(viewsets.ViewSet):
    """The registered brokers: how each signs in, what it needs and what it can do."""

    permission_classes = [IsAuthenticated]
    lookup_field = "code"
    serializer_class = BrokerSerializer

    @extend_schema(responses=BrokerSerializer(many=True))
    def list(self, request):
        return Response(BrokerSerializer(registry.all_adapters(), many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("code", str, OpenApiParameter.PATH)],
        responses=BrokerSerializer,
    )
    def retrieve(self, request, code=None):
        try:
            adapter_class = registry.get(code)
        except registry.UnknownBroker:
            from rest_framework.exceptions import NotFound

            raise NotFound(f"Unknown broker {code!r}.")
        return Response(BrokerSerializer(adapter_class).data)


class InstrumentViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Search the instrument master: ``?broker=zerodha&q=INF`` (symbol or name prefix)."""

    permission_classes = [IsAuthenticated]
    serializer_class = InstrumentSerializer
    queryset = Instrument.objects.all()

    @extend_schema(
        parameters=[
            OpenApiParameter("broker", str, required=True),
            OpenApiParameter("q", str, description="symbol prefix or name fragment"),
            OpenApiParameter("exchange", str),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        broker = params.get("broker", "")
        if not broker:
            raise serializers.ValidationError({"broker": ["This parameter is required."]})
        queryset = Instrument.objects.filter(broker=broker)
        if params.get("exchange"):
            queryset = queryset.filter(exchange=params["exchange"].upper())
        query = params.get("q", "").strip()
        if query:
            queryset = queryset.filter(symbol__istartswith=query) | queryset.filter(
                name__icontains=query
            )
        return queryset.order_by("symbol", "exchange")


class BrokerAccountViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TeamScopedViewSet,
):
    """The team's broker accounts. Admins create, edit and delete; traders connect and use them."""

    queryset = BrokerAccount.objects.select_related("session")
    serializer_class = BrokerAccountSerializer
    filterset_fields = ["broker", "connection_state"]
    action_roles = {
        "login_url": Role.TRADER,
        "oauth_complete": Role.TRADER,
        "connect": Role.TRADER,
        "disconnect": Role.TRADER,
    }
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = services.broker_account_create(team=self.team, **serializer.validated_data)
        return Response(self.get_serializer(account).data, status=201)

    def partial_update(self, request, pk=None):
        account = self.get_object()
        serializer = self.get_serializer(account, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        account = services.broker_account_update(account=account, **serializer.validated_data)
        return Response(self.get_serializer(account).data)

    @extend_schema(request=None, responses=LoginUrlSerializer)
    @action(detail=True, methods=["get"], url_path="login-url")
    def login_url(self, request, pk=None):
        """Where to send the user to sign in at the broker (OAuth-style brokers)."""
        return Response({"login_url": services.oauth_login_url(account=self.get_object())})

    @extend_schema(request=OAuthCompleteSerializer, responses=BrokerAccountSerializer)
    @action(detail=True, methods=["post"], url_path="oauth-complete")
    def oauth_complete(self, request, pk=None):
        """Complete an OAuth login with the broker redirect's query parameters."""
        account = self.get_object()
        serializer = OAuthCompleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.oauth_login_complete(
            team=self.team, expected_account=account, **serializer.validated_data
        )
        account.refresh_from_db()
        return Response(self.get_serializer(account).data)

    @extend_schema(request=None, responses=BrokerAccountSerializer)
    @action(detail=True, methods=["post"])
    def connect(self, request, pk=None):
        """Sign in with the stored credentials (credential and TOTP brokers)."""
        account = self.get_object()
        services.broker_account_connect(account=account)
        return Response(self.get_serializer(account).data)

    @extend_schema(request=None, responses=BrokerAccountSerializer)
    @action(detail=True, methods=["post"])
    def disconnect(self, request, pk=None):
        account = self.get_object()
        services.broker_account_disconnect(account=account)
        return Response(self.get_serializer(account).data)

    # Read-through to the broker ---------------------------------------------------------------

    def _read(self, operation):
        return services.broker_call(self.get_object(), operation)

    @extend_schema(responses=FundsSerializer)
    @action(detail=True, methods=["get"])
    def funds(self, request, pk=None):
        funds = self._read(lambda adapter: adapter.funds())
        return Response(dataclass_rows([funds])[0])

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def positions(self, request, pk=None):
        return Response(dataclass_rows(self._read(lambda adapter: adapter.positions())))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def holdings(self, request, pk=None):
        return Response(dataclass_rows(self._read(lambda adapter: adapter.holdings())))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], url_path="order-book")
    def order_book(self, request, pk=None):
        return Response(dataclass_rows(self._read(lambda adapter: adapter.order_book())))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], url_path="trade-book")
    def trade_book(self, request, pk=None):
        return Response(dataclass_rows(self._read(lambda adapter: adapter.trade_book())))

    @extend_schema(
        parameters=[
            OpenApiParameter("symbols", str, description="EXCHANGE:SYMBOL, comma-separated")
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=True, methods=["get"])
    def quotes(self, request, pk=None):
        instruments = []
        for item in request.query_params.get("symbols", "").split(","):
            exchange, _, symbol = item.strip().partition(":")
            if item.strip():
                if not symbol:
                    raise serializers.ValidationError(
                        {"symbols": [f"{item!r} is not EXCHANGE:SYMBOL."]}
                    )
                instruments.append((exchange, symbol))
        if not instruments:
            raise serializers.ValidationError({"symbols": ["Give at least one EXCHANGE:SYMBOL."]})
        if len(instruments) > 50:
            raise serializers.ValidationError({"symbols": ["At most 50 symbols per request."]})
        return Response(dataclass_rows(self._read(lambda adapter: adapter.quotes(instruments))))
