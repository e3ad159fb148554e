from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from rest_framework_api_key.admin import APIKeyModelAdmin

from algoways.admin import TeamScopedAdmin, admin_team_ids

from . import services
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

    # Team admins go through the same services as the API: only owners touch owners, and a team
    # keeps at least one owner. A refused change answers 403 and the transaction rolls back.

    def save_model(self, request, obj, form, change):
        if request.user.is_superuser:
            return super().save_model(request, obj, form, change)
        acting = Membership.objects.filter(user=request.user, team=obj.team).first()
        if acting is None:
            raise PermissionDenied("You are not a member of this team.")
        with _refused_as_permission_denied():
            if change:
                stored = Membership.objects.get(pk=obj.pk)
                services.membership_change_role(acting=acting, membership=stored, role=obj.role)
            else:
                obj.pk = services.membership_add(
                    acting=acting, email=obj.user.email, role=obj.role
                ).pk

    def delete_model(self, request, obj):
        if request.user.is_superuser:
            return super().delete_model(request, obj)
        acting = Membership.objects.filter(user=request.user, team=obj.team).first()
        if acting is None:
            raise PermissionDenied("You are not a member of this team.")
        with _refused_as_permission_denied():
            services.membership_remove(acting=acting, membership=obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset:
            self.delete_model(request, membership)


@admin.register(TeamAPIKey)
class TeamAPIKeyAdmin(TeamScopedAdmin, APIKeyModelAdmin):
    """Keys are shown once on creation (a message), then only their prefix."""

    list_display = [*APIKeyModelAdmin.list_display, "membership", "read_only", "last_used_at"]
    list_filter = ["revoked", "read_only"]
    search_fields = ["name", "prefix", "membership__user__email"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "membership" and not request.user.is_superuser:
            # A key acts with its member's role: a team admin mints keys only for themselves,
            # never one that acts as an owner or as another member.
            kwargs["queryset"] = Membership.objects.filter(
                user=request.user, team_id__in=admin_team_ids(request.user)
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and not request.user.is_superuser:
            fields += ("membership",)  # a key never moves to another member or team
        return fields


class _refused_as_permission_denied:
    """A service's refusal (a ValidationError such as "a team needs an owner") as a 403."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, ValidationError):
            raise PermissionDenied(" ".join(exc.messages)) from exc
        return False
