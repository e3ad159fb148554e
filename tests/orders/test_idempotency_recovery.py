"""A retry after the first request died in flight (a crashed web process) is still safe."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Role
from orders.idempotency import stale_after
from orders.models import IdempotencyRecord, IdempotencyStatus, Order

from .conftest import order_body, paper_orders


@pytest.fixture
def trader(team, member, api_client_for):
    return api_client_for(member(team, Role.TRADER))


def post(client, account, key="crash-1"):
    return client.post("/api/orders/", order_body(account), format="json", HTTP_IDEMPOTENCY_KEY=key)


def leave_in_flight(key: str, *, age: timedelta) -> None:
    """What a web process that died mid-request leaves behind: an unfinished claim."""
    IdempotencyRecord.objects.filter(key=key).update(
        status=IdempotencyStatus.IN_FLIGHT,
        response_status=None,
        response_body=None,
        created_at=timezone.now() - age,
    )


def test_retry_after_a_crash_past_the_order_returns_that_order(trader, paper_account):
    first = post(trader, paper_account)
    leave_in_flight("crash-1", age=stale_after() + timedelta(seconds=1))

    retry = post(trader, paper_account)
    assert retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1
    assert len(paper_orders(paper_account)) <= 1
    assert IdempotencyRecord.objects.get(key="crash-1").status == IdempotencyStatus.COMPLETED


def test_retry_after_a_crash_before_the_order_places_it_once(trader, paper_account):
    post(trader, paper_account)
    Order.objects.all().delete()  # the first request died before its order was committed
    leave_in_flight("crash-1", age=stale_after() + timedelta(seconds=1))

    retry = post(trader, paper_account)
    assert retry.status_code == 202
    assert Order.objects.count() == 1
    assert post(trader, paper_account).json()["id"] == retry.json()["id"]  # and now it replays


def test_a_claim_younger_than_the_stale_limit_is_still_in_flight(trader, paper_account):
    post(trader, paper_account)
    leave_in_flight("crash-1", age=stale_after() - timedelta(seconds=5))
    assert post(trader, paper_account).status_code == 409
    assert Order.objects.count() == 1
