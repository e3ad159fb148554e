"""Scheduled orders over the API: thin, the rules live in ``orders.schedules``."""

from __future__ import annotations

from rest_framework import serializers

from algoways.api.serializers import StrictSerializerMixin, TeamScopedRelatedField
from brokers.models import BrokerAccount

from ..schedule_models import (
    ScheduledOrder,
    ScheduledOrderRun,
    ScheduleKind,
    cron_validate,
    timezone_validate,
)
from .serializers import OrderSpecSerializer


def _django_validator(validate):
    """A model field validator raising DRF's ValidationError, so the message stays the same."""

    def run(value):
        from django.core.exceptions import ValidationError

        try:
            validate(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.messages)

    return run


class ScheduledOrderInputSerializer(StrictSerializerMixin, serializers.Serializer):
    """What a client sends to create (all required fields) or change (any of them) a schedule."""

    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=ScheduleKind.choices, default=ScheduleKind.ORDER)
    accounts = TeamScopedRelatedField(
        queryset=BrokerAccount.objects.all(), many=True, required=False
    )
    whole_team = serializers.BooleanField(required=False, default=False)
    specs = OrderSpecSerializer(
        many=True,
        required=False,
        help_text="Order specs as POST /api/orders/ takes them, without account and "
        "client_order_id (each run derives its own). Empty for a square-off.",
    )
    run_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Once, at this time."
    )
    cron = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        validators=[_django_validator(cron_validate)],
        help_text="Recurring: minute hour day-of-month month day-of-week, e.g. '15 9 * * 1-5'.",
    )
    timezone = serializers.CharField(
        max_length=64,
        required=False,
        default="UTC",
        validators=[_django_validator(timezone_validate)],
        help_text="The cron's IANA time zone, e.g. Asia/Kolkata.",
    )
    enabled = serializers.BooleanField(required=False, default=True)
    grace_seconds = serializers.IntegerField(
        required=False, default=60, min_value=0, max_value=86400
    )


class ScheduledOrderRunSerializer(serializers.ModelSerializer):
    orders = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = ScheduledOrderRun
        fields = ["id", "scheduled_for", "fired_at", "outcome", "details", "group", "orders"]
        read_only_fields = fields


class ScheduledOrderSerializer(serializers.ModelSerializer):
    accounts = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = ScheduledOrder
        fields = [
            "id",
            "name",
            "kind",
            "accounts",
            "whole_team",
            "specs",
            "run_at",
            "cron",
            "timezone",
            "enabled",
            "grace_seconds",
            "next_run_at",
            "last_run_at",
            "last_result",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ScheduledOrderDetailSerializer(ScheduledOrderSerializer):
    """A schedule with its latest runs."""

    recent_runs = serializers.SerializerMethodField()

    class Meta(ScheduledOrderSerializer.Meta):
        fields = [*ScheduledOrderSerializer.Meta.fields, "recent_runs"]
        read_only_fields = fields

    def get_recent_runs(self, schedule) -> list[dict]:
        runs = schedule.runs.prefetch_related("orders").order_by("-scheduled_for", "-pk")[:20]
        return ScheduledOrderRunSerializer(runs, many=True).data
