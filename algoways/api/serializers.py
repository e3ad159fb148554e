"""Serializer building blocks shared by every app's API."""

from __future__ import annotations

from rest_framework import serializers


class StrictSerializerMixin:
    """Rejects fields the serializer does not know, instead of silently dropping them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            known = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - known)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class TeamScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key that accepts only rows of the request's team (others read as unknown ids)."""

    def get_queryset(self):
        queryset = super().get_queryset()
        team_context = self.context["request"].team_context
        return queryset.for_team(team_context.team)
