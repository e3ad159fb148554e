"""A desk's day in the browser: connect a Kite account, trade on it, and what a viewer sees.

The Kite simulator runs in process on loopback; its app's registered redirect URL is the live
server's callback page, as a real Kite app's would be the platform's. Celery runs eagerly, so an
order is sent to the broker as soon as the confirmation's transaction commits. Status changes
after that (a fill, a cancel) reach the platform through the periodic status sync; the tests run
that sync themselves (``beat_tick``), as Celery beat does every 15 seconds in production.
"""

from __future__ import annotations

import copy
import time

import pytest
from django.db import OperationalError

from accounts.models import Role
from algoways.celery import app as celery_app
from brokers.instruments import instrument_master_refresh
from brokers.models import BrokerAccount
from brokers.rate_limits import _limiter
from brokers.simulators.base import RunningSimulator
from brokers.simulators.kite import KiteSimulator
from orders.models import Order
from orders.tasks import open_orders_sync_task

pytestmark = pytest.mark.browser

CALLBACK_PATH = "/brokers/callback/zerodha/"
APP = KiteSimulator.default_seed["apps"][0]
USER = KiteSimulator.default_seed["users"][0]


@pytest.fixture(scope="module")
def kite(live_server):
    seed = copy.deepcopy(KiteSimulator.default_seed)
    seed["apps"] = [{**APP, "redirect_url": live_server.url + CALLBACK_PATH}]
    running = RunningSimulator(KiteSimulator(seed))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def console_setup(settings, live_server):
    """The live server is the platform's public URL; Celery runs tasks inline; fresh caches.

    Both settings are process-wide, so the live server's threads see them too.
    """
    settings.PUBLIC_URL = live_server.url
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    _limiter.cache_clear()
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


@pytest.fixture
def sim(kite):
    kite.simulator.reset()
    return kite.simulator


def beat_tick() -> None:
    """What Celery beat triggers every 15 s: pull working orders' status from their brokers.

    The live server shares this test's in-memory SQLite connection (Django's way with such a
    database), so a write here while the page's poll reads the same table is refused at once
    ("database table is locked": a shared connection has no busy wait). A file database with a
    connection per thread, as the platform runs, waits instead. The sync is safe to repeat, so
    the tick tries again.
    """
    for attempt in range(20):
        try:
            open_orders_sync_task()
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == 19:
                raise
            time.sleep(0.05)


def wait_for_status(page, expected: str, *, sync: bool = False, timeout: float = 15) -> None:
    """Wait until the detail page's live status (reloaded by the page itself) shows ``expected``."""
    deadline = time.monotonic() + timeout
    status = page.locator("#order-status")
    while True:
        if sync:
            beat_tick()
        if status.count() and status.inner_text() == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Order status stayed {status.inner_text()!r}, not {expected!r}")
        page.wait_for_timeout(500)


