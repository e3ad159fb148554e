"""Console pages for signing in, choosing a team and the daily dashboard."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from algoways.api.context import SESSION_TEAM_KEY

from .models import Membership


def current_membership(request) -> Membership | None:
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    selected = request.session.get(SESSION_TEAM_KEY)
    return memberships.filter(team_id=selected).first() or memberships.first()


@login_required
def dashboard(request):
    membership = current_membership(request)
    accounts = membership.team.broker_accounts.all() if membership else []
    return render(
        request,
        "console/dashboard.html",
        {
            "membership": membership,
            "memberships": Membership.objects.filter(user=request.user).select_related("team"),
            "accounts": accounts,
        },
    )


@login_required
@require_POST
def team_switch(request):
    membership = get_object_or_404(
        Membership, user=request.user, team__slug=request.POST.get("team", "")
    )
    request.session[SESSION_TEAM_KEY] = membership.team_id
    return redirect("dashboard")
