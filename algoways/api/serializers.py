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


class TeamScopedRelatedListField(serializers.ListField):
    """A list of primary keys of the request team's rows, read in one query (not one per key).

    Unknown ids and other teams' ids get the same message as TeamScopedRelatedField's.
    """

    def __init__(self, *, queryset, **kwargs):
        self.queryset = queryset
        super().__init__(child=serializers.IntegerField(), **kwargs)

    def to_internal_value(self, data):
        ids = super().to_internal_value(data)
        team = self.context["request"].team_context.team
        rows = self.queryset.for_team(team).in_bulk(ids)
        missing = [pk for pk in ids if pk not in rows]
        if missing:
            message = serializers.PrimaryKeyRelatedField.default_error_messages["does_not_exist"]
            raise serializers.ValidationError([message.format(pk_value=pk) for pk in missing])
        return [rows[pk] for pk in ids]
