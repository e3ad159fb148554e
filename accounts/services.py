"""Every write to teams, memberships and API keys goes through these functions."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.text import slugify

from .models import Membership, Role, Team, TeamAPIKey, User


def team_create(*, name: str, owner: User, slug: str = "") -> Team:
    """Create a team with ``owner`` as its first owner."""
    with transaction.atomic():
        team = Team.objects.create(name=name, slug=slug or slugify(name))
        Membership.objects.create(user=owner, team=team, role=Role.OWNER)
    return team


def _ensure_can_manage(acting: Membership, *, roles: tuple[str, ...]) -> None:
    """Admins manage members below owner; only owners touch owners."""
    acting_role = acting.role_enum
    if not acting_role.at_least(Role.ADMIN):
        raise PermissionDenied("Only admins and owners manage members.")
    if Role.OWNER in roles and acting_role != Role.OWNER:
        raise PermissionDenied("Only an owner can add, change or remove an owner.")


def membership_add(*, acting: Membership, email: str, role: str) -> Membership:
    """Add an existing user (by email) to the acting member's team."""
    _ensure_can_manage(acting, roles=(role,))
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        raise ValidationError({"email": ["No user with this email."]})
    if Membership.objects.filter(team=acting.team, user=user).exists():
        raise ValidationError({"email": ["This user is already a member of the team."]})
    return Membership.objects.create(team=acting.team, user=user, role=role)


def membership_change_role(*, acting: Membership, membership: Membership, role: str) -> Membership:
    _ensure_can_manage(acting, roles=(membership.role, role))
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        if membership.role == Role.OWNER and role != Role.OWNER:
            _ensure_another_owner(membership)
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def membership_remove(*, acting: Membership, membership: Membership) -> None:
    _ensure_can_manage(acting, roles=(membership.role,))
    with transaction.atomic():
        if membership.role == Role.OWNER:
            _ensure_another_owner(membership)
        membership.delete()  # its API keys go with it


def _ensure_another_owner(membership: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(team=membership.team, role=Role.OWNER)
    if not owners.exclude(pk=membership.pk).exists():
        raise ValidationError("A team needs at least one owner.")


def api_key_create(
    *,
    membership: Membership,
    name: str,
    read_only: bool = False,
    expiry_date: datetime | None = None,
) -> tuple[TeamAPIKey, str]:
    """Create a key for ``membership``; the plain key is returned here once and never stored."""
    return TeamAPIKey.objects.create_key(
        membership=membership, name=name, read_only=read_only, expiry_date=expiry_date
    )


def api_key_revoke(*, acting: Membership, api_key: TeamAPIKey) -> TeamAPIKey:
    """Revoke a key: its owner may, and so may the team's admins. Revoking cannot be undone."""
    if api_key.membership_id != acting.pk:
        _ensure_can_manage(acting, roles=(api_key.membership.role,))
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    return api_key
