from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.generics import RetrieveAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from accounts import services
from accounts.models import Membership, Role, TeamAPIKey
from algoways.api.views import TeamScopedViewSet

from .serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    MembershipCreateSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    MeSerializer,
)


class MeView(RetrieveAPIView):
    """The signed-in user (or the API key's member) and the teams they belong to."""

    serializer_class = MeSerializer
    permission_classes = [IsAuthenticated]

    def get_object(self):
        return self.request.user


class MembershipViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TeamScopedViewSet
):
    """The team's members: admins add existing users by email, change roles, remove members."""

    queryset = Membership.objects.select_related("user")
    serializer_class = MembershipSerializer
    filterset_fields = ["role"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def create(self, request):
        data = self._validated(MembershipCreateSerializer, request.data)
        membership = services.membership_add(
            acting=request.team_context.membership, email=data["email"], role=data["role"]
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipSerializer)
    def partial_update(self, request, pk=None):
        data = self._validated(MembershipUpdateSerializer, request.data)
        membership = services.membership_change_role(
            acting=request.team_context.membership, membership=self.get_object(), role=data["role"]
        )
        return Response(MembershipSerializer(membership).data)

    def perform_destroy(self, instance):
        services.membership_remove(acting=self.request.team_context.membership, membership=instance)

    def _validated(self, serializer_class, data):
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """API keys: a member sees and creates their own; admins see and revoke every team key."""

    queryset = TeamAPIKey.objects.select_related("membership__user", "membership__team")
    serializer_class = ApiKeySerializer
    lookup_field = "prefix"
    write_role = Role.VIEWER  # anyone may make a key for themselves; it acts with their role
    filterset_fields = ["revoked", "read_only"]

    def get_queryset(self):
        queryset = super().get_queryset()
        context = self.request.team_context
        if not context.role.at_least(Role.ADMIN):
            queryset = queryset.filter(membership=context.membership)
        return queryset

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def create(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = request.team_context.membership
        if request.team_context.api_key is not None and request.team_context.api_key.read_only:
            serializer.validated_data["read_only"] = True  # a read-only key cannot mint more
        api_key, key = services.api_key_create(membership=membership, **serializer.validated_data)
        api_key.key = key
        return Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, prefix=None):
        api_key = services.api_key_revoke(
            acting=request.team_context.membership, api_key=self.get_object()
        )
        return Response(ApiKeySerializer(api_key).data)
