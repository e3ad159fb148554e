"""``manage.py broker_check <id>`` (issue #5): log in, print the balance, close the session; every
kind of failure gets a clear message and a non-zero exit status."""

from __future__ import annotations

import copy
import re
import socket
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from brokers.management.commands.broker_check import Command
from brokers.models import BrokerAccount, BrokerSession
from brokers.services import broker_account_create
from brokers.simulators.angel import AUTH, AngelSimulator
from brokers.simulators.angel import _error as angel_error
from brokers.simulators.base import Response, RunningSimulator
from brokers.simulators.dxtrade import DXtradeSimulator
from brokers.simulators.kite import KiteSimulator
from brokers.simulators.matchtrade import MatchTraderSimulator
from tests.brokers.contract import (
    harness_angel,
    harness_dxtrade,
    harness_matchtrade,
    harness_zerodha,
)

BROKERS = {
    "angel": (AngelSimulator, harness_angel.Harness),
    "dxtrade": (DXtradeSimulator, harness_dxtrade.Harness),
    "matchtrade": (MatchTraderSimulator, harness_matchtrade.Harness),
    "zerodha": (KiteSimulator, harness_zerodha.Harness),
}


@pytest.fixture(scope="module")
def running():
    servers = {code: RunningSimulator(sim_class()) for code, (sim_class, _) in BROKERS.items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def sims(running):
    saved = {code: list(server.simulator.routes) for code, server in running.items()}
    for server in running.values():
        server.simulator.reset()
    yield {code: server.simulator for code, server in running.items()}
    for code, server in running.items():
        server.simulator.routes[:] = saved[code]
        server.simulator.reset()


@pytest.fixture
def account_for(team, running, sims):
    """``account_for(code, base_url=..., **credential overrides)`` -> a BrokerAccount."""

    def make(code: str, *, base_url: str | None = None, **credentials) -> BrokerAccount:
        harness = BROKERS[code][1]() if code in BROKERS else None
        values = {**(harness.credentials() if harness else {}), **credentials}
        return broker_account_create(
            team=team,
            broker=code,
            label=f"{code} check",
            credentials=values,
            base_url=(running[code].url if code in running else "")
            if base_url is None
            else base_url,
        )

    return make


def check(account_id: int) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("broker_check", str(account_id), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def check_fails(account_id: int) -> CommandError:
    with pytest.raises(CommandError) as failure:
        check(account_id)
    assert failure.value.returncode == 1  # manage.py exits with this status
    return failure.value


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# Success ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, balance, currency",
    [
        ("dxtrade", "100000", "USD"),
        ("matchtrade", "100000", "USD"),
        ("angel", "1000000", "INR"),
    ],
)
def test_broker_check_logs_in_prints_the_balance_and_closes_the_session(
    code, balance, currency, account_for, sims
):
    account = account_for(code)

    out, err = check(account.pk)

    assert f"Account:   {code} check" in out
    balance_line = re.search(r"^Balance:\s+(\S+) (\w+)$", out, re.MULTILINE)
    assert balance_line, out
    assert float(balance_line.group(1)) == float(balance)
    assert balance_line.group(2) == currency
    assert "Available:" in out
    assert "Session closed" in out.splitlines()[-1]
    assert err == ""
    # A check never leaves a session behind in the platform.
    assert not BrokerSession.objects.filter(broker_account=account).exists()


def test_broker_check_closes_the_session_at_the_broker(account_for, sims):
    account = account_for("dxtrade")

    out, _ = check(account.pk)

    assert out.splitlines()[-1] == "Session closed."
    assert sims["dxtrade"].sessions == {}  # the simulator holds no live token any more


def test_broker_check_on_match_trader_says_how_the_session_ends(account_for):
    out, err = check(account_for("matchtrade").pk)

    assert "Session closed (Match-Trader has no logout" in out
    assert "Logout failed" not in err


def test_broker_check_works_for_a_paper_account(account_for):
    out, _ = check(account_for("paper", starting_cash="250000").pk)

    assert re.search(r"^Balance:\s+250000(\.0+)? INR$", out, re.MULTILINE), out
    assert out.splitlines()[-1] == "Session closed."


# Failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["dxtrade", "matchtrade", "angel"])
def test_broker_check_reports_invalid_credentials(code, account_for):
    wrong = {"angel": {"mpin": "0000"}}.get(code, {"password": "wrong-password"})
    account = account_for(code, **wrong)

    error = check_fails(account.pk)

    assert str(error).startswith("Invalid credentials: the broker refused the login"), error


def test_broker_check_reports_a_locked_account(account_for, sims):
    # Angel answers a blocked client with AB1006 (the simulator's seed has no blocked user, so
    # its login route is made to give that answer).
    message = "Client is blocked for trading"
    sims["angel"].routes.insert(
        0,
        (
            "POST",
            re.compile("^" + re.escape(f"{AUTH}/user/v1/loginByPassword") + "$"),
            lambda request: Response(200, angel_error(message, "AB1006")),
        ),
    )

    error = check_fails(account_for("angel").pk)

    assert str(error).startswith("Account locked at the broker"), error
    assert message in str(error)


@pytest.mark.parametrize("code", ["dxtrade", "matchtrade", "angel"])
def test_broker_check_reports_a_network_error(code, account_for):
    account = account_for(code, base_url=closed_port_url())

    error = check_fails(account.pk)

    assert str(error).startswith("Broker unreachable or failing (network or server error)")
    assert "Could not reach the broker" in str(error)


@pytest.mark.parametrize("code", ["dxtrade", "matchtrade", "angel"])
def test_broker_check_reports_a_server_error(code, account_for, sims):
    sims[code].faults.error_rate = 1.0

    error = check_fails(account_for(code).pk)

    assert str(error).startswith("Broker unreachable or failing (network or server error)")


def test_broker_check_reports_a_session_that_expires_at_once(team, sims, account_for):
    # An Angel deployment whose tokens last no time at all: the login works, the balance
    # call finds the session expired.
    seed = copy.deepcopy(AngelSimulator.default_seed)
    seed["session_seconds"] = 0
    server = RunningSimulator(AngelSimulator(seed))
    try:
        error = check_fails(account_for("angel", base_url=server.url).pk)
    finally:
        server.stop()

    assert str(error).startswith("Session expired"), error
    assert "Token Expired" in str(error)


def test_broker_check_of_an_unknown_account_fails_clearly(db):
    error = check_fails(999_999)

    assert str(error) == "No broker account with id 999999."


def test_broker_check_of_a_kite_account_needs_an_interactive_login(account_for, sims):
    error = check_fails(account_for("zerodha").pk)

    assert "needs an interactive login" in str(error)
    assert "connect it in the console" in str(error)
    # Nothing was sent to Kite: there is no login it could have attempted.
    assert sims["zerodha"].access_tokens == {}


def test_broker_check_from_the_command_line_exits_non_zero_with_the_message(
    account_for, capsys, monkeypatch
):
    # run_from_argv is what manage.py calls; it closes every DB connection when done, which
    # would end the test's transaction, so that one step is left out here.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    account = account_for("dxtrade", password="wrong-password")

    with pytest.raises(SystemExit) as exit_status:
        Command().run_from_argv(["manage.py", "broker_check", str(account.pk)])

    assert exit_status.value.code == 1
    assert "CommandError: Invalid credentials" in capsys.readouterr().err


def test_broker_check_from_the_command_line_exits_zero_on_success(account_for, capsys, monkeypatch):
    monkeypatch.setattr(connections, "close_all", lambda: None)
    account = account_for("dxtrade")

    Command().run_from_argv(["manage.py", "broker_check", str(account.pk)])  # no SystemExit

    out = capsys.readouterr().out
    assert "Balance:" in out and out.rstrip().endswith("Session closed.")
