from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from rest_framework_api_key.admin import APIKeyModelAdmin

from algoways.admin import TeamScopedAdmin, admin_team_ids

from .models import Membership, Team, TeamAPIKey, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Only superusers manage user accounts; team admins add existing users as members."""


@admin.register(Team)
class TeamAdmin(TeamScopedAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(Membership)
class MembershipAdmin(TeamScopedAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "user__username"]
    autocomplete_fields = []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = User.objects.filter(is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not request.user.is_superuser:
            return ["team", "user"]
        return []


@admin.register(TeamAPIKey)
class TeamAPIKeyAdmin(TeamScopedAdmin, APIKeyModelAdmin):
    """Keys are shown once on creation (a message), then only their prefix."""

    list_display = [*APIKeyModelAdmin.list_display, "membership", "read_only", "last_used_at"]
    list_filter = ["revoked", "read_only"]
    search_fields = ["name", "prefix", "membership__user__email"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "membership" and not request.user.is_superuser:
            kwargs["queryset"] = Membership.objects.filter(team_id__in=admin_team_ids(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
