"""Request throttles per API key and per signed-in user, counted in the shared cache."""

from rest_framework.throttling import SimpleRateThrottle

from accounts.models import TeamAPIKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, TeamAPIKey):
            return self.cache_format % {"scope": self.scope, "ident": request.auth.prefix}
        return None


class UserRateThrottle(SimpleRateThrottle):
    """Session users (the console, the browsable API); API-key calls count under their key."""

    scope = "user"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, TeamAPIKey) or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
