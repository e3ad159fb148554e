"""Console pages: the dashboard and the team switcher."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from algoways.api.context import SESSION_TEAM_KEY
from algoways.console import console_context, console_view

from .models import Membership


@console_view()
def dashboard(request):
    accounts = request.team.broker_accounts.select_related("session")
    return render(request, "console/dashboard.html", console_context(request, accounts=accounts))


@login_required
@require_POST
def team_switch(request):
    membership = get_object_or_404(
        Membership, user=request.user, team__slug=request.POST.get("team", "")
    )
    request.session[SESSION_TEAM_KEY] = membership.team_id
    return redirect("dashboard")
