"""Scheduled orders with a controlled clock: every tick is given its ``now``.

Firing goes to the paper broker (in process); Celery runs eagerly after commit, so an order that
fired also reached the paper book when the test captures the commit callbacks.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection

from accounts.models import Membership, Role
from algoways.celery import app as celery_app
from brokers.adapters.paper import PaperAdapter
from brokers.adapters.registry import all_adapters
from brokers.models import PaperBook
from brokers.services import broker_call
from orders import schedules
from orders.models import EventSource, Order, OrderStatus
from orders.schedule_models import RunOutcome, ScheduledOrder, ScheduledOrderRun
from orders.schedule_tasks import schedules_tick_task
from orders.services import order_place

from .conftest import paper_orders, spec

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # a Monday
TEN = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
BUY_INFY = {
    "symbol": "INFY",
    "exchange": "NSE",
    "side": "BUY",
    "quantity": "10",
    "order_type": "MARKET",
}


def daily_at_ten(team, accounts, *, kind="order", specs=None, **overrides):
    """A schedule firing every day at 10:00 UTC, created at T0 (09:00)."""
    fields = dict(
        team=team,
        name="Daily 10:00",
        kind=kind,
        accounts=accounts,
        specs=[BUY_INFY] if specs is None else specs,
        cron="0 10 * * *",
        now=T0,
    )
    fields.update(overrides)
    return schedules.schedule_create(**fields)


def position_quantity(account, symbol="INFY") -> Decimal:
    positions = broker_call(account, lambda adapter: adapter.positions())
    return sum((p.quantity for p in positions if p.symbol == symbol), Decimal(0))


# Timing --------------------------------------------------------------------------------------


def test_cron_in_asia_kolkata_runs_at_0345_utc(team, paper_account):
    schedule = schedules.schedule_create(
        team=team,
        name="Open",
        accounts=[paper_account],
        specs=[BUY_INFY],
        cron="15 9 * * 1-5",
        timezone="Asia/Kolkata",
        now=datetime(2025, 1, 6, 0, 0, tzinfo=UTC),
    )
    assert schedule.next_run_at == datetime(2025, 1, 6, 3, 45, tzinfo=UTC)
    # After Friday's run the next weekday is Monday.
    friday_after_open = datetime(2025, 1, 10, 4, 0, tzinfo=UTC)
    assert schedules.next_run_after(
        cron="15 9 * * 1-5", tz="Asia/Kolkata", after=friday_after_open
    ) == datetime(2025, 1, 13, 3, 45, tzinfo=UTC)


def test_utc_is_the_default_timezone(team, paper_account):
    schedule = daily_at_ten(team, [paper_account])
    assert schedule.timezone == "UTC"
    assert schedule.next_run_at == TEN


def test_europe_london_cron_keeps_its_wall_clock_time_across_the_spring_change(team, paper_account):
    schedule = schedules.schedule_create(
        team=team,
        name="London open",
        accounts=[paper_account],
        specs=[BUY_INFY],
        cron="30 9 * * *",
        timezone="Europe/London",
        now=datetime(2025, 3, 29, 9, 0, tzinfo=UTC),
    )
    saturday = datetime(2025, 3, 29, 9, 30, tzinfo=UTC)  # GMT: 09:30 local is 09:30 UTC
    assert schedule.next_run_at == saturday
    [run] = schedules.schedules_tick(now=saturday)
    assert run.outcome == RunOutcome.FIRED
    schedule.refresh_from_db()
    # The clocks went forward on Sunday 30 March: 09:30 BST is 08:30 UTC.
    assert schedule.next_run_at == datetime(2025, 3, 30, 8, 30, tzinfo=UTC)


def test_the_repeated_hour_when_clocks_go_back_does_not_run_twice():
    first = datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # 01:30 BST
    assert (
        schedules.next_run_after(
            cron="30 1 * * *", tz="Europe/London", after=first - timedelta(hours=1)
        )
        == first
    )
    # 01:30 GMT (01:30 UTC) is the same wall-clock time again: the next run is the next day's.
    assert schedules.next_run_after(cron="30 1 * * *", tz="Europe/London", after=first) == (
        datetime(2025, 10, 27, 1, 30, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cron", "61 * * * *", "Not a valid cron expression"),
        ("cron", "* * * *", "Not a valid cron expression"),
        ("cron", "0 10 * * * *", "Not a valid cron expression"),
        ("timezone", "Mars/Olympus_Mons", "Unknown time zone"),
    ],
)
def test_a_bad_cron_or_timezone_is_refused_by_the_service(
    team, paper_account, field, value, message
):
    with pytest.raises(ValidationError) as caught:
        daily_at_ten(team, [paper_account], **{field: value})
    assert message in caught.value.message_dict[field][0]
    assert not ScheduledOrder.objects.exists()


# Firing ---------------------------------------------------------------------------------------


def test_a_schedule_fires_exactly_once_at_its_time(
    team, paper_account, django_capture_on_commit_callbacks
):
    schedule = daily_at_ten(team, [paper_account])

    assert schedules.schedules_tick(now=TEN - timedelta(seconds=1)) == []
    with django_capture_on_commit_callbacks(execute=True):
        [run] = schedules.schedules_tick(now=TEN)
    with django_capture_on_commit_callbacks(execute=True):
        assert schedules.schedules_tick(now=TEN) == []
        assert schedules.schedules_tick(now=TEN + timedelta(seconds=30)) == []

    assert run.outcome == RunOutcome.FIRED
    assert run.scheduled_for == TEN
    [order] = Order.objects.all()
    assert list(run.orders.all()) == [order]
    assert order.status == OrderStatus.FILLED
    assert order.placed_by_schedule == str(schedule.pk)
    assert order.idempotency_key.startswith(f"schedule-{schedule.pk}-20250106T100000")
    assert order.events.first().source == EventSource.SCHEDULE
    assert order.client_order_id == schedules.run_client_order_id(
        schedule_id=schedule.pk, scheduled_for=TEN, account=paper_account, key="0"
    )
    assert len(paper_orders(paper_account)) == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == TEN + timedelta(days=1)
    assert schedule.last_run_at == TEN
    assert schedule.last_result.startswith("Fired: 1 order(s) placed")


def test_a_time_already_run_is_never_run_again(team, paper_account):
    """Even with next_run_at set back by hand, the unique run row refuses a second firing."""
    schedule = daily_at_ten(team, [paper_account])
    schedules.schedules_tick(now=TEN)
    ScheduledOrder.objects.filter(pk=schedule.pk).update(next_run_at=TEN)

    assert schedules.schedules_tick(now=TEN + timedelta(seconds=5)) == []

    assert ScheduledOrderRun.objects.count() == 1
    assert Order.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == TEN + timedelta(days=1)


def test_a_refire_of_the_same_time_finds_the_orders_it_placed(team, paper_account):
    """Client order ids come from (schedule, run time, account): a re-fire places nothing new."""
    schedule = daily_at_ten(team, [paper_account])
    [first] = schedules.schedules_tick(now=TEN)
    first_order = first.orders.get()
    first.delete()  # as if the run row had been lost
    ScheduledOrder.objects.filter(pk=schedule.pk).update(next_run_at=TEN)

    [again] = schedules.schedules_tick(now=TEN + timedelta(seconds=5))

    assert list(again.orders.all()) == [first_order]
    assert Order.objects.count() == 1


def test_client_order_ids_fit_every_broker_and_differ_per_time_and_account(
    team, paper_account_factory, monkeypatch
):
    one, two = paper_account_factory("P1"), paper_account_factory("P2")

    def client_id(account, at=TEN):
        return schedules.run_client_order_id(
            schedule_id=7, scheduled_for=at, account=account, key="0"
        )

    ids = {
        client_id(account, at) for at in (TEN, TEN + timedelta(days=1)) for account in (one, two)
    }
    assert len(ids) == 4
    assert all(i.isalnum() for i in ids)
    assert client_id(one) == client_id(one)
    strictest = min(adapter.client_order_id_max_length for adapter in all_adapters())
    monkeypatch.setattr(PaperAdapter, "client_order_id_max_length", strictest)
    assert len(client_id(one)) == strictest


@pytest.mark.parametrize(("late", "fires"), [(60, True), (61, False)])
def test_a_run_missed_by_more_than_its_grace_is_skipped_and_recorded(
    team, paper_account, late, fires
):
    schedule = daily_at_ten(team, [paper_account], grace_seconds=60)

    [run] = schedules.schedules_tick(now=TEN + timedelta(seconds=late))

    assert run.scheduled_for == TEN
    schedule.refresh_from_db()
    assert schedule.next_run_at == TEN + timedelta(days=1)
    if fires:
        assert run.outcome == RunOutcome.FIRED
        assert Order.objects.count() == 1
    else:
        assert run.outcome == RunOutcome.SKIPPED_MISSED
        assert run.details == {"late_seconds": 61.0, "grace_seconds": 60}
        assert not run.orders.exists()
        assert Order.objects.count() == 0
        assert schedule.last_result == "Skipped: missed by 61s (grace 60s)."


def test_a_one_off_fires_once_then_disables_itself(team, paper_account):
    run_at = T0 + timedelta(minutes=30)
    schedule = schedules.schedule_create(
        team=team, name="Once", accounts=[paper_account], specs=[BUY_INFY], run_at=run_at, now=T0
    )
    assert schedule.next_run_at == run_at

    [run] = schedules.schedules_tick(now=run_at + timedelta(seconds=2))
    assert schedules.schedules_tick(now=run_at + timedelta(days=1)) == []

    assert run.outcome == RunOutcome.FIRED
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_run_at) == (False, None)
    assert Order.objects.count() == 1


def test_a_one_off_in_the_past_is_refused(team, paper_account):
    with pytest.raises(ValidationError) as caught:
        schedules.schedule_create(
            team=team,
            name="Too late",
            accounts=[paper_account],
            specs=[BUY_INFY],
            run_at=T0 - timedelta(minutes=1),
            now=T0,
        )
    assert caught.value.message_dict == {"run_at": ["Must be in the future."]}


def test_a_basket_fires_one_order_per_account_as_one_group(
    team, paper_account_factory, django_capture_on_commit_callbacks
):
    accounts = [paper_account_factory(f"Basket {n}") for n in range(3)]
    daily_at_ten(team, accounts, kind="basket")

    with django_capture_on_commit_callbacks(execute=True):
        [run] = schedules.schedules_tick(now=TEN)

    orders = list(run.orders.order_by("broker_account_id"))
    assert [o.broker_account_id for o in orders] == sorted(a.pk for a in accounts)
    assert {o.group_id for o in orders} == {run.group_id} and run.group_id is not None
    assert {o.status for o in orders} == {OrderStatus.FILLED}
    assert {o.events.first().source for o in orders} == {EventSource.SCHEDULE}
    for account in accounts:
        assert len(paper_orders(account)) == 1


def test_square_off_closes_an_open_paper_position(
    team, paper_account, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        order_place(team=team, account=paper_account, spec=spec(quantity=Decimal(10)))
    assert position_quantity(paper_account) == 10
    schedule = daily_at_ten(team, [paper_account], kind="square_off", specs=[])

    with django_capture_on_commit_callbacks(execute=True):
        [run] = schedules.schedules_tick(now=TEN)

    [closing] = run.orders.all()
    assert (closing.side, closing.quantity, closing.order_type) == ("SELL", 10, "MARKET")
    assert closing.status == OrderStatus.FILLED
    assert closing.placed_by_schedule == str(schedule.pk)
    assert position_quantity(paper_account) == 0
    # Flat now: the next day's square-off has nothing to close.
    [next_day] = schedules.schedules_tick(now=TEN + timedelta(days=1))
    assert next_day.outcome == RunOutcome.FIRED and not next_day.orders.exists()


def test_whole_team_square_off_covers_every_connected_account_and_shorts(
    team, paper_account_factory, django_capture_on_commit_callbacks
):
    long, short, flat = (paper_account_factory(label) for label in ("Long", "Short", "Flat"))
    with django_capture_on_commit_callbacks(execute=True):
        order_place(team=team, account=long, spec=spec(quantity=Decimal(4)))
        order_place(team=team, account=short, spec=spec(side="SELL", quantity=Decimal(3)))
    assert (position_quantity(long), position_quantity(short)) == (4, -3)
    daily_at_ten(team, [], kind="square_off", specs=[], whole_team=True)

    with django_capture_on_commit_callbacks(execute=True):
        [run] = schedules.schedules_tick(now=TEN)

    assert sorted((o.broker_account_id, o.side, o.quantity) for o in run.orders.all()) == [
        (long.pk, "SELL", 4),
        (short.pk, "BUY", 3),
    ]
    assert [position_quantity(a) for a in (long, short, flat)] == [0, 0, 0]


def test_a_broker_failure_is_recorded_and_the_tick_goes_on(
    team, paper_account_factory, django_capture_on_commit_callbacks
):
    broken, fine = paper_account_factory("Broken"), paper_account_factory("Fine")
    with django_capture_on_commit_callbacks(execute=True):
        order_place(team=team, account=fine, spec=spec())
    PaperBook.objects.filter(broker_account=broken).delete()  # its positions now fail
    failing = daily_at_ten(team, [broken], kind="square_off", specs=[], name="Broken")
    closing = daily_at_ten(team, [fine], kind="square_off", specs=[], name="Fine")
    other = daily_at_ten(team, [fine], name="Buy")

    with django_capture_on_commit_callbacks(execute=True):
        runs = {run.schedule_id: run for run in schedules.schedules_tick(now=TEN)}

    assert runs[failing.pk].outcome == RunOutcome.FAILED
    [error] = runs[failing.pk].details["errors"]
    assert error["account"] == broken.pk and "no book" in error["error"]
    failing.refresh_from_db()
    assert failing.last_result.startswith("Failed: 0 order(s) placed; 1 error(s)")
    assert failing.next_run_at == TEN + timedelta(days=1)  # tried again tomorrow, not now
    assert runs[closing.pk].outcome == RunOutcome.FIRED and runs[closing.pk].orders.exists()
    assert runs[other.pk].outcome == RunOutcome.FIRED


def test_a_pre_trade_rejection_is_shown_on_the_run(team, paper_account):
    from orders.models import RiskLimits

    RiskLimits.objects.create(team=team, max_quantity=Decimal(5))
    schedule = daily_at_ten(team, [paper_account])

    [run] = schedules.schedules_tick(now=TEN)

    [row] = run.details["orders"]
    assert row["status"] == OrderStatus.REJECTED and row["rejection_reason"]
    schedule.refresh_from_db()
    assert schedule.last_result == "Fired: 1 order(s) placed; 1 rejected."


def test_a_disabled_schedule_does_not_fire_and_enabling_does_not_catch_up(team, paper_account):
    schedule = daily_at_ten(team, [paper_account])
    schedule = schedules.schedule_enable(schedule=schedule, enabled=False, now=T0)
    assert schedule.next_run_at is None
    assert schedules.schedules_tick(now=TEN) == []

    schedule = schedules.schedule_enable(
        schedule=schedule, enabled=True, now=TEN + timedelta(hours=1)
    )
    assert schedule.next_run_at == TEN + timedelta(days=1)
    assert Order.objects.count() == 0


def test_the_tick_task_runs_the_tick(team, paper_account, monkeypatch):
    daily_at_ten(team, [paper_account])
    monkeypatch.setattr(schedules, "_now", lambda: TEN)
    assert schedules_tick_task.delay().get() == {"fired": 1}


def test_beat_runs_the_tick_and_every_other_periodic_job_from_one_schedule():
    celery_app.loader.import_default_modules()
    beat = settings.CELERY_BEAT_SCHEDULE
    tasks = {entry["task"] for entry in beat.values()}
    assert {
        "orders.schedule_tasks.schedules_tick_task",
        "orders.tasks.open_orders_sync_task",
        "brokers.tasks.instrument_master_refresh_task",
        "brokers.tasks.session_keepalive_sweep_task",
        "brokers.tasks.expired_sessions_cleanup_task",
    } <= tasks
    assert tasks <= set(celery_app.tasks), tasks - set(celery_app.tasks)
    tick = next(e for e in beat.values() if e["task"].endswith("schedules_tick_task"))
    assert tick["schedule"] <= 30


# REST -----------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(team, member, api_client_for):
    return api_client_for(member(team, Role.ADMIN))


def schedule_body(account, **overrides) -> dict:
    body = {
        "name": "Morning buy",
        "kind": "order",
        "accounts": [account.pk],
        "specs": [BUY_INFY],
        "cron": "15 9 * * 1-5",
        "timezone": "Asia/Kolkata",
    }
    body.update(overrides)
    return body


def test_an_admin_creates_reads_and_lists_runs_over_the_api(admin_client, team, paper_account):
    response = admin_client.post("/api/schedules/", schedule_body(paper_account), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    schedule = ScheduledOrder.objects.get(pk=data["id"])
    assert schedule.team == team and schedule.created_by is not None
    assert data["next_run_at"].endswith(":45:00Z")
    assert data["specs"][0]["quantity"] == "10.00000000"

    schedules.schedules_tick(now=schedule.next_run_at)
    detail = admin_client.get(f"/api/schedules/{schedule.pk}/").json()
    assert [run["outcome"] for run in detail["recent_runs"]] == ["fired"]
    runs = admin_client.get(f"/api/schedules/{schedule.pk}/runs/").json()["results"]
    assert runs[0]["orders"] == [Order.objects.get().pk]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "Not a valid cron expression '61 * * * *'"),
        ({"cron": "every morning"}, "cron", "Not a valid cron expression"),
        ({"timezone": "Asia/Bombay_Typo"}, "timezone", "Unknown time zone 'Asia/Bombay_Typo'"),
        ({"cron": "", "run_at": None}, "cron", "Give either run_at (once) or cron"),
    ],
)
def test_a_bad_cron_or_timezone_gets_400_with_a_field_message(
    admin_client, paper_account, overrides, field, message
):
    response = admin_client.post(
        "/api/schedules/", schedule_body(paper_account, **overrides), format="json"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert any(message in text for text in error["fields"][field]), error
    assert not ScheduledOrder.objects.exists()


def test_a_spec_with_a_client_order_id_is_refused(admin_client, paper_account):
    body = schedule_body(paper_account, specs=[{**BUY_INFY, "client_order_id": "mine1"}])
    response = admin_client.post("/api/schedules/", body, format="json")
    assert response.status_code == 400
    assert "client_order_id" in response.json()["error"]["fields"]["specs"][0]


def test_another_teams_account_is_refused(admin_client, other_team, paper_account_factory):
    foreign = paper_account_factory("Theirs", for_team=other_team)
    response = admin_client.post("/api/schedules/", schedule_body(foreign), format="json")
    assert response.status_code == 400
    assert "accounts" in response.json()["error"]["fields"]


def test_patch_of_the_cron_moves_the_next_run_and_touches_nothing_else(
    admin_client, team, paper_account
):
    schedule = daily_at_ten(team, [paper_account], timezone="Asia/Kolkata", grace_seconds=120)
    response = admin_client.patch(
        f"/api/schedules/{schedule.pk}/",
        {"cron": "0 23 31 12 *", "name": "New year's eve"},
        format="json",
    )
    assert response.status_code == 200, response.content
    schedule.refresh_from_db()
    assert schedule.name == "New year's eve"
    # A change applies no defaults: the zone and the grace stay as they were.
    assert (schedule.timezone, schedule.grace_seconds) == ("Asia/Kolkata", 120)
    next_run = schedule.next_run_at.astimezone(UTC)
    assert (next_run.month, next_run.day, next_run.hour, next_run.minute) == (12, 31, 17, 30)

    bad = admin_client.patch(f"/api/schedules/{schedule.pk}/", {"cron": "0 25 * * *"})
    assert bad.status_code == 400 and "cron" in bad.json()["error"]["fields"]
    schedule.refresh_from_db()
    assert schedule.cron == "0 23 31 12 *"


def test_disable_and_enable_actions(admin_client, team, paper_account):
    schedule = daily_at_ten(team, [paper_account])
    response = admin_client.post(f"/api/schedules/{schedule.pk}/disable/")
    assert response.status_code == 200
    assert response.json()["enabled"] is False and response.json()["next_run_at"] is None
    response = admin_client.post(f"/api/schedules/{schedule.pk}/enable/")
    assert response.json()["enabled"] is True and response.json()["next_run_at"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TRADER])
def test_below_admin_reads_but_cannot_create_or_change(
    role, team, member, api_client_for, paper_account
):
    client = api_client_for(member(team, role))
    schedule = daily_at_ten(team, [paper_account])
    assert client.get("/api/schedules/").json()["results"][0]["id"] == schedule.pk
    assert client.post("/api/schedules/", schedule_body(paper_account)).status_code == 403
    assert client.post(f"/api/schedules/{schedule.pk}/disable/").status_code == 403
    assert client.delete(f"/api/schedules/{schedule.pk}/").status_code == 403
    assert ScheduledOrder.objects.filter(enabled=True).count() == 1


def test_another_teams_schedule_is_404(admin_client, other_team, paper_account_factory):
    theirs = daily_at_ten(other_team, [paper_account_factory("Theirs", for_team=other_team)])
    assert admin_client.get("/api/schedules/").json()["results"] == []
    for method, suffix in [("get", ""), ("patch", ""), ("delete", ""), ("post", "disable/")]:
        url = f"/api/schedules/{theirs.pk}/{suffix}"
        response = getattr(admin_client, method)(url, {"name": "mine"}, format="json")
        assert response.status_code == 404, (method, suffix)
    theirs.refresh_from_db()
    assert (theirs.name, theirs.enabled) == ("Daily 10:00", True)


# Admin ----------------------------------------------------------------------------------------


def test_the_admin_console_creates_a_schedule_with_the_same_rules(
    team, paper_account, user_factory, client
):
    user = user_factory(is_staff=True)
    Membership.objects.create(user=user, team=team, role=Role.ADMIN)
    client.force_login(user)
    form = {
        "team": team.pk,
        "name": "Console",
        "kind": "order",
        "accounts": [paper_account.pk],
        "specs": '[{"symbol": "INFY", "exchange": "NSE", "side": "BUY", "quantity": "1", '
        '"order_type": "MARKET"}]',
        "cron": "0 10 * * *",
        "timezone": "Nowhere/Atlantis",
        "enabled": "on",
        "grace_seconds": "60",
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
    }
    response = client.post("/admin/orders/scheduledorder/add/", form)
    assert response.status_code == 200 and b"Unknown time zone" in response.content

    response = client.post("/admin/orders/scheduledorder/add/", {**form, "timezone": "UTC"})
    assert response.status_code == 302, response.content.decode()[:3000]
    schedule = ScheduledOrder.objects.get()
    assert schedule.next_run_at is not None and schedule.next_run_at.minute == 0
    assert schedule.created_by.user == user
    assert schedule.specs[0]["quantity"] == "1.00000000"


# PostgreSQL: concurrent ticks -------------------------------------------------------------------


def in_threads(count, work):
    barrier = threading.Barrier(count)

    def run(index):
        try:
            barrier.wait(timeout=10)
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_concurrent_ticks_fire_a_schedule_exactly_once(team, paper_account, monkeypatch):
    schedule = daily_at_ten(team, [paper_account])
    fire = schedules._fire

    def slow_fire(*args, **kwargs):
        time.sleep(1.0)  # hold the row lock while the other tick looks
        return fire(*args, **kwargs)

    monkeypatch.setattr(schedules, "_fire", slow_fire)

    def tick(_):
        started = time.monotonic()
        runs = schedules.schedules_tick(now=TEN)
        return runs, time.monotonic() - started

    results = in_threads(2, tick)

    assert sorted(len(runs) for runs, _ in results) == [0, 1]
    # The loser skipped the locked row rather than waiting for it.
    assert min(elapsed for runs, elapsed in results if not runs) < 0.8
    assert ScheduledOrderRun.objects.filter(schedule=schedule).count() == 1
    [order] = Order.objects.all()
    assert order.status == OrderStatus.FILLED
    assert len(paper_orders(paper_account)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_eight_concurrent_ticks_fire_each_of_five_schedules_once(team, paper_account_factory):
    accounts = [paper_account_factory(f"C{n}") for n in range(5)]
    for n, account in enumerate(accounts):
        daily_at_ten(team, [account], name=f"S{n}")

    results = in_threads(8, lambda _: schedules.schedules_tick(now=TEN + timedelta(seconds=1)))

    assert sum(len(runs) for runs in results) == 5
    assert ScheduledOrderRun.objects.count() == 5
    assert Order.objects.count() == 5
    for account in accounts:
        assert len(paper_orders(account)) == 1
