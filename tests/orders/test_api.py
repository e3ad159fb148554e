"""The orders REST API: placing, reading, cancelling, modifying, idempotency and tenancy."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Role
from orders.models import (
    IdempotencyRecord,
    IdempotencyStatus,
    Order,
    RiskLimits,
)

from .conftest import order_body, paper_orders


@pytest.fixture
def trader(team, member, api_client_for):
    return api_client_for(member(team, Role.TRADER))


@pytest.fixture
def viewer(team, member, api_client_for):
    return api_client_for(member(team, Role.VIEWER))


def test_post_answers_202_with_the_pending_order_at_once(trader, paper_account):
    response = trader.post("/api/orders/", order_body(paper_account), format="json")
    assert response.status_code == 202, response.data
    assert response.data["status"] == "pending"
    assert response.data["quantity"] == "10.00000000"
    assert response.data["account"] == paper_account.pk
    order = Order.objects.get(pk=response.data["id"])
    assert order.quantity == Decimal(10)
    assert order.placed_by_api_key is not None
    assert order.placed_by_membership is not None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "abc"}, "quantity"),
        ({"side": "HOLD"}, "side"),
        ({"order_type": "LIMIT"}, "price"),
        ({"order_type": "STOP"}, "trigger_price"),
        ({"price": "10"}, "price"),  # a MARKET order takes no price
        ({"client_order_id": "has space"}, "client_order_id"),
        ({"client_order_id": "x" * 30}, "client_order_id"),  # paper allows 24
        ({"colour": "red"}, "colour"),  # unknown fields are refused, not dropped
        ({"symbol": ""}, "symbol"),
    ],
)
def test_bad_input_gets_400_with_field_messages(trader, paper_account, overrides, field):
    response = trader.post("/api/orders/", order_body(paper_account, **overrides), format="json")
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"
    assert field in response.data["error"]["fields"]
    assert Order.objects.count() == 0


def test_missing_fields_are_named(trader):
    response = trader.post("/api/orders/", {}, format="json")
    assert response.status_code == 400
    assert {"account", "symbol", "exchange", "side", "quantity", "order_type"} <= set(
        response.data["error"]["fields"]
    )


def test_another_teams_account_is_an_invalid_pk_not_a_500(
    trader, other_team, paper_account_factory
):
    foreign = paper_account_factory("Theirs", for_team=other_team)
    response = trader.post("/api/orders/", order_body(foreign), format="json")
    assert response.status_code == 400
    assert "Invalid pk" in str(response.data["error"]["fields"]["account"])
    assert paper_orders(foreign) == []


@pytest.mark.parametrize(
    ("account", "message"),
    [
        ("abc", "Incorrect type. Expected pk value, received str."),
        (True, "Incorrect type. Expected pk value, received bool."),
        (1.5, "Incorrect type. Expected pk value, received float."),
        ({"id": 1}, "Incorrect type. Expected pk value, received dict."),
        (2**70, f'Invalid pk "{2**70}" - object does not exist.'),
        (-1, 'Invalid pk "-1" - object does not exist.'),
        ("999999", 'Invalid pk "999999" - object does not exist.'),
    ],
)
def test_an_account_that_names_no_row_of_the_team_gets_the_field_message(
    trader, paper_account, account, message
):
    body = {**order_body(paper_account), "account": account}
    response = trader.post("/api/orders/", body, format="json")
    assert response.status_code == 400
    assert response.data["error"]["fields"]["account"] == [message]
    assert Order.objects.count() == 0


def test_an_account_id_given_as_a_string_is_read_as_the_number(trader, paper_account):
    body = {**order_body(paper_account), "account": str(paper_account.pk)}
    response = trader.post("/api/orders/", body, format="json")
    assert response.status_code == 202
    assert response.data["account"] == paper_account.pk


def test_another_teams_order_is_404(
    trader, other_team, member, api_client_for, paper_account_factory
):
    foreign_account = paper_account_factory("Theirs", for_team=other_team)
    them = api_client_for(member(other_team, Role.TRADER))
    order_id = them.post("/api/orders/", order_body(foreign_account), format="json").data["id"]
    assert trader.get(f"/api/orders/{order_id}/").status_code == 404
    assert trader.post(f"/api/orders/{order_id}/cancel/").status_code == 404
    assert (
        trader.patch(f"/api/orders/{order_id}/", {"quantity": "1"}, format="json").status_code
        == 404
    )
    assert trader.get("/api/orders/").data["count"] == 0


def test_viewer_reads_but_cannot_place(viewer, trader, paper_account):
    trader.post("/api/orders/", order_body(paper_account), format="json")
    assert viewer.get("/api/orders/").data["count"] == 1
    response = viewer.post("/api/orders/", order_body(paper_account), format="json")
    assert response.status_code == 403
    assert Order.objects.count() == 1


def test_risk_limit_breach_is_422_with_the_reason_and_nothing_reaches_the_broker(
    trader, team, paper_account, django_capture_on_commit_callbacks
):
    RiskLimits.objects.create(team=team, broker_account=paper_account, max_quantity=Decimal(5))
    with django_capture_on_commit_callbacks(execute=True):
        response = trader.post("/api/orders/", order_body(paper_account), format="json")
    assert response.status_code == 422
    assert response.data["error"]["code"] == "order_rejected"
    assert "above the account" in response.data["error"]["message"]
    assert response.data["error"]["order"]["status"] == "rejected"
    assert paper_orders(paper_account) == []


def test_detail_has_the_events(trader, paper_account, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        order_id = trader.post("/api/orders/", order_body(paper_account), format="json").data["id"]
    detail = trader.get(f"/api/orders/{order_id}/").data
    assert detail["status"] == "filled"
    # The fill, then its price: the acknowledgement is recorded before the price is read.
    assert [e["to_status"] for e in detail["events"]] == [
        "pending",
        "submitting",
        "filled",
        "filled",
    ]
    assert detail["events"][-1]["message"] == "Fill price reported by the broker."
    assert detail["average_price"] == "1500.00000000"


def test_list_filters_and_paginates(trader, team, paper_account_factory):
    one, two = paper_account_factory("A"), paper_account_factory("B")
    for account in (one, one, two):
        trader.post("/api/orders/", order_body(account), format="json")
    trader.post("/api/orders/", order_body(two, symbol="TCS"), format="json")
    assert trader.get("/api/orders/", {"account": one.pk}).data["count"] == 2
    assert trader.get("/api/orders/", {"symbol": "tcs"}).data["count"] == 1
    assert trader.get("/api/orders/", {"status": "pending"}).data["count"] == 4
    assert trader.get("/api/orders/", {"status": "filled"}).data["count"] == 0
    future = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert trader.get("/api/orders/", {"created_after": future}).data["count"] == 0
    assert trader.get("/api/orders/", {"created_before": future}).data["count"] == 4
    page = trader.get("/api/orders/", {"page_size": 3}).data
    assert len(page["results"]) == 3 and page["next"]


def test_cancel_endpoint_cancels_a_pending_order(trader, paper_account):
    order_id = trader.post("/api/orders/", order_body(paper_account), format="json").data["id"]
    response = trader.post(f"/api/orders/{order_id}/cancel/")
    assert response.status_code == 200
    assert response.data["status"] == "cancelled"
    again = trader.post(f"/api/orders/{order_id}/cancel/")
    assert again.status_code == 409


def test_patch_modifies_an_open_order_at_the_broker(
    trader, paper_account, django_capture_on_commit_callbacks
):
    body = order_body(paper_account, order_type="LIMIT", price="1400")
    with django_capture_on_commit_callbacks(execute=True):
        order_id = trader.post("/api/orders/", body, format="json").data["id"]
    response = trader.patch(f"/api/orders/{order_id}/", {"price": "1410.5"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["price"] == "1410.50000000"
    assert paper_orders(paper_account)[0].price == Decimal("1410.5")
    bad = trader.patch(f"/api/orders/{order_id}/", {"symbol": "TCS"}, format="json")
    assert bad.status_code == 400


def test_patch_breaking_a_limit_is_422_and_changes_nothing(trader, team, paper_account):
    RiskLimits.objects.create(team=team, max_quantity=Decimal(20))
    body = order_body(paper_account, order_type="LIMIT", price="1400")
    order_id = trader.post("/api/orders/", body, format="json").data["id"]
    response = trader.patch(f"/api/orders/{order_id}/", {"quantity": "21"}, format="json")
    assert response.status_code == 422
    assert Order.objects.get(pk=order_id).quantity == Decimal(10)


# Idempotency --------------------------------------------------------------------------------


def test_same_key_same_body_returns_the_first_response_and_one_order(trader, paper_account):
    body = order_body(paper_account)
    first = trader.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = trader.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 202
    assert second.data == first.data
    assert second["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1


def test_same_key_different_body_is_422(trader, paper_account):
    trader.post("/api/orders/", order_body(paper_account), format="json", HTTP_IDEMPOTENCY_KEY="k")
    response = trader.post(
        "/api/orders/",
        order_body(paper_account, quantity="11"),
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert response.status_code == 422
    assert response.data["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1


def test_same_key_while_the_first_is_in_flight_is_409(trader, team, paper_account):
    body = order_body(paper_account)
    first = trader.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert first.status_code == 202
    IdempotencyRecord.objects.filter(team=team, key="k").update(
        status=IdempotencyStatus.IN_FLIGHT, response_status=None, response_body=None
    )
    response = trader.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 409
    assert response.data["error"]["code"] == "idempotency_key_in_flight"
    assert Order.objects.count() == 1


def test_keys_are_scoped_to_the_team(
    trader, other_team, member, api_client_for, paper_account, paper_account_factory
):
    theirs = paper_account_factory("Theirs", for_team=other_team)
    them = api_client_for(member(other_team, Role.TRADER))
    ours = trader.post(
        "/api/orders/", order_body(paper_account), format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    their = them.post("/api/orders/", order_body(theirs), format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert ours.status_code == their.status_code == 202
    assert ours.data["id"] != their.data["id"]


def test_a_400_is_not_remembered_so_a_corrected_retry_is_possible(trader, paper_account):
    bad = order_body(paper_account, quantity="-1")
    assert (
        trader.post("/api/orders/", bad, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 400
    )
    good = trader.post(
        "/api/orders/", order_body(paper_account), format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert good.status_code == 202


def test_keys_are_kept_24_hours_then_cleaned_up(trader, team, paper_account):
    from orders.services import idempotency_records_cleanup

    trader.post("/api/orders/", order_body(paper_account), format="json", HTTP_IDEMPOTENCY_KEY="k")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=23))
    assert idempotency_records_cleanup() == 0
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_records_cleanup() == 1


def test_client_order_id_retry_returns_the_first_order_with_200(trader, paper_account):
    body = order_body(paper_account, client_order_id="mine1")
    first = trader.post("/api/orders/", body, format="json")
    again = trader.post("/api/orders/", body, format="json")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.data["id"] == first.data["id"]
    other = trader.post("/api/orders/", {**body, "quantity": "3"}, format="json")
    assert other.status_code == 409
    assert other.data["error"]["code"] == "duplicate_client_order_id"


# Prefer: wait ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_prefer_wait_answers_201_with_the_acknowledged_order(trader, paper_account):
    response = trader.post(
        "/api/orders/", order_body(paper_account), format="json", HTTP_PREFER="wait=5"
    )
    assert response.status_code == 201
    assert response.data["status"] == "filled"
    assert response["Preference-Applied"] == "wait=5"


def test_prefer_wait_times_out_with_202_and_the_pending_order(trader, paper_account):
    # Inside the test's transaction the submit task never runs: the broker never answers.
    response = trader.post(
        "/api/orders/", order_body(paper_account), format="json", HTTP_PREFER="wait=0.2"
    )
    assert response.status_code == 202
    assert response.data["status"] == "pending"


def test_the_shared_order_representation_matches_a_fresh_serializer_for_every_order(
    trader, team, paper_account_factory
):
    from orders.api.serializers import OrderSerializer

    first = trader.post(
        "/api/orders/", order_body(paper_account_factory("One")), format="json"
    ).json()
    second = trader.post(
        "/api/orders/",
        order_body(paper_account_factory("Two"), order_type="LIMIT", price="101.5"),
        format="json",
    ).json()

    # The POST answers came from the one shared serializer; each order is its own, as a
    # serializer made for it alone would have it.
    for answer in (first, second):
        order = Order.objects.get(pk=answer["id"])
        assert OrderSerializer.represent(order) == OrderSerializer(order).data
        assert (answer["account"], answer["client_order_id"]) == (
            order.broker_account_id,
            order.client_order_id,
        )
    assert (first["order_type"], first["price"]) == ("MARKET", None)
    assert (second["order_type"], second["price"]) == ("LIMIT", "101.50000000")


def test_placing_an_order_reads_no_account_secrets(trader, paper_account):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = trader.post("/api/orders/", order_body(paper_account), format="json")

    assert response.status_code == 202
    account_reads = [q["sql"] for q in queries if 'FROM "brokers_brokeraccount"' in q["sql"]]
    assert account_reads
    assert not [sql for sql in account_reads if "secret_credentials" in sql]


def account_reads_of_a_post(client, body) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/orders/", body, format="json")
    assert response.status_code == 202, response.data
    return [q["sql"] for q in queries if 'FROM "brokers_brokeraccount"' in q["sql"]]


def test_an_order_without_limits_or_client_id_reads_its_account_once_without_a_lock(
    trader, paper_account
):
    reads = account_reads_of_a_post(trader, order_body(paper_account))
    assert len(reads) == 1
    assert "FOR UPDATE" not in reads[0]


@pytest.mark.parametrize("needs_earlier_orders", ["client_order_id", "risk_limits"])
def test_checks_that_must_see_earlier_orders_run_under_the_accounts_lock(
    trader, team, paper_account, needs_earlier_orders
):
    overrides = {}
    if needs_earlier_orders == "client_order_id":
        overrides["client_order_id"] = "retry1"
    else:
        RiskLimits.objects.create(team=team, broker_account=paper_account, max_orders_per_minute=9)
    reads = account_reads_of_a_post(trader, order_body(paper_account, **overrides))
    assert len(reads) == 2
    assert "FOR UPDATE" in reads[1] or connection_is_sqlite()


def connection_is_sqlite() -> bool:
    from django.db import connection

    return connection.vendor == "sqlite"  # no row locks: Django leaves FOR UPDATE out


@pytest.mark.parametrize("scope", ["account", "team"])
def test_an_order_posted_after_a_halt_is_rejected_with_the_reason(
    trader, team, paper_account, scope
):
    from orders import services

    halted_account = paper_account if scope == "account" else None
    services.trading_halt_set(team=team, account=halted_account, halted=True)
    response = trader.post("/api/orders/", order_body(paper_account), format="json")
    assert response.status_code == 422
    assert "halted" in response.data["error"]["message"]
    assert paper_orders(paper_account) == []
