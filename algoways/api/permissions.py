"""Role-based access: each view says the least role each action needs."""

from rest_framework.permissions import BasePermission


class RolePermission(BasePermission):
    """Allows a request when the caller's role in the request's team is at least the view's."""

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        minimum_role = getattr(view, "minimum_role", None)
        if minimum_role is None:
            return True
        required = minimum_role(request)
        if required is None:
            return True
        context = getattr(request, "team_context", None)
        return context is not None and context.role.at_least(required)
