"""Users, teams (the tenant), memberships with roles, and API keys."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

from algoways.tenancy import TeamScopedQuerySet


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    TRADER = "trader", "Trader"
    ADMIN = "admin", "Admin"
    OWNER = "owner", "Owner"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self]

    def at_least(self, minimum: Role) -> bool:
        return ROLE_RANK[self] >= ROLE_RANK[Role(minimum)]


#: viewers read; traders also trade; admins also manage accounts, schedules and members below
#: owner; owners everything.
ROLE_RANK = {Role.VIEWER: 0, Role.TRADER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class User(AbstractUser):
    """A person who signs in; belongs to teams through memberships."""

    email = models.EmailField(unique=True)

    def membership_in(self, team: Team) -> Membership | None:
        return self.memberships.filter(team=team).first()


class Team(models.Model):
    """The tenant: a trading desk with members, broker accounts and orders."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    notification_email = models.EmailField(blank=True)
    notification_webhook_url = models.URLField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    TEAM_FIELD = "pk"
    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in one team."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["team", "user__email"]
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.user.email} ({self.role}) in {self.team}"

    @property
    def role_enum(self) -> Role:
        return Role(self.role)


class TeamAPIKeyManager(BaseAPIKeyManager.from_queryset(TeamScopedQuerySet)):
    pass


class TeamAPIKey(AbstractAPIKey):
    """An API key of one member in one team; acts with the member's role, or read-only."""

    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="api_keys")
    read_only = models.BooleanField(default=False)
    last_used_at = models.DateTimeField(null=True, blank=True)

    TEAM_FIELD = "membership__team"
    objects = TeamAPIKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    @property
    def team(self) -> Team:
        return self.membership.team

    @property
    def role(self) -> Role:
        """The member's role, narrowed to viewer for a read-only key."""
        return Role.VIEWER if self.read_only else self.membership.role_enum
