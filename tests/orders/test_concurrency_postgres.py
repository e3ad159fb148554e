"""Concurrency on PostgreSQL: real row locks and concurrent transactions (skipped on SQLite)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.db.models import F

from accounts.models import Role
from orders import services
from orders.models import Order

from .conftest import order_body, paper_orders, spec

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def in_threads(count, work):
    def run(index):
        try:
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_concurrent_posts_with_one_idempotency_key_make_one_order(
    team, member, api_client_for, paper_account
):
    client = api_client_for(member(team, Role.TRADER))
    body = order_body(paper_account)

    def post(_):
        response = client.post("/api/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="same")
        return response.status_code, response.data

    results = in_threads(20, post)
    statuses = sorted(status for status, _ in results)
    assert set(statuses) <= {202, 409}, statuses
    ids = {data["id"] for status, data in results if status == 202}
    assert len(ids) == 1
    assert Order.objects.count() == 1
    assert len(paper_orders(paper_account)) == 1


def test_twenty_concurrent_posts_with_one_client_order_id_make_one_order(
    team, member, api_client_for, paper_account
):
    client = api_client_for(member(team, Role.TRADER))
    body = order_body(paper_account, client_order_id="once1")
    results = in_threads(20, lambda _: client.post("/api/orders/", body, format="json"))
    assert {r.status_code for r in results} <= {200, 202}
    assert len({r.data["id"] for r in results}) == 1
    assert Order.objects.count() == 1
    assert len(paper_orders(paper_account)) == 1


def test_concurrent_submits_of_one_order_send_it_once(team, paper_account):
    order, _ = services.order_place(team=team, account=paper_account, spec=spec(), enqueue=False)
    in_threads(8, lambda _: services.order_submit(order_id=order.pk))
    order.refresh_from_db()
    assert order.status == "filled"
    assert len(paper_orders(paper_account)) == 1
    assert order.events.filter(to_status="submitting").count() == 1


def test_a_submit_claims_and_records_the_answer_each_with_one_statement_outside_a_transaction(
    team, paper_account
):
    """The usual submit: a read, then the claim (PENDING -> SUBMITTING with its event) and the
    answer (with its event) each in one statement, committed by itself: no transaction is open
    while the broker is called, and none is opened around either write."""
    order, _ = services.order_place(team=team, account=paper_account, spec=spec(), enqueue=False)
    writes = []

    def record(execute, sql, params, many, context):
        # Status changes only: the paper fill's price is then read by a task (run eagerly here).
        if "orders_order" in sql and '"status" = ' in sql and not sql.startswith("SELECT"):
            writes.append((sql, context["connection"].in_atomic_block))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        result = services.order_submit(order_id=order.pk)

    assert result.status == "filled"
    assert len(writes) == 2
    for sql, in_transaction in writes:
        assert 'UPDATE "orders_order" SET' in sql and 'INSERT INTO "orders_orderevent"' in sql
        assert not in_transaction
    order.refresh_from_db()
    changes = order.events.exclude(to_status=F("from_status")).order_by("pk")
    assert [(e.from_status, e.to_status) for e in changes] == [
        ("", "pending"),
        ("pending", "submitting"),
        ("submitting", "filled"),
    ]
    assert len(paper_orders(paper_account)) == 1
