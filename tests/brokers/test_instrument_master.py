"""The instrument master (issue #4): load each broker's file from its simulator, keep the old
table whenever a download is bad, look instruments up from the cache, search them in the API."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from django.db import IntegrityError

from accounts.models import Role
from brokers import instruments as instrument_master
from brokers.adapters import errors
from brokers.instruments import (
    InstrumentMasterRejected,
    ensure_known_instrument,
    instrument_lookup,
    instrument_master_refresh,
)
from brokers.models import BrokerAccount, Instrument, PaperQuote
from brokers.services import broker_account_connect, broker_account_create
from brokers.simulators.angel import AngelSimulator
from brokers.simulators.base import RunningSimulator, _Handler
from brokers.simulators.dxtrade import DXtradeSimulator
from brokers.simulators.fyers import FyersSimulator
from brokers.simulators.kite import KiteSimulator
from brokers.simulators.matchtrade import MatchTraderSimulator
from brokers.tasks import instrument_master_refresh_task
from tests.brokers.contract import (
    harness_angel,
    harness_dxtrade,
    harness_fyers,
    harness_matchtrade,
    harness_zerodha,
)

SIMULATORS = {
    "zerodha": (KiteSimulator, harness_zerodha.Harness),
    "angel": (AngelSimulator, harness_angel.Harness),
    "fyers": (FyersSimulator, harness_fyers.Harness),
    "dxtrade": (DXtradeSimulator, harness_dxtrade.Harness),
    "matchtrade": (MatchTraderSimulator, harness_matchtrade.Harness),
}
#: Brokers whose master is behind a login: the account is connected before the download.
NEEDS_SESSION = {"dxtrade", "matchtrade"}
KITE_MASTER = "/instruments"


class TruncatingHandler(_Handler):
    """Announces the whole body, sends half of it, then drops the connection (for
    ``truncate_paths``): what a network failure in the middle of a download looks like."""

    truncate_paths: frozenset[str] = frozenset()

    def _send(self, response):
        if self.path.split("?")[0] not in self.truncate_paths:
            return super()._send(response)
        payload = response.body if isinstance(response.body, bytes) else b""
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type or "text/csv")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(autouse=True)
def fresh_lookup_cache():
    """Cached lookups outlive a test's rolled-back rows (and, on Redis, the whole run): each test
    starts on a cache version that no earlier lookup used."""
    for code in [*SIMULATORS, "paper"]:
        instrument_master._bump_cache_version(code)


@pytest.fixture(scope="module")
def running():
    servers = {code: RunningSimulator(sim_class()) for code, (sim_class, _) in SIMULATORS.items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def sims(running):
    """The simulators back at their seed; any route a test swapped is put back afterwards."""
    saved = {}
    for code, server in running.items():
        server.simulator.reset()
        saved[code] = list(server.simulator.routes)
    yield {code: server.simulator for code, server in running.items()}
    for code, server in running.items():
        server.simulator.routes[:] = saved[code]
        server.simulator.reset()
        server.server.RequestHandlerClass = _Handler
        server.server.drop_connections()


@pytest.fixture
def account_for(team, running, sims):
    """``account_for(code)`` -> a BrokerAccount of ``team`` on that broker's simulator."""

    def make(code: str, *, base_url: str | None = None) -> BrokerAccount:
        account = broker_account_create(
            team=team,
            broker=code,
            label=f"{code} desk",
            credentials=SIMULATORS[code][1]().credentials(),
            base_url=running[code].url if base_url is None else base_url,
        )
        if code in NEEDS_SESSION:
            broker_account_connect(account=account)
        return account

    return make


def serve(sim, path: str, handler) -> None:
    """Make ``sim`` answer GET ``path`` with ``handler`` instead of its own route."""
    sim.routes.insert(0, ("GET", re.compile("^" + re.escape(path) + "$"), handler))


def serve_body(sim, path: str, body: bytes, content_type: str = "text/csv") -> None:
    from brokers.simulators.base import Response

    serve(sim, path, lambda request: Response(200, body, content_type=content_type))


def kite_csv(sim) -> bytes:
    """The Kite simulator's current instrument CSV, as its own route renders it."""
    return sim._instruments_csv(None).body


