"""Which team a request acts in, and with which role: resolved once per request."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import exceptions

from accounts.models import Membership, Role, Team, TeamAPIKey

TEAM_HEADER = "HTTP_X_TEAM"
SESSION_TEAM_KEY = "team_id"


class TeamRequired(exceptions.APIException):
    status_code = 400
    default_code = "team_required"
    default_detail = "You belong to several teams: choose one with the X-Team header (its slug)."


@dataclass(frozen=True)
class RequestTeam:
    team: Team
    role: Role
    membership: Membership
    api_key: TeamAPIKey | None = None


def session_membership(user, session) -> Membership | None:
    """The membership of the team this browser session selected (the console's team switcher)."""
    selected = session.get(SESSION_TEAM_KEY) if session is not None else None
    if not selected:
        return None
    return Membership.objects.filter(user=user, team_id=selected).select_related("team").first()


def resolve_request_team(request) -> RequestTeam | None:
    """The API key's team, or the team the signed-in user selected (header, then session)."""
    if isinstance(request.auth, TeamAPIKey):
        key = request.auth
        return RequestTeam(team=key.team, role=key.role, membership=key.membership, api_key=key)
    user = request.user
    if not user or not user.is_authenticated:
        return None
    memberships = Membership.objects.filter(user=user).select_related("team")
    wanted = request.META.get(TEAM_HEADER)
    if wanted:
        membership = memberships.filter(team__slug=wanted).first()
        if membership is None:
            raise exceptions.NotFound("No such team.")
    else:
        membership = session_membership(user, getattr(request, "session", None))
        if membership is None:
            candidates = list(memberships[:2])
            if len(candidates) != 1:
                if not candidates:
                    raise exceptions.PermissionDenied("You are not a member of any team.")
                raise TeamRequired()
            membership = candidates[0]
    return RequestTeam(team=membership.team, role=membership.role_enum, membership=membership)
