"""Tenancy lives here: the one queryset method that scopes rows to a team."""

from __future__ import annotations

from django.db import models


class TeamScopedQuerySet(models.QuerySet):
    """Every tenant-owned model's queryset; ``for_team`` is the only way views read rows.

    A model names the path from itself to its team in ``TEAM_FIELD`` (``"team"`` by default,
    ``"order__team"`` for a row that belongs to a team through its order).
    """

    def for_team(self, team) -> TeamScopedQuerySet:
        return self.filter(**{getattr(self.model, "TEAM_FIELD", "team"): team})


class TeamScopedManager(models.Manager.from_queryset(TeamScopedQuerySet)):
    pass
