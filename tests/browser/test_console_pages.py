"""The console pages through Django's test client (no browser): roles, tenancy, CSRF, secrets.

The paper broker stands in for a real one: it runs in process and fills orders at once.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import Membership, Role, TeamAPIKey
from algoways.celery import app as celery_app
from brokers import paper
from orders.models import Order, OrderGroup, TeamTradingState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def eager_celery():
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


@pytest.fixture
def paper_account(team):
    paper.paper_price_set(exchange="NSE", symbol="INFY", price=Decimal("1500"))
    return paper.paper_account_ensure(team=team, label="Paper 1")


@pytest.fixture
def client_for():
    def make(membership: Membership, *, csrf: bool = False) -> Client:
        client = Client(enforce_csrf_checks=csrf)
        client.force_login(membership.user)
        return client

    return make


def ticket(account, **overrides) -> dict:
    data = {
        "account": account.pk,
        "instrument": "NSE:INFY",
        "side": "BUY",
        "quantity": "5",
        "order_type": "MARKET",
        "product": "INTRADAY",
        "validity": "DAY",
        "form_token": "tok123",
    }
    data.update(overrides)
    return data


def test_every_console_page_renders_for_an_owner(client_for, team, member, paper_account):
    client = client_for(member(team, Role.OWNER))
    for url in ["/", "/orders/", "/orders/new/", "/orders/basket/", "/orders/baskets/"]:
        response = client.get(url)
        assert response.status_code == 200, url
    for url in ["/keys/", "/members/", "/orders/today/"]:
        assert client.get(url).status_code == 200, url


def test_review_shows_a_summary_and_places_nothing(client_for, team, member, paper_account):
    client = client_for(member(team, Role.TRADER))

    response = client.post("/orders/new/", {**ticket(paper_account), "action": "review"})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Confirm the order" in html and "NSE:INFY" in html
    assert 'name="form_token" value="tok123"' in html
    assert not Order.objects.exists()


def test_confirming_twice_places_one_order(
    client_for, team, member, paper_account, django_capture_on_commit_callbacks
):
    client = client_for(member(team, Role.TRADER))
    data = {**ticket(paper_account), "action": "confirm"}

    with django_capture_on_commit_callbacks(execute=True):
        first = client.post("/orders/new/", data)
    second = client.post("/orders/new/", data)  # a double click

    order = Order.objects.get()
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"] == f"/orders/{order.pk}/"
    assert order.status == "filled"
    detail = client.get(f"/orders/{order.pk}/status/").content.decode()
    assert "Filled" in detail and "Accepted." in detail


def test_a_rejected_order_shows_its_reason(client_for, team, member, paper_account):
    TeamTradingState.objects.create(team=team, trading_halted=True, halt_reason="fat finger")
    client = client_for(member(team, Role.TRADER))

    response = client.post(
        "/orders/new/", {**ticket(paper_account), "action": "confirm"}, follow=True
    )

    html = response.content.decode()
    assert "Order rejected: Trading is halted for the whole team: fat finger." in html
    assert Order.objects.get().status == "rejected"
    dashboard = client.get("/").content.decode()
    assert "TRADING HALTED" in dashboard


def test_ticket_errors_follow_the_api_rules(client_for, team, member, paper_account):
    client = client_for(member(team, Role.TRADER))

    response = client.post(
        "/orders/new/", {**ticket(paper_account, order_type="LIMIT"), "action": "review"}
    )

    assert response.status_code == 400
    assert "A LIMIT order needs a price." in response.content.decode()


def test_viewer_gets_no_ticket(client_for, team, member, paper_account):
    client = client_for(member(team, Role.VIEWER))

    assert "/orders/new/" not in client.get("/").content.decode()
    assert client.get("/orders/new/").status_code == 403
    confirm = client.post("/orders/new/", {**ticket(paper_account), "action": "confirm"})
    assert confirm.status_code == 403
    assert not Order.objects.exists()


def test_another_teams_order_and_basket_are_404(
    client_for, team, other_team, member, paper_account
):
    owner = client_for(member(team, Role.OWNER))
    owner.post("/orders/new/", {**ticket(paper_account), "action": "confirm"})
    order = Order.objects.get()
    outsider = client_for(member(other_team, Role.OWNER))

    for url in [f"/orders/{order.pk}/", f"/orders/{order.pk}/status/"]:
        assert outsider.get(url).status_code == 404
    assert outsider.post(f"/orders/{order.pk}/cancel/").status_code == 404


def test_basket_places_one_order_per_account_once(client_for, team, member, paper_account):
    second = paper.paper_account_ensure(team=team, label="Paper 2")
    client = client_for(member(team, Role.TRADER))
    data = {**ticket(paper_account), "accounts": [paper_account.pk, second.pk]}
    data.pop("account")

    review = client.post("/orders/basket/", {**data, "action": "review"})
    assert "The same order on 2 accounts" in review.content.decode()
    first = client.post("/orders/basket/", {**data, "action": "confirm"})
    again = client.post("/orders/basket/", {**data, "action": "confirm"})

    group = OrderGroup.objects.get()
    assert first["Location"] == again["Location"] == f"/orders/baskets/{group.pk}/"
    assert group.orders.count() == 2
    results = client.get(f"/orders/baskets/{group.pk}/results/").content.decode()
    assert "Paper 1" in results and "Paper 2" in results


def test_forms_need_csrf(client_for, team, member, paper_account):
    client = client_for(member(team, Role.OWNER), csrf=True)

    assert client.post("/orders/new/", ticket(paper_account)).status_code == 403
    assert client.post("/keys/", {"name": "x"}).status_code == 403
    assert client.post("/members/", {"email": "a@example.com", "role": "viewer"}).status_code == 403


def test_a_new_api_key_is_shown_once(client_for, team, member):
    client = client_for(member(team, Role.VIEWER))

    created = client.post("/keys/", {"name": "bot"})

    key = TeamAPIKey.objects.get()
    html = created.content.decode()
    assert "shown only this once" in html
    assert key.prefix in html
    shown = html.split('id="new-api-key" class="key">')[1].split("<")[0]
    assert TeamAPIKey.objects.get_from_key(shown) == key
    assert shown not in client.get("/keys/").content.decode()

    client.post(f"/keys/{key.prefix}/revoke/")
    key.refresh_from_db()
    assert key.revoked


def test_members_follow_the_service_rules(client_for, team, member, user_factory):
    admin = member(team, Role.ADMIN)
    owner = member(team, Role.OWNER)
    newcomer = user_factory(email="new@example.com")
    client = client_for(admin)

    client.post("/members/", {"email": "new@example.com", "role": "trader"})
    added = Membership.objects.get(user=newcomer)
    assert added.role == "trader"

    # An admin cannot touch an owner.
    response = client.post(f"/members/{owner.pk}/role/", {"role": "viewer"}, follow=True)
    assert "Only an owner can add, change or remove an owner." in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == "owner"

    client.post(f"/members/{added.pk}/remove/")
    assert not Membership.objects.filter(pk=added.pk).exists()

    viewer = client_for(member(team, Role.VIEWER))
    assert viewer.get("/members/").status_code == 200
    assert viewer.post(f"/members/{admin.pk}/remove/").status_code == 403


def test_the_team_halt_switch_is_for_admins(client_for, team, member):
    trader = client_for(member(team, Role.TRADER))
    assert trader.post("/trading-halt/", {"action": "halt"}).status_code == 403

    admin = client_for(member(team, Role.ADMIN))
    admin.post("/trading-halt/", {"action": "halt", "reason": "drill"})
    assert TeamTradingState.objects.get(team=team).trading_halted
    assert "TRADING HALTED" in admin.get("/").content.decode()
    admin.post("/trading-halt/", {"action": "resume"})
    assert not TeamTradingState.objects.get(team=team).trading_halted


def test_admins_schedule_orders_and_viewers_only_see_them(client_for, team, member, paper_account):
    from orders.schedule_models import ScheduledOrder

    admin = client_for(member(team, Role.ADMIN))
    data = {
        "name": "Morning buy",
        "kind": "order",
        "accounts": [paper_account.pk],
        "instrument": "NSE:INFY",
        "side": "BUY",
        "quantity": "1",
        "order_type": "MARKET",
        "product": "INTRADAY",
        "cron": "15 9 * * 1-5",
        "timezone": "Asia/Kolkata",
    }

    bad = admin.post("/orders/schedules/", {**data, "order_type": "LIMIT"})
    assert bad.status_code == 400
    assert "LIMIT order needs a price" in bad.content.decode()
    response = admin.post("/orders/schedules/", data)
    assert response.status_code == 302
    schedule = ScheduledOrder.objects.get()
    assert schedule.specs[0]["symbol"] == "INFY" and schedule.next_run_at is not None

    admin.post(f"/orders/schedules/{schedule.pk}/toggle/", {"enabled": "0"})
    schedule.refresh_from_db()
    assert not schedule.enabled

    viewer = client_for(member(team, Role.VIEWER))
    page = viewer.get("/orders/schedules/").content.decode()
    assert "Morning buy" in page and "create-schedule" not in page
    assert viewer.post("/orders/schedules/", data).status_code == 403
    assert (
        viewer.post(f"/orders/schedules/{schedule.pk}/toggle/", {"enabled": "1"}).status_code == 403
    )
