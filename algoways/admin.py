"""The team admin console: one ModelAdmin base that scopes every row to the user's teams.

Superusers see everything. A staff user who is an owner or admin of some teams sees, edits and
chooses (in foreign keys) only those teams' rows, and cannot move a row to another team.
"""

from __future__ import annotations

from django.contrib import admin

from accounts.models import Membership, Role, Team


def admin_team_ids(user) -> list[int]:
    if not user.is_active or not user.is_staff:
        return []
    cache_attr = "_algoways_admin_team_ids"
    if not hasattr(user, cache_attr):
        setattr(
            user,
            cache_attr,
            list(
                Membership.objects.filter(user=user, role__in=[Role.ADMIN, Role.OWNER]).values_list(
                    "team_id", flat=True
                )
            ),
        )
    return getattr(user, cache_attr)


class TeamScopedAdmin(admin.ModelAdmin):
    """Base of every team-owned model's admin."""

    def _is_team_admin(self, request) -> bool:
        return bool(admin_team_ids(request.user))

    def _scope(self, request, queryset):
        if request.user.is_superuser:
            return queryset
        return queryset.filter(
            **{f"{getattr(queryset.model, 'TEAM_FIELD', 'team')}__in": admin_team_ids(request.user)}
        )

    def get_queryset(self, request):
        return self._scope(request, super().get_queryset(request))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and not request.user.is_superuser:
            related = db_field.related_model
            if related is Team:
                field.queryset = field.queryset.filter(pk__in=admin_team_ids(request.user))
            elif hasattr(related.objects, "for_team") or hasattr(related, "TEAM_FIELD"):
                field.queryset = self._scope(request, field.queryset)
        return field

    def has_module_permission(self, request):
        return request.user.is_superuser or self._is_team_admin(request)

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_delete_permission(self, request, obj=None):
        return self.has_module_permission(request)
