"""``Authorization: Api-Key <key>`` authentication for the REST API."""

from __future__ import annotations

import time

from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from algoways.db import PrecompiledQuery

from .models import TeamAPIKey

KEYWORD = "Api-Key"
#: Revoked, expired, malformed and unknown keys all get exactly this, so a caller learns nothing.
INVALID_KEY_MESSAGE = "Invalid API key."
#: last_used_at is written at most once per key per this many seconds, not on every request.
LAST_USE_RESOLUTION_SECONDS = 60


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates a request by a team API key; ``request.auth`` is the TeamAPIKey."""

    def authenticate(self, request):
        header = get_authorization_header(request)
        scheme, _, key = header.partition(b" ")
        if scheme.decode("latin-1").lower() != KEYWORD.lower():
            return None
        api_key = find_usable_key(key.decode("latin-1").strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY_MESSAGE)
        record_key_use(api_key)
        return api_key.membership.user, api_key

    def authenticate_header(self, request) -> str:
        return KEYWORD


#: Read on every API request: the key that is not revoked, with its member, team and user.
UNREVOKED_KEY = PrecompiledQuery(
    lambda prefix: (
        TeamAPIKey.objects.select_related("membership__team", "membership__user")
        .filter(revoked=False, prefix=prefix)
        .order_by()
    ),
    prefix=str,
)


def find_usable_key(key: str) -> TeamAPIKey | None:
    """The key's row if the key is well formed, known, not revoked, not expired, user active."""
    if "." not in key or len(key) > 200 or not key.isprintable():
        return None
    api_key = UNREVOKED_KEY.first(prefix=key.partition(".")[0])  # prefix is unique
    if api_key is None:
        return None
    if not api_key.is_valid(key) or api_key.has_expired or not api_key.membership.user.is_active:
        return None
    return api_key


#: When this process last asked the shared cache about each key's use: a hint that spares the
#: cache a round trip on every request, never needed by another process.
_asked_at: dict[str, float] = {}


def record_key_use(api_key: TeamAPIKey) -> None:
    now = time.monotonic()
    asked = _asked_at.get(api_key.prefix)
    if asked is not None and now - asked < LAST_USE_RESOLUTION_SECONDS:
        return
    _asked_at[api_key.prefix] = now
    # cache.add is atomic in Redis and locmem: only the first request in each window writes.
    if cache.add(f"api-key-used:{api_key.prefix}", 1, LAST_USE_RESOLUTION_SECONDS):
        TeamAPIKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes ``Authorization: Api-Key <key>`` in the OpenAPI schema."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"`{KEYWORD} <key>`",
        }
