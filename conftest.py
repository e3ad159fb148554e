"""Factories as fixtures, and API clients authenticated as a member of a team."""

from __future__ import annotations

import factory
import pytest
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import Membership, Role, Team, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("pass-word-123")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)
    role = Role.OWNER


@pytest.fixture
def user_factory(db):
    return UserFactory


@pytest.fixture
def team_factory(db):
    return TeamFactory


@pytest.fixture
def membership_factory(db):
    return MembershipFactory


@pytest.fixture
def team(db):
    return TeamFactory()


@pytest.fixture
def other_team(db):
    return TeamFactory()


@pytest.fixture
def member(db):
    """``member(team, role)`` -> a Membership."""

    def make(team: Team, role: str = Role.OWNER) -> Membership:
        return MembershipFactory(team=team, role=role)

    return make


@pytest.fixture
def api_client_for(db):
    """``api_client_for(membership, read_only=False)`` -> an APIClient using a fresh API key."""

    def make(membership: Membership, *, read_only: bool = False) -> APIClient:
        _, key = account_services.api_key_create(
            membership=membership, name="test", read_only=read_only
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        client.api_key = key
        return client

    return make


@pytest.fixture
def owner_client(team, member, api_client_for):
    return api_client_for(member(team, Role.OWNER))


@pytest.fixture(autouse=True)
def _test_settings(settings):
    """A fast password hasher, and a cache namespace of each test's own.

    Cached rows never outlive a test's data. With Redis (CI's second run) several test
    processes share one server; a unique key prefix keeps them apart without flushing anyone
    else's keys.
    """
    import uuid

    from django.contrib.contenttypes.models import ContentType

    # A transactional test's flush recreates content types with new ids; forget cached ones.
    ContentType.objects.clear_cache()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    cache_settings = {**settings.CACHES["default"]}
    if "LocMem" in cache_settings["BACKEND"]:
        cache_settings["LOCATION"] = f"test-{uuid.uuid4().hex}"
    else:
        cache_settings["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = {"default": cache_settings}


@pytest.fixture
def redis_down(settings):
    """The shared cache on a Redis that is not there (nothing listens on port 1)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "algoways.cache.ResilientRedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
