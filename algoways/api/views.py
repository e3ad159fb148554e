"""The one base view every team-scoped API view derives from.

It resolves the request's team (the API key's team, or the team the signed-in user selected),
checks the caller's role against the least role each action needs, scopes every queryset with
``for_team`` and gives serializers the team. No view can forget tenancy: it is done here.
"""

from __future__ import annotations

from rest_framework import viewsets
from rest_framework.permissions import SAFE_METHODS

from accounts.models import Role

from .context import resolve_request_team


class TeamContextMixin:
    """Resolves ``request.team_context`` before permissions are checked."""

    #: least role for safe (read) methods and for writes; ``action_roles`` overrides per action.
    read_role: Role | None = Role.VIEWER
    write_role: Role | None = Role.ADMIN
    action_roles: dict[str, Role] = {}

    def check_permissions(self, request):
        request.team_context = resolve_request_team(request)
        super().check_permissions(request)

    def minimum_role(self, request) -> Role | None:
        action = getattr(self, "action", None)
        if action in self.action_roles:
            return self.action_roles[action]
        return self.read_role if request.method in SAFE_METHODS else self.write_role

    @property
    def team(self):
        return self.request.team_context.team

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["team"] = getattr(getattr(self.request, "team_context", None), "team", None)
        return context


class TeamScopedViewSet(TeamContextMixin, viewsets.GenericViewSet):
    """Base of every team-owned resource: every queryset is scoped to the request's team."""

    #: True on every route that lists team rows; the isolation tests walk these.
    team_scoped = True

    def get_queryset(self):
        return super().get_queryset().for_team(self.team)

    def perform_create(self, serializer):
        serializer.save(team=self.team)
