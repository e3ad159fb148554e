"""API throttles: per key and per session user, atomic in Redis, never blocking on an outage.

Redis is shared by parallel test runs, so nothing here flushes it: every test spends the budget
of identities of its own (a fresh API key, a user with a random id).
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from limits.storage import RedisStorage
from rest_framework.test import APIClient

from accounts.models import Role, TeamAPIKey
from algoways.api import throttling
from algoways.api.throttling import ApiKeyRateThrottle, UserRateThrottle, parse_rate

requires_redis = pytest.mark.skipif(
    not django_settings.REDIS_URL, reason="needs Redis: set REDIS_URL (CI's PostgreSQL+Redis run)"
)

# Hourly windows: the in-memory storage aligns windows to the clock, and a minute's boundary
# falling between a test's requests would let one more through.
LOW_RATES = {"api_key": "3/hour", "user": "3/hour"}


@pytest.fixture(autouse=True)
def fresh_limiter():
    throttling._limiter.cache_clear()
    yield
    throttling._limiter.cache_clear()


@pytest.fixture
def throttle_rates(settings):
    """``throttle_rates({"api_key": ..., "user": ...})`` replaces the configured rates."""

    def set_rates(rates: dict) -> None:
        # Reassigning REST_FRAMEWORK makes DRF reload api_settings, which the throttles read.
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}

    return set_rates


@pytest.fixture
def session_client(team, user_factory, membership_factory):
    """A signed-in owner of ``team`` whose id no other run's Redis counters have used."""
    user = user_factory(id=10**12 + secrets.randbelow(10**12))
    membership_factory(user=user, team=team, role=Role.OWNER)
    client = APIClient()
    client.force_login(user)
    client.membership = user.memberships.get()
    return client


def get_members(client):
    return client.get("/api/members/")


# Rates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "amount", "seconds"),
    [
        ("10/s", 10, 1),
        ("10/sec", 10, 1),
        ("10/second", 10, 1),
        ("6000/m", 6000, 60),
        ("6000/min", 6000, 60),
        ("5/h", 5, 3600),
        ("5/hour", 5, 3600),
        ("7/d", 7, 86400),
        ("7/day", 7, 86400),
    ],
)
def test_drf_rates_become_limits_items(rate, amount, seconds):
    item = parse_rate(rate)
    assert (item.amount, item.get_expiry()) == (amount, seconds)


@pytest.mark.parametrize("rate", ["6000", "6000/", "many/min", "10/week"])
def test_a_malformed_rate_is_a_configuration_error(rate):
    with pytest.raises(ImproperlyConfigured):
        parse_rate(rate)


def test_counters_are_named_apart_from_the_broker_limits():
    key = TeamAPIKey(prefix="Ab12Cd34")
    by_key = SimpleNamespace(auth=key, user=AnonymousUser())
    assert ApiKeyRateThrottle().get_identity(by_key) == "api:api_key:Ab12Cd34"
    assert UserRateThrottle().get_identity(by_key) is None


# Refused ----------------------------------------------------------------------------------------


def test_the_request_beyond_the_rate_gets_429_with_retry_after(owner_client, throttle_rates):
    throttle_rates(LOW_RATES)
    assert [get_members(owner_client).status_code for _ in range(3)] == [200, 200, 200]

    refused = get_members(owner_client)

    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 3600
    error = refused.json()["error"]
    assert error["code"] == "throttled"
    assert error["message"].startswith("Request was throttled.")
    assert set(refused.json()) == {"error"}


def test_each_api_key_has_its_own_budget(team, member, api_client_for, throttle_rates):
    throttle_rates(LOW_RATES)
    membership = member(team, Role.OWNER)
    first, second = api_client_for(membership), api_client_for(membership)
    for _ in range(3):
        get_members(first)
    assert get_members(first).status_code == 429

    assert [get_members(second).status_code for _ in range(3)] == [200, 200, 200]


def test_session_users_count_under_user_and_api_keys_do_not(
    session_client, api_client_for, throttle_rates
):
    throttle_rates({"api_key": "100/hour", "user": "2/hour"})
    # The same person's API key spends the key's budget, not the user's.
    by_key = api_client_for(session_client.membership)
    assert [get_members(by_key).status_code for _ in range(3)] == [200, 200, 200]

    assert [get_members(session_client).status_code for _ in range(3)] == [200, 200, 429]
    # ...and the user's exhausted budget does not hold the key back.
    assert get_members(by_key).status_code == 200


# Redis down -------------------------------------------------------------------------------------


def test_requests_go_through_when_redis_is_unreachable(
    owner_client, throttle_rates, settings, caplog
):
    throttle_rates({"api_key": "1/hour", "user": "1/hour"})
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    with caplog.at_level(logging.WARNING, logger="algoways.api.throttling"):
        statuses = [get_members(owner_client).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert isinstance(throttling._limiter().storage, RedisStorage)
    assert "Throttle storage unavailable" in caplog.text
    assert owner_client.api_key.partition(".")[2] not in caplog.text  # never the key's secret


# Concurrency ------------------------------------------------------------------------------------


@requires_redis
def test_concurrent_requests_are_all_counted_in_redis(throttle_rates):
    throttle_rates({"api_key": "10/min", "user": "10/min"})
    assert isinstance(throttling._limiter().storage, RedisStorage)
    request = SimpleNamespace(auth=TeamAPIKey(prefix=uuid.uuid4().hex), user=AnonymousUser())
    start = threading.Barrier(4)
    answers, errors = [], []

    def send_five():
        try:
            start.wait()
            for _ in range(5):
                answers.append(ApiKeyRateThrottle().allow_request(request, None))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send_five) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(answers) == 20
    assert answers.count(True) == 10  # no count lost, none spent twice
