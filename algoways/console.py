"""The console's one rule for pages: resolve the signed-in user's team and check the role.

Pages call ``@console_view(Role.X)``; the view gets ``request.membership`` (the selected team's
membership). Another team's objects are looked up through ``for_team`` and give 404.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from accounts.models import Membership, Role

from .api.context import session_membership


def current_membership(request) -> Membership | None:
    """The membership of the team selected in this browser session (or the user's first team)."""
    return (
        session_membership(request.user, request.session)
        or Membership.objects.filter(user=request.user).select_related("team").first()
    )


def console_view(minimum_role: Role = Role.VIEWER):
    def decorate(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            membership = current_membership(request)
            if membership is None:
                return render(request, "console/no_team.html", status=403)
            if not membership.role_enum.at_least(minimum_role):
                raise PermissionDenied(f"This page needs the {minimum_role} role.")
            request.membership = membership
            request.team = membership.team
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def console_context(request, **extra) -> dict:
    """What every console page shows: the team switcher and the member's role."""
    return {
        "membership": request.membership,
        "memberships": Membership.objects.filter(user=request.user).select_related("team"),
        "role": request.membership.role_enum,
        "can_trade": request.membership.role_enum.at_least(Role.TRADER),
        "can_manage": request.membership.role_enum.at_least(Role.ADMIN),
        **extra,
    }