def place_order(page, screenshot, name: str, **fields) -> Order:
    """Fill the ticket, review it, confirm it; return the order it placed."""
    page.click("#nav-order-new")
    page.wait_for_url("**/orders/new/")
    page.select_option("select[name=account]", label="Kite desk (zerodha)")
    page.fill("input[name=instrument]", fields["instrument"])
    page.check(f"input[name=side][value={fields['side']}]")
    page.fill("input[name=quantity]", fields["quantity"])
    page.select_option("select[name=order_type]", fields["order_type"])
    if "price" in fields:
        page.fill("input[name=price]", fields["price"])
    screenshot(f"{name}-ticket")
    page.click("#review-order")
    summary = page.locator("#order-summary")
    assert fields["order_type"] in summary.inner_text()
    screenshot(f"{name}-confirm")
    before = set(Order.objects.values_list("pk", flat=True))
    page.click("#confirm-order")
    page.wait_for_url("**/orders/*/")
    [order] = Order.objects.exclude(pk__in=before)
    assert page.url.endswith(f"/orders/{order.pk}/")
    return order


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_member_signs_in_and_sees_the_team_dashboard(page, sign_in, screenshot, team, member):
    membership = member(team, Role.TRADER)
    page.goto("/")
    assert "/login/" in page.url  # the console needs a signed-in user
    screenshot("login")
    sign_in(membership.user.username)
    assert page.locator("h1").inner_text() == team.name
    screenshot("dashboard")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_connect_a_kite_account_then_place_cancel_and_fill_orders(
    page, sign_in, screenshot, team, member, kite, sim
):
    owner = member(team, Role.OWNER)
    sign_in(owner.user.username)
    screenshot("dashboard-empty")

    # Add the account (admins and owners).
    page.click("text=Add a broker account")
    page.select_option("select[name=broker]", "zerodha")
    screenshot("account-new-broker")
    page.click("button[type=submit]")
    page.fill("input[name=label]", "Kite desk")
    page.fill("input[name=base_url]", kite.url)
    page.fill("input[name=cred_api_key]", APP["api_key"])
    page.fill("input[name=cred_api_secret]", APP["api_secret"])
    screenshot("account-new-credentials")
    page.click("button[type=submit]")
    assert "Disconnected" in page.locator("section.card").first.inner_text()
    assert APP["api_secret"] not in page.content()  # secrets are never rendered back
    screenshot("account-disconnected")

    # Connect it through Kite's login page and the redirect back to the platform.
    page.click("#broker-login")
    page.wait_for_url(f"{kite.url}/connect/login?**")
    page.fill("input[name=user_id]", USER["user_id"])
    page.fill("input[name=password]", USER["password"])
    screenshot("kite-login")
    page.click("button[type=submit]")
    page.wait_for_url(f"**{CALLBACK_PATH}?**")
    assert page.locator("h1").inner_text() == "Connected"
    screenshot("callback-connected")
    account = BrokerAccount.objects.get(label="Kite desk")
    assert account.connection_state == "connected"

    # Its funds, on the account page and on the dashboard.
    page.goto(f"/accounts/{account.pk}/")
    funds = page.locator("#funds")
    assert "1000000" in funds.inner_text() and "INR" in funds.inner_text()
    screenshot("account-funds")
    page.goto("/")
    page.wait_for_selector("text=INR available")
    screenshot("dashboard-connected")

    # The symbol search reads the instrument master (loaded as the nightly refresh would).
    instrument_master_refresh(broker="zerodha", account=account)
    page.click("#nav-order-new")
    page.fill("input[name=instrument]", "INF")
    page.wait_for_selector('#instrument-options option[value="NSE:INFY"]', state="attached")

    # A LIMIT order below the market rests OPEN; cancelling it ends CANCELLED.
    limit = place_order(
        page,
        screenshot,
        "limit",
        instrument="NSE:INFY",
        side="BUY",
        quantity="2",
        order_type="LIMIT",
        price="1400",
    )
    wait_for_status(page, "Open")
    assert limit.client_order_id in page.content()
    screenshot("limit-open")
    page.click("#cancel-order")
    page.wait_for_selector("text=Cancel sent.")
    wait_for_status(page, "Cancelled", sync=True)
    page.reload()
    assert page.locator("#cancel-order").count() == 0  # nothing left to cancel
    screenshot("limit-cancelled")
    limit.refresh_from_db()
    assert limit.status == "cancelled"

    # A MARKET order fills.
    market = place_order(
        page,
        screenshot,
        "market",
        instrument="NSE:INFY",
        side="BUY",
        quantity="3",
        order_type="MARKET",
    )
    wait_for_status(page, "Filled", sync=True)
    assert "Filled 3 of 3 at an average of 1500" in page.locator("#order-live").inner_text()
    screenshot("market-filled")
    market.refresh_from_db()
    assert market.status == "filled" and market.filled_quantity == 3

    # Both on the dashboard's live list of today's orders.
    page.goto("/")
    today = page.locator("#orders-today")
    today.locator(f"tr[data-order='{market.pk}']").wait_for()
    assert "Filled" in today.locator(f"tr[data-order='{market.pk}']").inner_text()
    assert "Cancelled" in today.locator(f"tr[data-order='{limit.pk}']").inner_text()
    screenshot("dashboard-orders")
    page.goto("/orders/")
    screenshot("order-list")

    # A basket on the account, and a schedule.
    page.click("text=Baskets")
    screenshot("baskets-empty")
    page.goto("/orders/basket/")
    page.check("input[name=accounts]")
    page.fill("input[name=instrument]", "NSE:SBIN")
    page.check("input[name=side][value=BUY]")
    page.fill("input[name=quantity]", "1")
    page.select_option("select[name=order_type]", "MARKET")
    screenshot("basket-ticket")
    page.click("#review-basket")
    screenshot("basket-confirm")
    page.click("#confirm-basket")
    page.wait_for_url("**/orders/baskets/*/")
    page.locator("#basket-results").get_by_text("Kite desk").wait_for()
    screenshot("basket-results")
    page.click("text=Schedules")
    page.fill("#schedule-form input[name=name]", "Morning SBIN")
    page.check("#schedule-form input[name=accounts]")
    page.fill("#schedule-form input[name=instrument]", "NSE:SBIN")
    page.check("#schedule-form input[name=side][value=BUY]")
    page.fill("#schedule-form input[name=quantity]", "1")
    page.fill("#schedule-form input[name=cron]", "15 9 * * 1-5")
    page.click("#create-schedule")
    page.wait_for_selector("tr[data-schedule='Morning SBIN']")
    screenshot("schedules")

    # Nothing reached the broker twice.
    basket_order = Order.objects.get(group__isnull=False)
    assert sorted(row["client_tag"] for row in sim.ledger) == sorted(
        [limit.client_order_id, market.client_order_id, basket_order.client_order_id]
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_viewer_does_not_get_the_order_ticket(page, sign_in, screenshot, team, member):
    viewer = member(team, Role.VIEWER)
    sign_in(viewer.user.username)

    assert page.locator("#nav-order-new").count() == 0
    assert page.locator("text=New order").count() == 0
    screenshot("dashboard")
    response = page.goto("/orders/new/")
    assert response.status == 403
    screenshot("ticket-forbidden")
    page.goto("/orders/")
    assert page.locator("text=New order").count() == 0
    screenshot("orders")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_api_keys_and_members_pages(page, sign_in, screenshot, team, member, user_factory):
    owner = member(team, Role.OWNER)
    user_factory(email="newcomer@example.com")
    sign_in(owner.user.username)

    page.click("text=API keys")
    screenshot("api-keys-empty")
    page.fill("input[name=name]", "trading bot")
    page.click("#create-key")
    key = page.locator("#new-api-key").inner_text()
    assert key and "shown only this once" in page.content()
    screenshot("api-key-created")
    page.goto("/keys/")
    assert key not in page.content()
    assert "trading bot" in page.content()
    screenshot("api-keys")

    page.click("text=Members")
    page.fill("#add-member-form input[name=email]", "newcomer@example.com")
    page.select_option("#add-member-form select[name=role]", "trader")
    page.click("#add-member")
    page.wait_for_selector("text=newcomer@example.com joined as trader.")
    assert page.locator("tr[data-member='newcomer@example.com']").count() == 1
    screenshot("members")