def table(broker: str) -> dict[tuple[str, str], tuple]:
    return {
        (i.exchange, i.symbol): (i.broker_symbol, i.broker_token, i.lot_size, i.tick_size)
        for i in Instrument.objects.filter(broker=broker)
    }


# Loading every broker's master ------------------------------------------------------------------

EXPECTED_ROWS = {
    # broker: (row count, {(exchange, symbol): (broker_symbol, token, lot, tick, extra)})
    "zerodha": (
        7,
        {
            ("NSE", "INFY"): ("INFY", "408065", "1", "0.05", {}),
            ("BSE", "INFY"): ("INFY", "128053508", "1", "0.05", {}),
            ("NSE", "RELIANCE"): ("RELIANCE", "738561", "1", "0.1", {}),
            ("NFO", "NIFTY25DEC24000CE"): (
                "NIFTY25DEC24000CE",
                "12345602",
                "75",
                "0.05",
                {"expiry": date(2025, 12, 30), "strike": Decimal(24000), "instrument_type": "CE"},
            ),
            ("NFO", "NIFTY25DECFUT"): (
                "NIFTY25DECFUT",
                "12345858",
                "75",
                "0.1",
                {"expiry": date(2025, 12, 30), "strike": None, "instrument_type": "FUT"},
            ),
        },
    ),
    "angel": (
        4,
        {
            ("NSE", "SBIN"): ("SBIN-EQ", "3045", "1", "0.05", {}),
            ("NSE", "INFY"): ("INFY-EQ", "1594", "1", "0.05", {}),
            ("NFO", "NIFTY28OCT2524400CE"): (
                "NIFTY28OCT2524400CE",
                "58784",
                "75",
                "0.05",
                {"expiry": date(2025, 10, 28), "strike": Decimal(24400)},
            ),
        },
    ),
    "fyers": (
        3,
        {
            ("NSE", "INFY"): ("NSE:INFY-EQ", "101000000001594", "1", "0.05", {}),
            ("NSE", "SBIN"): ("NSE:SBIN-EQ", "10100000003045", "1", "0.05", {}),
        },
    ),
    "dxtrade": (
        3,
        {
            ("FX", "EUR/USD"): ("EUR/USD", "EUR/USD", "1", "0.00001", {}),
            ("FX", "XAU/USD"): ("XAU/USD", "XAU/USD", "1", "0.01", {}),
        },
    ),
    "matchtrade": (
        3,
        {
            ("MTR", "EURUSD"): ("EURUSD", "EURUSD", "0.01", "0.00001", {}),
            ("MTR", "XAUUSD"): ("XAUUSD", "XAUUSD", "0.01", "0.01", {}),
        },
    ),
}


@pytest.mark.parametrize("code", sorted(EXPECTED_ROWS))
def test_refresh_loads_each_brokers_master_with_symbols_tokens_lots_and_ticks(code, account_for):
    account = account_for(code)
    count, expected = EXPECTED_ROWS[code]

    assert instrument_master_refresh(broker=code, account=account) == count

    assert Instrument.objects.filter(broker=code).count() == count
    for (exchange, symbol), (broker_symbol, token, lot, tick, extra) in expected.items():
        row = Instrument.objects.get(broker=code, exchange=exchange, symbol=symbol)
        assert (row.broker_symbol, row.broker_token) == (broker_symbol, token)
        assert row.lot_size == Decimal(lot)
        assert row.tick_size == Decimal(tick)
        for field, value in extra.items():
            assert getattr(row, field) == value, field
    # Another broker's rows are never touched.
    assert not Instrument.objects.exclude(broker=code).exists()


def test_refresh_of_the_paper_broker_mirrors_its_quote_table(db):
    PaperQuote.objects.update_or_create(
        exchange="NSE", symbol="ITC", defaults={"last_price": Decimal("450")}
    )
    quotes = set(PaperQuote.objects.values_list("exchange", "symbol"))

    assert instrument_master_refresh(broker="paper") == len(quotes)

    assert set(Instrument.objects.filter(broker="paper").values_list("exchange", "symbol")) == (
        quotes
    )
    itc = Instrument.objects.get(broker="paper", symbol="ITC")
    assert (itc.broker_symbol, itc.broker_token, itc.lot_size) == ("ITC", "NSE:ITC", Decimal(1))


