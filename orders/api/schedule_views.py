"""Scheduled orders: viewers read them and their runs; admins create, change and switch them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.models import Role
from algoways.api.views import TeamScopedViewSet

from .. import schedules
from ..schedule_models import ScheduledOrder
from .schedule_serializers import (
    ScheduledOrderDetailSerializer,
    ScheduledOrderInputSerializer,
    ScheduledOrderRunSerializer,
    ScheduledOrderSerializer,
)


class ScheduledOrderViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TeamScopedViewSet,
):
    """Orders, baskets and square-offs the platform places on its own, once or on a cron."""

    queryset = ScheduledOrder.objects.prefetch_related("accounts")
    serializer_class = ScheduledOrderSerializer
    read_role = Role.VIEWER
    write_role = Role.ADMIN
    filterset_fields = ["kind", "enabled"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        if self.action == "retrieve":
            return ScheduledOrderDetailSerializer
        return super().get_serializer_class()

    @extend_schema(request=ScheduledOrderInputSerializer, responses={201: ScheduledOrderSerializer})
    def create(self, request):
        serializer = ScheduledOrderInputSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        schedule = schedules.schedule_create(
            team=self.team,
            created_by=request.team_context.membership,
            **serializer.validated_data,
        )
        return Response(ScheduledOrderSerializer(schedule).data, status=201)

    @extend_schema(request=ScheduledOrderInputSerializer, responses=ScheduledOrderSerializer)
    def partial_update(self, request, pk=None):
        schedule = self.get_object()
        serializer = ScheduledOrderInputSerializer(
            data=request.data, partial=True, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        schedule = schedules.schedule_update(
            schedule=schedule, accounts=changes.pop("accounts", None), **changes
        )
        return Response(ScheduledOrderSerializer(schedule).data)

    @extend_schema(request=None, responses=ScheduledOrderSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        """Switch on; a recurring schedule's next run counts from now (no catch-up)."""
        schedule = schedules.schedule_enable(schedule=self.get_object(), enabled=True)
        return Response(ScheduledOrderSerializer(schedule).data)

    @extend_schema(request=None, responses=ScheduledOrderSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        schedule = schedules.schedule_enable(schedule=self.get_object(), enabled=False)
        return Response(ScheduledOrderSerializer(schedule).data)

    @extend_schema(request=None, responses=ScheduledOrderRunSerializer(many=True))
    @action(detail=True, methods=["get"])
    def runs(self, request, pk=None):
        """Every run of the schedule, newest first: fired, skipped because missed, or failed."""
        schedule = self.get_object()
        page = self.paginate_queryset(
            schedule.runs.prefetch_related("orders").order_by("-scheduled_for", "-pk")
        )
        return self.get_paginated_response(ScheduledOrderRunSerializer(page, many=True).data)
