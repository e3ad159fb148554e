"""Console pages: the dashboard, the team switcher, API keys and members."""

from __future__ import annotations

from datetime import datetime, time

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from algoways.api.context import SESSION_TEAM_KEY
from algoways.console import console_context, console_view

from . import services
from .models import Membership, Role, TeamAPIKey


@console_view()
def dashboard(request):
    from orders.models import TeamTradingState

    accounts = request.team.broker_accounts.select_related("session")
    trading_state = TeamTradingState.objects.for_team(request.team).first()
    return render(
        request,
        "console/dashboard.html",
        console_context(request, accounts=accounts, trading_state=trading_state),
    )


@login_required
@require_POST
def team_switch(request):
    membership = get_object_or_404(
        Membership, user=request.user, team__slug=request.POST.get("team", "")
    )
    request.session[SESSION_TEAM_KEY] = membership.team_id
    return redirect("dashboard")


# API keys -------------------------------------------------------------------------------------


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=50)
    read_only = forms.BooleanField(
        required=False, help_text="The key can read but never trade or change anything."
    )
    expiry_date = forms.DateField(
        required=False,
        label="Expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Empty: never.",
    )

    def clean_expiry_date(self):
        value = self.cleaned_data["expiry_date"]
        if value is not None and value <= timezone.localdate():
            raise forms.ValidationError("Pick a date after today.")
        return value


def _visible_keys(request):
    """A member sees their own keys; admins see every key of the team (as in the API)."""
    keys = TeamAPIKey.objects.for_team(request.team).select_related("membership__user")
    if not request.membership.role_enum.at_least(Role.ADMIN):
        keys = keys.filter(membership=request.membership)
    return keys.order_by("-created")


@console_view()
def api_keys(request):
    """List keys and create one; a new key is shown once, on the page that created it."""
    form = ApiKeyForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        expiry = form.cleaned_data["expiry_date"]
        api_key, new_key = services.api_key_create(
            membership=request.membership,
            name=form.cleaned_data["name"],
            read_only=form.cleaned_data["read_only"],
            expiry_date=(
                timezone.make_aware(datetime.combine(expiry, time.min)) if expiry else None
            ),
        )
        form = ApiKeyForm()
    response = render(
        request,
        "console/api_keys.html",
        console_context(
            request, form=form, keys=_visible_keys(request), new_key=new_key, now=timezone.now()
        ),
    )
    if new_key:
        response["Cache-Control"] = "no-store"  # the key must not stay in any cache
    return response


@console_view()
@require_POST
def api_key_revoke(request, prefix: str):
    api_key = get_object_or_404(_visible_keys(request), prefix=prefix)
    try:
        services.api_key_revoke(acting=request.membership, api_key=api_key)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Key {api_key.prefix} ({api_key.name}) is revoked.")
    return redirect("api-keys")


# Members ----------------------------------------------------------------------------------------


class MemberAddForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


def _member(request, pk: int) -> Membership:
    return get_object_or_404(Membership.objects.for_team(request.team), pk=pk)


def _service_errors(request, exc: Exception) -> None:
    if isinstance(exc, ValidationError):
        for message in exc.messages:
            messages.error(request, message)
    else:
        messages.error(request, str(exc))


@console_view()
def members(request):
    """Everyone sees the members; admins add, change and remove (only owners touch owners)."""
    form = MemberAddForm(request.POST or None)
    if request.method == "POST":
        if not request.membership.role_enum.at_least(Role.ADMIN):
            raise PermissionDenied("Only admins and owners manage members.")
        if form.is_valid():
            try:
                added = services.membership_add(acting=request.membership, **form.cleaned_data)
            except (ValidationError, PermissionDenied) as exc:
                if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
                    for field, errors in exc.message_dict.items():
                        for message in errors:
                            form.add_error(field if field in form.fields else None, message)
                else:
                    form.add_error(None, " ".join(getattr(exc, "messages", [str(exc)])))
            else:
                messages.success(request, f"{added.user.email} joined as {added.role}.")
                return redirect("members")
    team_members = Membership.objects.for_team(request.team).select_related("user")
    return render(
        request,
        "console/members.html",
        console_context(request, form=form, team_members=team_members, roles=Role.choices),
    )


@console_view(Role.ADMIN)
@require_POST
def member_role(request, pk: int):
    membership = _member(request, pk)
    role = request.POST.get("role", "")
    if role not in Role.values:
        messages.error(request, "Pick a role.")
        return redirect("members")
    try:
        services.membership_change_role(acting=request.membership, membership=membership, role=role)
    except (ValidationError, PermissionDenied) as exc:
        _service_errors(request, exc)
    else:
        messages.success(request, f"{membership.user.email} is now {role}.")
    return redirect("members")


@console_view(Role.ADMIN)
@require_POST
def member_remove(request, pk: int):
    membership = _member(request, pk)
    try:
        services.membership_remove(acting=request.membership, membership=membership)
    except (ValidationError, PermissionDenied) as exc:
        _service_errors(request, exc)
    else:
        messages.success(request, f"{membership.user.email} was removed from the team.")
        if membership.pk == request.membership.pk:
            return redirect("dashboard")
    return redirect("members")