# Bad downloads leave the old table as it was -----------------------------------------------------


@pytest.fixture
def kite(sims, account_for):
    """The Kite simulator and an account on it, with its master loaded once (7 rows)."""
    account = account_for("zerodha")
    instrument_master_refresh(broker="zerodha", account=account)
    return sims["zerodha"], account


def test_a_master_cut_in_half_is_refused_and_the_old_table_kept(kite):
    sim, account = kite
    before = table("zerodha")
    serve_body(sim, KITE_MASTER, kite_csv(sim)[: len(kite_csv(sim)) // 2])

    with pytest.raises(InstrumentMasterRejected):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


def test_a_master_cut_in_the_middle_of_a_row_is_refused_even_with_no_table_yet(sims, account_for):
    sim = sims["zerodha"]
    account = account_for("zerodha")
    body = kite_csv(sim)
    # Cut inside the trading symbol of the fourth instrument: the last row is half a row.
    cut = body.index(b",TCS,") + 3
    serve_body(sim, KITE_MASTER, body[:cut])

    with pytest.raises(InstrumentMasterRejected, match="row 3"):
        instrument_master_refresh(broker="zerodha", account=account)

    assert not Instrument.objects.filter(broker="zerodha").exists()


def test_a_master_much_smaller_than_the_current_table_is_refused_as_truncated(kite):
    sim, account = kite
    before = table("zerodha")
    lines = kite_csv(sim).splitlines(keepends=True)
    serve_body(sim, KITE_MASTER, b"".join(lines[:4]))  # header and 3 whole rows of 7

    with pytest.raises(InstrumentMasterRejected, match="looks truncated"):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lot_size", -75, "lot size must be positive"),
        ("tradingsymbol", "", "missing exchange, symbol or broker symbol"),
        ("tick_size", "-0.05", "tick size must be positive"),
    ],
)
def test_a_master_with_a_bad_row_is_refused_and_the_old_table_kept(kite, field, value, message):
    sim, account = kite
    before = table("zerodha")
    with sim.lock:
        sim.instruments["NSE:SBIN"][field] = value

    with pytest.raises(InstrumentMasterRejected, match=message):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


def test_an_angel_master_with_a_negative_lot_size_is_refused(sims, account_for):
    sim = sims["angel"]
    account = account_for("angel")
    instrument_master_refresh(broker="angel", account=account)
    before = table("angel")
    with sim.lock:
        sim.instruments[0]["lotsize"] = "-1"

    with pytest.raises(InstrumentMasterRejected, match="lot size must be positive"):
        instrument_master_refresh(broker="angel", account=account)

    assert table("angel") == before


def test_a_server_error_during_the_download_keeps_the_old_table(kite):
    sim, account = kite
    before = table("zerodha")
    sim.faults.error_rate = 1.0

    with pytest.raises(errors.BrokerUnavailable):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


def test_a_connection_dropped_in_the_middle_of_the_download_keeps_the_old_table(kite, running):
    sim, account = kite
    before = table("zerodha")
    running["zerodha"].server.RequestHandlerClass = type(
        "Truncating", (TruncatingHandler,), {"truncate_paths": frozenset({KITE_MASTER})}
    )
    running["zerodha"].server.drop_connections()  # kept-alive ones still have the old handler

    with pytest.raises(errors.BrokerUnavailable):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


def test_a_download_that_stalls_past_the_read_timeout_keeps_the_old_table(kite, settings):
    sim, account = kite
    before = table("zerodha")
    settings.BROKER_READ_TIMEOUT = 0.3
    sim.faults.slow_ms = 1500

    with pytest.raises(errors.BrokerUnavailable, match="did not answer in time"):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


@pytest.mark.parametrize("header_only", [False, True], ids=["no-bytes", "header-only"])
def test_an_empty_master_is_refused_and_the_old_table_kept(kite, header_only):
    sim, account = kite
    before = table("zerodha")
    body = kite_csv(sim).splitlines()[0] + b"\n" if header_only else b""
    serve_body(sim, KITE_MASTER, body)

    with pytest.raises(InstrumentMasterRejected, match="empty"):
        instrument_master_refresh(broker="zerodha", account=account)

    assert table("zerodha") == before


