"""A Redis outage never stops order intake: the shared cache degrades to a miss."""

import logging

from accounts.models import Role, TeamAPIKey
from orders.models import Order, OrderStatus

from .conftest import order_body


def test_orders_are_accepted_while_the_cache_redis_is_down(
    redis_down, team, member, api_client_for, paper_account, caplog
):
    client = api_client_for(member(team, Role.TRADER))
    with caplog.at_level(logging.WARNING, logger="algoways.cache"):
        response = client.post("/api/orders/", order_body(paper_account), format="json")
    assert response.status_code == 202, response.content
    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == OrderStatus.PENDING
    assert "Cache unavailable" in caplog.text  # it really went through the outage path


def test_api_keys_still_authenticate_and_record_no_use_while_the_cache_is_down(
    redis_down, team, member, api_client_for
):
    client = api_client_for(member(team, Role.VIEWER))
    assert client.get("/api/me/").status_code == 200
    # The once-a-minute marker could not be set, so no last-use write was made either.
    assert TeamAPIKey.objects.get().last_used_at is None
