"""Benchmark the session keepalive sweep against the broker simulators on loopback.

    python manage.py bench_session_refresh --accounts 5000 --latency-ms 50

Creates a throwaway team with N broker accounts whose sessions are all due now, runs the sweep's
work (``sessions.keepalive_schedule`` then ``sessions.session_keepalive`` per account, started at
the scheduled delays by a pool of worker threads) and prints the time taken, how many accounts
were renewed, and per broker the peak request rate the simulator saw against the broker's limit.
Everything it created is deleted at the end.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection
from django.utils import timezone

from accounts.models import Team
from brokers import sessions
from brokers.adapters import registry
from brokers.adapters.base import SessionData
from brokers.models import BrokerAccount, BrokerSession
from brokers.simulators import simulator_class
from brokers.simulators.base import RunningSimulator

DEFAULT_BROKERS = ("matchtrade", "dxtrade", "angel", "fyers")
SIMULATOR_NAMES = {"zerodha": "kite"}


class Command(BaseCommand):
    help = "Time a keepalive sweep over many accounts and check each broker's request rate."

    def add_arguments(self, parser):
        parser.add_argument("--accounts", type=int, default=5000)
        parser.add_argument("--latency-ms", type=int, default=50)
        parser.add_argument("--workers", type=int, default=16)
        parser.add_argument(
            "--brokers",
            default=",".join(DEFAULT_BROKERS),
            help="Comma-separated refresh-capable brokers (default: %(default)s).",
        )
        parser.add_argument(
            "--split",
            choices=("rate", "even"),
            default="rate",
            help="Share accounts among brokers in proportion to their login rate (every broker "
            "then needs about the same time) or evenly.",
        )

    def handle(self, *args, **options):
        codes = [code.strip() for code in options["brokers"].split(",") if code.strip()]
        unknown = [code for code in codes if code not in MINTERS]
        if unknown:
            raise CommandError(f"No session minting for {unknown}; choose from {list(MINTERS)}")
        if options["accounts"] < len(codes):
            raise CommandError("Give at least one account per broker.")
        if connection.vendor == "sqlite":
            # Worker threads write at once: take SQLite's write lock at BEGIN so a transaction
            # waits for it (busy timeout) instead of failing when it upgrades from a read.
            connection.settings_dict["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
        if "LocMemCache" in settings.CACHES["default"]["BACKEND"]:
            self.stderr.write(
                "Warning: no REDIS_URL. The local-memory cache keeps 300 keys and culls the rest, "
                "so thousands of keepalive claims push out the pacing slots: set REDIS_URL."
            )
        running = {
            code: RunningSimulator(
                simulator_class(SIMULATOR_NAMES.get(code, code))(latency_ms=options["latency_ms"])
            )
            for code in codes
        }
        team = Team.objects.create(
            name=f"Keepalive bench {uuid.uuid4().hex[:8]}", slug=f"bench-{uuid.uuid4().hex[:12]}"
        )
        try:
            counts = self._split(codes, options["accounts"], options["split"])
            self._create_accounts(team, running, counts)
            self._sweep(team, running, options["workers"])
        finally:
            ids = list(BrokerAccount.objects.filter(team=team).values_list("pk", flat=True))
            cache.delete_many([sessions._claim_key(pk) for pk in ids])
            _delete_bench_rows(team)
            for sim in running.values():
                sim.stop()

    # Setup -----------------------------------------------------------------------------------

    @staticmethod
    def _split(codes: list[str], total: int, how: str) -> dict[str, int]:
        weights = {
            code: sessions.keepalive_rate(registry.get(code)) if how == "rate" else 1.0
            for code in codes
        }
        counts = {
            code: max(1, int(total * w / sum(weights.values()))) for code, w in weights.items()
        }
        counts[codes[0]] += total - sum(counts.values())
        return counts

    def _create_accounts(self, team, running, counts: dict[str, int]) -> None:
        started = time.monotonic()
        now = timezone.now()
        for code, count in counts.items():
            minter = MINTERS[code](running[code])
            accounts = []
            for index in range(count):
                account = BrokerAccount(
                    team=team, broker=code, label=f"{code} {index}", base_url=running[code].url
                )
                _assign(account, minter.credentials)
                accounts.append(account)
            BrokerAccount.objects.bulk_create(accounts, batch_size=500)
            accounts = list(BrokerAccount.objects.filter(team=team, broker=code))
            rows = []
            for account in accounts:
                data = minter.mint()
                # Renewable brokers are due half an hour ahead; Fyers only once expired.
                expires_at = (
                    now - timedelta(minutes=1) if code == "fyers" else now + timedelta(minutes=10)
                )
                rows.append(
                    BrokerSession(
                        broker_account=account,
                        access_token=data.access_token,
                        refresh_token=data.refresh_token,
                        feed_token=data.feed_token,
                        extra=json.dumps(data.extra, default=str),
                        issued_at=now - timedelta(hours=4),
                        expires_at=expires_at,
                    )
                )
            BrokerSession.objects.bulk_create(rows, batch_size=500)
            BrokerAccount.objects.filter(team=team, broker=code).update(
                connection_state="connected"
            )
        self.stdout.write(
            f"Created {sum(counts.values())} accounts in {time.monotonic() - started:.1f}s: "
            + ", ".join(f"{code} {count}" for code, count in counts.items())
        )

    # The sweep -------------------------------------------------------------------------------

    def _sweep(self, team, running, workers: int) -> None:
        for sim in running.values():
            sim.simulator.requests_seen.clear()
        started = time.monotonic()
        due = [a for a in sessions.accounts_due() if a.team_id == team.pk]
        plan = [
            (pk, delay)
            for pk, delay in sessions.keepalive_schedule(due)
            if sessions.claim_keepalive(pk, delay)
        ]
        plan.sort(key=lambda item: item[1])
        self.stdout.write(
            f"Scheduled {len(plan)} due accounts in {time.monotonic() - started:.1f}s; "
            f"last start at +{plan[-1][1]:.0f}s"
            if plan
            else "Nothing due."
        )
        results: Counter[str] = Counter()
        lock = threading.Lock()

        def renew(account_id: int) -> None:
            close_old_connections()
            try:
                account = BrokerAccount.objects.select_related("team").get(pk=account_id)
                result = sessions.session_keepalive(account=account)
            except Exception as exc:  # a benchmark reports crashes rather than stopping
                result = f"crashed: {type(exc).__name__}: {exc}"
            finally:
                connection.close()
            with lock:
                results[result] += 1

        sweep_start = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for account_id, delay in plan:
                wait = sweep_start + delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                pool.submit(renew, account_id)
        elapsed = time.monotonic() - sweep_start
        self._report(elapsed, results, running)

    def _report(self, elapsed: float, results: Counter, running) -> None:
        renewed = results["refreshed"] + results["logged_in"]
        failed = sum(results.values()) - renewed
        self.stdout.write(
            f"Sweep took {elapsed:.1f}s: {renewed} renewed, {failed} not "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(results.items()))})"
        )
        self.stdout.write(
            f"{'broker':<11} {'requests':>8} {'peak/1s':>8} {'per sec':>8} {'peak/60s':>9} "
            f"{'paced at':>9}  "
            "documented login/refresh limit"
        )
        for code, sim in running.items():
            times = sorted(t for t, _, path in list(sim.simulator.requests_seen))
            adapter_class = registry.get(code)
            limits = {
                category: adapter_class.rate_limits.get(category)
                or adapter_class.rate_limits.get("default")
                for category in ("login", "refresh")
            }
            documented = "; ".join(
                f"{category} {', '.join(items or ('none',))}" for category, items in limits.items()
            )
            self.stdout.write(
                f"{code:<11} {len(times):>8} {_peak(times, 1.0):>8} {_calendar_peak(times):>8} "
                f"{_peak(times, 60.0):>9} "
                f"{sessions.keepalive_rate(adapter_class):>7.2f}/s  {documented}"
            )


def _peak(times: list[float], window: float) -> int:
    """Most requests in any window of ``window`` seconds [t, t + window)."""
    best, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def _delete_bench_rows(team) -> None:
    """Drop the throwaway team, its accounts and sessions (nothing else ever pointed at them).

    Plain deletes rather than ``team.delete()``: the cascade collector visits every related
    table, and a bench must not fail on a development database one migration behind.
    """
    BrokerSession.objects.filter(broker_account__team=team)._raw_delete(connection.alias)
    BrokerAccount.objects.filter(team=team)._raw_delete(connection.alias)
    Team.objects.filter(pk=team.pk)._raw_delete(connection.alias)


def _calendar_peak(times: list[float]) -> int:
    """Most requests in one whole clock second (how a per-second counter at the broker sees it)."""
    return max(Counter(int(moment) for moment in times).values(), default=0)


def _assign(account: BrokerAccount, credentials: dict[str, str]) -> None:
    secret_names = account.adapter_class.secret_field_names()
    account.credentials = {k: v for k, v in credentials.items() if k not in secret_names}
    account.set_secrets({k: v for k, v in credentials.items() if k in secret_names})


# Sessions minted inside the simulators (one real login each is not what is measured) ----------


class _Minter:
    def __init__(self, running: RunningSimulator):
        self.running = running
        self.sim = running.simulator


class _MatchTrader(_Minter):
    def __init__(self, running):
        super().__init__(running)
        user = self.sim.seed["users"][0]
        self.credentials = {
            "email": user["email"],
            "password": user["password"],
            "broker_id": str(self.sim.seed["broker_id"]),
            "trading_account_id": user["accounts"][0]["tradingAccountId"],
        }
        self.template = _login(running, "matchtrade", self.credentials)

    def mint(self) -> SessionData:
        email = self.credentials["email"].lower()
        with self.sim.lock:
            token = self.sim._issue_session(email)
            refresh = secrets.token_urlsafe(32)
            self.sim.refresh_tokens[refresh] = {
                "email": email,
                "expires_at": time.time() + self.sim.refresh_ttl,
            }
        return SessionData(token, refresh_token=refresh, extra=self.template.extra)


class _DXtrade(_Minter):
    def __init__(self, running):
        super().__init__(running)
        user = self.sim.seed["users"][0]
        self.credentials = {
            "username": user["username"],
            "domain": user.get("domain", "default"),
            "password": user["password"],
            "account": user["accounts"][0]["account"],
        }
        self.template = _login(running, "dxtrade", self.credentials)

    def mint(self) -> SessionData:
        user = (self.credentials["username"], self.credentials["domain"])
        with self.sim.lock:
            token = self.sim._new_session(user)["sessionToken"]
        return SessionData(token, extra=self.template.extra)


class _Angel(_Minter):
    def __init__(self, running):
        super().__init__(running)
        user = self.sim.seed["users"][0]
        self.credentials = {
            "api_key": self.sim.seed["apps"][0]["api_key"],
            "client_code": user["client_code"],
            "mpin": user["mpin"],
            "totp_secret": user["totp_secret"],
        }

    def mint(self) -> SessionData:
        with self.sim.lock:
            tokens = self.sim._issue(self.credentials["client_code"], self.credentials["api_key"])
        return SessionData(
            tokens["jwtToken"], refresh_token=tokens["refreshToken"], feed_token=tokens["feedToken"]
        )


class _Fyers(_Minter):
    def __init__(self, running):
        super().__init__(running)
        app, user = self.sim.seed["apps"][0], self.sim.seed["users"][0]
        self.app_id, self.fyers_id = app["client_id"], user["fyers_id"]
        self.credentials = {
            "client_id": app["client_id"],
            "secret_key": app["secret_key"],
            "pin": user["pin"],
        }

    def mint(self) -> SessionData:
        from brokers.simulators.fyers import REFRESH_TOKEN_LIFETIME, Token, _now

        with self.sim.lock:
            access = self.sim._issue_access_token(self.app_id, self.fyers_id)
            refresh = Token(
                secrets.token_urlsafe(40),
                self.app_id,
                self.fyers_id,
                _now() + REFRESH_TOKEN_LIFETIME,
            )
            self.sim.refresh_tokens[refresh.value] = refresh
        return SessionData(access.value, refresh_token=refresh.value)


MINTERS = {"matchtrade": _MatchTrader, "dxtrade": _DXtrade, "angel": _Angel, "fyers": _Fyers}


def _login(running: RunningSimulator, code: str, credentials: dict[str, str]) -> SessionData:
    """One real login, for the session details (account ids) every minted session shares."""
    adapter = registry.get(code)(credentials=credentials, base_url=running.url)
    try:
        return adapter.login()
    finally:
        adapter.close()