def test_a_good_second_download_replaces_the_whole_table(kite):
    sim, account = kite
    with sim.lock:
        del sim.instruments["NSE:TCS"]
        sim.instruments["NSE:SBIN"]["lot_size"] = 5
        sim.instruments["NSE:ITC"] = {
            **sim.instruments["NSE:INFY"],
            "tradingsymbol": "ITC",
            "name": "ITC",
            "instrument_token": 424961,
        }
        sim.exchange.prices["NSE:ITC"] = Decimal("450")

    assert instrument_master_refresh(broker="zerodha", account=account) == 7

    rows = table("zerodha")
    assert ("NSE", "TCS") not in rows
    assert rows[("NSE", "ITC")][:2] == ("ITC", "424961")
    assert rows[("NSE", "SBIN")][2] == Decimal(5)


def test_a_failure_while_writing_the_new_table_rolls_back_to_the_old_one(kite, monkeypatch):
    sim, account = kite
    before = table("zerodha")

    def failing_bulk_create(objs, **kwargs):
        raise IntegrityError("disk full, say")

    monkeypatch.setattr(Instrument.objects, "bulk_create", failing_bulk_create)

    with pytest.raises(IntegrityError):
        instrument_master_refresh(broker="zerodha", account=account)

    # The old rows were deleted inside the same transaction as the failed insert: all back.
    assert table("zerodha") == before


# Lookups -------------------------------------------------------------------------------------


def test_instrument_lookup_is_cached_until_the_next_refresh(
    kite, django_assert_num_queries, django_capture_on_commit_callbacks
):
    sim, account = kite
    first = instrument_lookup(broker="zerodha", exchange="NSE", symbol="SBIN")
    assert first.lot_size == Decimal(1)

    with django_assert_num_queries(0):
        again = instrument_lookup(broker="zerodha", exchange="NSE", symbol="SBIN")
    assert again.pk == first.pk

    with sim.lock:
        sim.instruments["NSE:SBIN"]["lot_size"] = 10
    with django_capture_on_commit_callbacks(execute=True):
        instrument_master_refresh(broker="zerodha", account=account)

    fresh = instrument_lookup(broker="zerodha", exchange="NSE", symbol="SBIN")
    assert fresh.lot_size == Decimal(10)


def test_an_unknown_instrument_is_cached_as_unknown_and_learned_on_refresh(
    kite, django_assert_num_queries, django_capture_on_commit_callbacks
):
    sim, account = kite
    assert instrument_lookup(broker="zerodha", exchange="NSE", symbol="ITC") is None
    with django_assert_num_queries(0):
        assert instrument_lookup(broker="zerodha", exchange="NSE", symbol="ITC") is None

    with sim.lock:
        sim.instruments["NSE:ITC"] = {**sim.instruments["NSE:INFY"], "tradingsymbol": "ITC"}
        sim.exchange.prices["NSE:ITC"] = Decimal("450")
    with django_capture_on_commit_callbacks(execute=True):
        instrument_master_refresh(broker="zerodha", account=account)

    assert instrument_lookup(broker="zerodha", exchange="NSE", symbol="ITC").symbol == "ITC"


def test_ensure_known_instrument_refuses_a_symbol_missing_from_a_loaded_master(kite):
    assert ensure_known_instrument(broker="zerodha", exchange="NSE", symbol="INFY").symbol == "INFY"
    with pytest.raises(errors.InvalidInstrument, match="NSE:NOSUCH"):
        ensure_known_instrument(broker="zerodha", exchange="NSE", symbol="NOSUCH")
    # A broker whose master was never loaded cannot tell: the order goes to the broker.
    assert ensure_known_instrument(broker="angel", exchange="NSE", symbol="NOSUCH") is None


# The API ---------------------------------------------------------------------------------------


@pytest.fixture
def viewer_client(team, member, api_client_for):
    return api_client_for(member(team, Role.VIEWER))


def test_instrument_search_finds_symbols_by_prefix(kite, viewer_client):
    response = viewer_client.get("/api/instruments/", {"broker": "zerodha", "q": "INF"})

    assert response.status_code == 200, response.content
    found = {(row["exchange"], row["symbol"]) for row in response.json()["results"]}
    assert found == {("NSE", "INFY"), ("BSE", "INFY")}
    row = next(r for r in response.json()["results"] if r["exchange"] == "NSE")
    assert (row["broker_symbol"], row["broker_token"]) == ("INFY", "408065")


def test_instrument_search_filters_by_exchange_and_never_shows_other_brokers(
    kite, viewer_client, account_for
):
    instrument_master_refresh(broker="angel", account=account_for("angel"))

    response = viewer_client.get(
        "/api/instruments/", {"broker": "zerodha", "q": "inf", "exchange": "bse"}
    )

    assert [(r["exchange"], r["symbol"]) for r in response.json()["results"]] == [("BSE", "INFY")]
    angel = viewer_client.get("/api/instruments/", {"broker": "angel", "q": "INF"}).json()
    assert [r["broker_symbol"] for r in angel["results"]] == ["INFY-EQ"]


def test_instrument_search_requires_a_broker(db, viewer_client):
    response = viewer_client.get("/api/instruments/", {"q": "INF"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"broker": ["This parameter is required."]}


def test_instrument_search_is_paginated(kite, viewer_client):
    page1 = viewer_client.get("/api/instruments/", {"broker": "zerodha", "page_size": 3}).json()
    page3 = viewer_client.get(
        "/api/instruments/", {"broker": "zerodha", "page_size": 3, "page": 3}
    ).json()

    assert page1["count"] == 7
    assert len(page1["results"]) == 3 and page1["next"] and page1["previous"] is None
    assert len(page3["results"]) == 1 and page3["next"] is None
    rows = [(r["exchange"], r["symbol"]) for r in page1["results"] + page3["results"]]
    assert len(set(rows)) == 4  # no row on two pages


def test_instrument_search_needs_authentication(db, client):
    assert client.get("/api/instruments/", {"broker": "zerodha"}).status_code in (401, 403)


# The task -------------------------------------------------------------------------------------


def test_refresh_task_uses_a_connected_account_and_reports_counts(kite, account_for):
    sim, account = kite
    account.connection_state = "connected"
    account.save(update_fields=["connection_state"])
    with sim.lock:
        del sim.instruments["NSE:TCS"]

    result = instrument_master_refresh_task.apply(kwargs={"broker": "zerodha"}).get()

    assert result == {"zerodha": 6}
    assert ("NSE", "TCS") not in table("zerodha")


def test_refresh_task_sweep_reports_a_failing_broker_and_refreshes_the_others(
    kite, account_for, monkeypatch
):
    sim, account = kite
    account.connection_state = "connected"
    account.save(update_fields=["connection_state"])
    sim.faults.error_rate = 1.0
    PaperQuote.objects.update_or_create(
        exchange="NSE", symbol="ITC", defaults={"last_price": Decimal("450")}
    )
    # Only the brokers with an account here: the sweep must not reach production hosts.
    from brokers.adapters import registry

    monkeypatch.setattr(
        registry,
        "all_adapters",
        lambda: [registry.get("zerodha"), registry.get("paper"), registry.get("dxtrade")],
    )

    result = instrument_master_refresh_task.apply().get()

    assert result["paper"] == PaperQuote.objects.count()
    assert "error" in result["zerodha"] and "Internal server error" in result["zerodha"]["error"]
    # DXtrade lives on each firm's own host: with no account there is nothing to download.
    assert "skipped" in result["dxtrade"]
    assert table("zerodha")  # the failed broker kept its table
    assert Instrument.objects.filter(broker="paper", symbol="ITC").exists()


def test_refresh_task_for_one_broker_raises_its_failure(kite):
    sim, account = kite
    account.connection_state = "connected"
    account.save(update_fields=["connection_state"])
    sim.faults.error_rate = 1.0

    with pytest.raises(errors.BrokerUnavailable):
        instrument_master_refresh_task.apply(kwargs={"broker": "zerodha"}, throw=True).get()


def test_refresh_module_rejects_brokers_without_a_master(db, monkeypatch):
    from brokers.adapters import registry

    adapter_class = registry.get("zerodha")
    monkeypatch.setattr(adapter_class, "has", {**adapter_class.has, "instrument_master": False})
    with pytest.raises(errors.NotSupported):
        instrument_master.instrument_master_refresh(broker="zerodha")
