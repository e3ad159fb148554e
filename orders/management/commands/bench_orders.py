"""Benchmark the order pipeline as it runs in production: gunicorn, a Celery worker, Redis, PG.

    DATABASE_URL=postgres://... REDIS_URL=redis://.../9 CELERY_BROKER_URL=redis://.../10 \\
        python manage.py bench_orders --orders 1000 --latency-ms 20 --fanout 100,500 --clients 8

Starts the Match-Trader simulator in this process (a broker over loopback HTTP, credential
login, configurable latency), a throwaway team with broker accounts and an API key, the web
server (gunicorn, gthread, as in the Procfile) and a Celery worker as subprocesses, then measures:

1. API accept latency (POST /api/orders/ -> 202) with one client, and with ``--clients``
   clients started together, and the accepted orders per second: once with the order worker
   paused (the API's own capacity; the worker then sends the backlog alone, its own rate), once
   with the worker sending meanwhile on the same cores. The concurrent clients run in
   ``--client-processes`` spawned processes (``bench_client``: stdlib ``http.client``, no
   Django), so neither the GIL of this process, which serves the simulator, nor a heavy HTTP
   library shapes the figure. Every client, here or there, keeps one connection alive. With
   the worker paused it also prints the CPU time each accepted order cost the web processes,
   the order worker, PostgreSQL, Redis, this process and the whole machine, and so how many
   orders/s the cores allow;
2. end-to-end latency (POST to the broker's acknowledgement recorded in the database) of orders
   sent one after another, split by the order's events into accept, queue and worker pickup,
   and broker call, beside the same orders sent as direct adapter calls in the same run: the
   ratio is the platform's overhead;
3. fan-out: one POST /api/order-groups/ to 100 and 500 accounts at ``--fanout-latency-ms``, time
   until every child is acknowledged, against one order's end-to-end time at that latency,
   and the CPU each child cost (web, order worker, PostgreSQL, Redis, the simulator, the
   machine): the least time the machine's cores allow for the whole group;
4. peak memory (VmHWM) of every web and worker process.

It prints the numbers and asserts nothing. Everything it created is deleted at the end.
"""

from __future__ import annotations

import copy
import http.client
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from queue import Empty

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections

from accounts import services as account_services
from accounts.models import Membership, User
from algoways.gunicorn import KEEPALIVE_REQUESTS
from brokers.adapters.base import OrderRequest, OrderType, Side
from brokers.models import BrokerAccount
from brokers.services import broker_account_connect, broker_account_create
from brokers.simulators.base import RunningSimulator
from brokers.simulators.matchtrade import MatchTraderSimulator
from orders.management.bench_client import ApiClient, client_process
from orders.models import EventSource, Order, OrderEvent, OrderGroup, OrderStatus

S = OrderStatus
UNANSWERED = (S.PENDING, S.SUBMITTING, S.UNKNOWN)
ACK_STATUSES = (S.OPEN, S.PARTIALLY_FILLED, S.FILLED)
#: Orders of the latency phases go round-robin over this many accounts, so no account comes
#: near Match-Trader's 500 requests a minute and no broker rate limit shapes the numbers.
POOL_ACCOUNTS = 20
SYMBOL, EXCHANGE, QUANTITY = "XAUUSD", "MTR", "0.01"
BIN = Path(sys.executable).parent


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def cpu_per(cpu: dict[str, float], count: int) -> str:
    """Each process's CPU seconds in ``cpu`` per one of ``count`` items, in ms."""
    return ", ".join(f"{name} {seconds / count * 1000:.1f} ms" for name, seconds in cpu.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += children
        frontier = children
    return tree


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """Every process whose command name is ``name`` (PostgreSQL's backends, Redis)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def machine_busy_seconds() -> float:
    """CPU time all cores spent on anything but idling, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, iowait = values[3], values[4]
    return (sum(values) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def python_loop_seconds() -> float:
    """Seconds this machine takes for 10^7 additions in a Python loop (in a function): its
    speed, for comparing runs on different machines (shared ones drift, too)."""
    started = time.perf_counter()
    total = 0
    for number in range(10**7):
        total += number
    return time.perf_counter() - started


class Subprocess:
    """A child process in its own session, its output in a temporary log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name = name
        self.hostname = ""  # a Celery worker's node name
        handle, path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        self.log_path = Path(path)
        self.process = subprocess.Popen(
            argv,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(handle)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise CommandError(f"The {self.name} exited early:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def peak_rss(self) -> list[float]:
        return [peak_rss_mib(pid) for pid in process_tree(self.process.pid)]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(5)
        self.log_path.unlink(missing_ok=True)


class Command(BaseCommand):
    help = "Benchmark order accept, end-to-end latency, fan-out and memory (PostgreSQL + Redis)."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=1000, help="orders for the accept test")
        parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
        parser.add_argument(
            "--client-processes",
            type=int,
            default=None,
            help="processes the concurrent clients run in, as threads (default: one per client)",
        )
        parser.add_argument("--latency-ms", type=int, default=20, help="broker latency")
        parser.add_argument("--e2e-orders", type=int, default=100, help="orders sent one by one")
        parser.add_argument("--fanout", default="100,500", help="account counts for fan-out")
        parser.add_argument("--fanout-latency-ms", type=int, default=50)
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--web-threads", type=int, default=4)
        parser.add_argument("--worker-pool", default="prefork", help="prefork, threads, solo")
        parser.add_argument("--worker-concurrency", type=int, default=2)
        parser.add_argument(
            "--fanout-threads",
            type=int,
            default=None,
            help="ORDERS_FANOUT_THREADS for the worker (default: the settings value)",
        )

    # Setup ---------------------------------------------------------------------------------

    def handle(self, *args, **options):
        self.check_environment()
        self.options = options
        fanouts = [int(n) for n in options["fanout"].split(",") if n.strip()]
        account_count = max([POOL_ACCOUNTS, *fanouts])
        self.simulator = MatchTraderSimulator(self.seed(account_count))
        self.running = RunningSimulator(self.simulator)
        self.processes: list[Subprocess] = []
        self.team = self.user = None
        started = time.monotonic()
        try:
            self.loop_seconds = python_loop_seconds()
            self.write(f"Setting up {account_count} Match-Trader accounts...")
            self.create_team(account_count)
            self.vacuum()
            self.start_processes()
            self.set_latency(options["latency_ms"])
            results = {"accept": self.bench_accept()}
            self.wait_housekeeping_idle()
            results["e2e"] = self.bench_end_to_end()
            if fanouts:
                self.set_latency(options["fanout_latency_ms"])
                self.wait_housekeeping_idle()
                results["fanout"] = self.bench_fanout(fanouts)
            results["memory"] = self.memory()
            self.report(results, time.monotonic() - started)
        except BaseException:
            for process in self.processes:
                self.stderr.write(f"--- {process.name} output ---\n{process.log()}")
            raise
        finally:
            for process in self.processes:
                process.stop()
            self.cleanup()
            self.running.stop()

    def check_environment(self) -> None:
        problems = []
        if connection.vendor != "postgresql":
            problems.append("DATABASE_URL must point at PostgreSQL (postgres://...)")
        if not settings.REDIS_URL:
            problems.append("REDIS_URL must point at Redis (redis://host:6379/9)")
        if not str(settings.CELERY_BROKER_URL).startswith(("redis://", "rediss://")):
            problems.append("CELERY_BROKER_URL must point at Redis (redis://host:6379/10)")
        if problems:
            raise CommandError(
                "bench_orders measures the production setup: " + "; ".join(problems) + "."
            )

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    @staticmethod
    def seed(count: int) -> dict:
        """One user per account, each with a balance no benchmark can exhaust."""
        seed = copy.deepcopy(MatchTraderSimulator.default_seed)
        template = seed["users"][0]["accounts"][0]
        seed["users"] = [
            {
                "email": f"bench{index}@example.com",
                "password": "Bench-Pass-1",
                "accounts": [
                    {
                        **template,
                        "tradingAccountId": str(900000 + index),
                        "uuid": str(uuid.UUID(int=index + 1)),
                        "tradingApiToken": f"tat-bench-{index}",
                        "balance": "1000000000",
                    }
                ],
            }
            for index in range(count)
        ]
        return seed

    def create_team(self, count: int) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.user = User.objects.create_user(
            username=f"bench-{suffix}", email=f"bench-{suffix}@example.com", password=None
        )
        self.team = account_services.team_create(
            name=f"Order bench {suffix}", owner=self.user, slug=f"bench-{suffix}"
        )
        membership = Membership.objects.get(user=self.user, team=self.team)
        _, self.api_key = account_services.api_key_create(membership=membership, name="bench")
        url = self.running.url

        def create(index: int) -> int:
            try:
                account = broker_account_create(
                    team=self.team,
                    broker="matchtrade",
                    label=f"Bench {index:04d}",
                    credentials={
                        "email": f"bench{index}@example.com",
                        "password": "Bench-Pass-1",
                        "broker_id": "0",
                        "trading_account_id": str(900000 + index),
                    },
                    base_url=url,
                )
                broker_account_connect(account=account)
                return account.pk
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=8) as pool:
            self.account_ids = list(pool.map(create, range(count)))
        self.pool_accounts = list(
            BrokerAccount.objects.filter(pk__in=self.account_ids[:POOL_ACCOUNTS])
            .select_related("session")
            .order_by("pk")
        )

    @staticmethod
    def vacuum() -> None:
        """VACUUM ANALYZE the order tables: every run inserts and deletes thousands of rows, and
        the dead ones left by earlier runs otherwise slow this run's queries."""
        tables = [Order._meta.db_table, OrderEvent._meta.db_table, OrderGroup._meta.db_table]
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {', '.join(tables)}")

    def child_env(self) -> dict[str, str]:
        env = {
            **os.environ,
            # Production mode: no DEBUG query log; the same keys, so credentials decrypt.
            "DEBUG": "0",
            "SECRET_KEY": settings.SECRET_KEY,
            "FERNET_KEYS": ",".join(settings.FERNET_KEYS),
            "LOG_LEVEL": "WARNING",
        }
        if self.options["fanout_threads"]:
            threads = self.options["fanout_threads"]
            env["ORDERS_FANOUT_THREADS"] = str(threads)
            env["DATABASE_POOL_MAX_SIZE"] = str(max(settings.DATABASE_POOL_MAX_SIZE, threads + 8))
        return env

    def start_processes(self) -> None:
        env = self.child_env()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.web = Subprocess(
            "web",
            [
                str(BIN / "gunicorn"),
                "-c",
                "python:algoways.gunicorn",
                "algoways.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(self.options["web_workers"]),
                "--threads",
                str(self.options["web_threads"]),
                "--worker-class",
                "gthread",
            ],
            env,
        )
        self.processes.append(self.web)
        # As in the Procfile: the order queue on its own worker, housekeeping (fill-price reads,
        # syncs, sweeps) on another, so a housekeeping backlog never delays an order.
        self.worker = self.start_worker(
            "worker", "orders", self.options["worker_pool"], self.options["worker_concurrency"]
        )
        self.housekeeping = self.start_worker("housekeeping", "housekeeping", "prefork", 1)
        self.wait_for_web()
        for worker in (self.worker, self.housekeeping):
            self.wait_for_worker(worker)

    def start_worker(self, name: str, queue: str, pool: str, concurrency: int) -> Subprocess:
        hostname = f"bench-{name}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        worker = Subprocess(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "algoways",
                "worker",
                "-Q",
                queue,
                "--pool",
                pool,
                "-c",
                str(concurrency),
                "-n",
                hostname,
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            self.child_env(),
        )
        worker.hostname = hostname
        self.processes.append(worker)
        return worker

    def wait_for_web(self) -> None:
        client = self.api_client(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.web.check()
            try:
                if client.request("GET", "/api/orders/")[1] == 200:
                    return
            except (OSError, http.client.HTTPException):  # not listening yet, or still booting
                pass
            time.sleep(0.2)
        raise CommandError(f"The web server did not answer in 30s:\n{self.web.log()}")

    def wait_for_worker(self, worker: Subprocess) -> None:
        from algoways.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            worker.check()
            if app.control.ping(destination=[worker.hostname], timeout=0.5):
                return
        raise CommandError(f"The Celery {worker.name} did not answer in 60s:\n{worker.log()}")

    def api_client(self, *, timeout: float = 30) -> ApiClient:
        return ApiClient(self.base_url, self.api_key, timeout=timeout)

    def set_latency(self, latency_ms: int) -> None:
        with self.simulator.lock:
            self.simulator.faults.latency_ms = latency_ms

    def order_body(self, index: int) -> bytes:
        order = {
            "account": self.pool_accounts[index % len(self.pool_accounts)].pk,
            "symbol": SYMBOL,
            "exchange": EXCHANGE,
            "side": "BUY",
            "quantity": QUANTITY,
            "order_type": "MARKET",
        }
        return json.dumps(order).encode()

    # Measurements ------------------------------------------------------------------------

    def post_order(self, client: ApiClient, index: int, **headers) -> tuple[float, dict]:
        elapsed, status, content = client.request(
            "POST", "/api/orders/", self.order_body(index), headers or None
        )
        if status not in (201, 202):
            raise CommandError(f"POST /api/orders/ -> {status}: {content.decode(errors='replace')}")
        return elapsed, json.loads(content)

    def bench_accept(self) -> dict:
        self.write("Accept latency and throughput...")
        self.warm_up_web()
        client = self.api_client()
        single = [self.post_order(client, index)[0] for index in range(100)]
        client.close()
        self.wait_answered(timeout=120)

        total = self.options["orders"]
        bodies = [self.order_body(index) for index in range(total)]
        # The API's own capacity: the order worker stops taking orders meanwhile, as it would
        # run on other machines in production; then it sends the whole backlog alone.
        self.order_consumer("cancel_consumer")
        alone, alone_wall, alone_cpu = self.concurrent_posts(bodies)
        self.order_consumer("add_consumer")
        backlog_drain = self.wait_answered(timeout=300)
        # Everything on these 2 cores at once: the worker sends while the API accepts.
        latencies, wall, _ = self.concurrent_posts(bodies)
        drain = self.wait_answered(timeout=300)
        return {
            "single": single,
            "alone": alone,
            "alone_wall": alone_wall,
            "alone_cpu": alone_cpu,
            "backlog_drain": backlog_drain,
            "latencies": latencies,
            "wall": wall,
            "total": total,
            "drain": drain + wall,
        }

    def warm_up_web(self) -> None:
        """Orders from as many connections at once as the web has threads, each connection
        ending after KEEPALIVE_REQUESTS, so every web worker serves its cold first requests
        (connections, caches, Celery's task registry: ~120 ms for the first) before measuring.

        One connection alone reaches one worker: the other's first request then lands among
        the measured ones (it was the single-client p99).
        """
        connections = self.options["web_workers"] * self.options["web_threads"]

        def post_orders(number: int) -> None:
            client = self.api_client()
            try:
                for index in range(2 * KEEPALIVE_REQUESTS):
                    self.post_order(client, number + index * connections)
            finally:
                client.close()

        with ThreadPoolExecutor(max_workers=connections) as pool:
            list(pool.map(post_orders, range(connections)))

    def order_consumer(self, action: str) -> None:
        """Stop (``cancel_consumer``) or resume (``add_consumer``) the worker's order queue."""
        from algoways.celery import app

        replies = getattr(app.control, action)(
            "orders", destination=[self.worker.hostname], reply=True, timeout=10
        )
        if not replies:
            raise CommandError(f"The order worker did not answer {action}.")

    def client_layout(self) -> tuple[int, int]:
        """(clients, processes they run in)."""
        # One process per client by default: on 2 cores it measured a little more throughput
        # than 2 processes of 4 threads (within run-to-run noise). Processes start before the
        # barrier, so their start-up is outside the measurement.
        clients = self.options["clients"]
        return clients, min(self.options["client_processes"] or clients, clients)

    def concurrent_posts(self, bodies: list[bytes]) -> tuple[list[float], float, dict]:
        """POST ``bodies`` from ``--clients`` clients in their own processes, all starting together.

        Returns every request's latency, the seconds from the common start to the last answer,
        and the CPU seconds used meanwhile (``cpu_used``).
        """
        clients, processes = self.client_layout()
        # spawn, not fork: this process runs threads (the simulator's, Celery's), and a client
        # process needs nothing of it but the bench_client module.
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(clients + 1)
        results = context.Queue()
        shares = [bodies[index::clients] for index in range(clients)]
        children = [
            context.Process(
                target=client_process,
                args=(
                    self.base_url,
                    self.api_key,
                    "/api/orders/",
                    shares[number::processes],
                    barrier,
                    results,
                ),
                daemon=True,
            )
            for number in range(processes)
        ]
        for child in children:
            child.start()
        outcomes = []
        try:
            try:
                barrier.wait(timeout=120)
            except threading.BrokenBarrierError:
                raise CommandError("The client processes did not start within 120s.")
            released = time.perf_counter()
            cpu_before = self.cpu_used()
            while len(outcomes) < clients:
                try:
                    outcomes.append(results.get(timeout=1))
                except Empty:
                    self.web.check()
                    if not any(child.is_alive() for child in children):
                        raise CommandError("A client process died without reporting.")
            cpu = self.cpu_used_since(cpu_before)
        finally:
            for child in children:
                child.join(10)
                if child.is_alive():
                    child.kill()
        errors = [error for *_, error in outcomes if error]
        if errors:
            raise CommandError(errors[0])
        latencies = [latency for mine, *_ in outcomes for latency in mine]
        # The load clients' own CPU, before the machine's: the rest of the machine's is ours.
        cpu = {"load clients": sum(used for _, _, used, _ in outcomes), **cpu}
        return latencies, max(finished for _, finished, _, _ in outcomes) - released, cpu

    def cpu_used(self) -> dict[str, float]:
        """CPU seconds used so far by the web processes, the order worker's, PostgreSQL, Redis,
        this process (the simulator, and the benchmark's own waiting) and the whole machine."""
        return {
            "web": cpu_seconds(process_tree(self.web.process.pid)),
            "order worker": cpu_seconds(process_tree(self.worker.process.pid)),
            "PostgreSQL": cpu_seconds(pids_named("postgres")),
            "Redis": cpu_seconds(pids_named("redis-server")),
            "simulator": time.process_time(),
            "machine": machine_busy_seconds(),
        }

    def cpu_used_since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds used since ``before`` (a ``cpu_used``), by the same names."""
        now = self.cpu_used()
        return {name: now[name] - before[name] for name in before}

    def wait_answered(self, *, timeout: float) -> float:
        """Seconds until no order of the team awaits its broker answer."""
        started = time.monotonic()
        unanswered = Order.objects.filter(team=self.team, status__in=UNANSWERED)
        while unanswered.exists():
            if time.monotonic() - started > timeout:
                raise CommandError(f"{unanswered.count()} orders unanswered after {timeout}s")
            self.worker.check()
            time.sleep(0.02)
        return time.monotonic() - started

    def wait_housekeeping_idle(self, timeout: float = 180) -> None:
        """Wait until the housekeeping worker has read the fill prices of the orders placed so
        far (one read per account per second): reads still running would otherwise share the
        cores with the next phase, and by a different amount in every run."""
        started = time.monotonic()
        unread = Order.objects.filter(team=self.team, status=S.FILLED, average_price__isnull=True)
        while unread.exists():
            if time.monotonic() - started > timeout:
                self.write(f"  ({unread.count()} fill prices still unread after {timeout:.0f}s)")
                return
            self.housekeeping.check()
            time.sleep(0.2)
        self.write(f"  (housekeeping idle after {time.monotonic() - started:.1f}s)")

    def end_to_end(self, count: int) -> dict[str, list[float]]:
        """``count`` orders one after another, each POST waiting for the broker's answer.

        Returns ``timings`` of the orders, and under "observed" each POST -> answered response.
        """
        client = self.api_client()
        sent: dict[int, float] = {}
        observed = []
        for index in range(count):
            started_wall = time.time()
            elapsed, data = self.post_order(client, index, Prefer="wait=10")
            sent[data["id"]] = started_wall
            observed.append(elapsed)
        client.close()
        self.wait_answered(timeout=60)
        return {**self.timings(sent), "observed": observed}

    def timings(self, sent: dict[int, float]) -> dict[str, list[float]]:
        """Per order, seconds from ``sent`` (a time.time()) to the broker's ack recorded.

        Also, from the order's events, the segments of that time: "accept" up to the creation
        event, "queue" from there to SUBMITTING (commit, Redis, a worker's pickup and row lock),
        "broker" from there to the acknowledgement (the broker call and recording its answer),
        for the orders that have all three events. Event timestamps are this machine's clock,
        the same one as ``sent``.
        """
        accepted: dict[int, float] = {}
        submitting: dict[int, float] = {}
        acked: dict[int, float] = {}
        events = (
            OrderEvent.objects.filter(order_id__in=list(sent))
            .order_by("created_at", "pk")
            .values_list("order_id", "from_status", "to_status", "source", "created_at")
        )
        for order_id, from_status, to_status, source, created_at in events:
            if not from_status:
                accepted[order_id] = created_at.timestamp()
            elif to_status == S.SUBMITTING:
                submitting.setdefault(order_id, created_at.timestamp())
            elif source == EventSource.BROKER and to_status in ACK_STATUSES:
                acked.setdefault(order_id, created_at.timestamp())
        missing = set(sent) - set(acked)
        if missing:
            raise CommandError(f"{len(missing)} orders were never acknowledged by the broker")
        complete = sent.keys() & accepted.keys() & submitting.keys()
        return {
            "ack": [acked[order_id] - started for order_id, started in sent.items()],
            "accept": [accepted[order_id] - sent[order_id] for order_id in complete],
            "queue": [submitting[order_id] - accepted[order_id] for order_id in complete],
            "broker": [acked[order_id] - submitting[order_id] for order_id in complete],
        }

    def direct_calls(self, count: int, *, read_fills: bool) -> list[float]:
        """The same orders straight through the adapter, one keep-alive adapter per account."""
        adapters = []
        for account in self.pool_accounts:
            adapters.append(
                account.adapter_class(
                    credentials=account.all_credentials(),
                    session=account.session.to_session_data(),
                    base_url=account.base_url,
                )
            )
        timings = []
        try:
            for index in range(count):
                adapter = adapters[index % len(adapters)]
                request = OrderRequest(
                    symbol=SYMBOL,
                    exchange=EXCHANGE,
                    side=Side.BUY,
                    quantity=Decimal(QUANTITY),
                    order_type=OrderType.MARKET,
                    client_order_id=adapter.new_client_order_id(),
                )
                started = time.perf_counter()
                ack = adapter.place_order(request)
                if read_fills:
                    adapter.order_status(ack.broker_order_id)
                timings.append(time.perf_counter() - started)
        finally:
            for adapter in adapters:
                adapter.close()
        return timings

    def bench_end_to_end(self) -> dict:
        count = self.options["e2e_orders"]
        self.write(f"End to end, {count} orders one by one, beside direct adapter calls...")
        self.end_to_end(10)  # warm-up
        results = self.end_to_end(count)
        results["direct"] = self.direct_calls(count, read_fills=False)
        results["direct_fills"] = self.direct_calls(count, read_fills=True)
        return results

    def bench_fanout(self, sizes: list[int]) -> dict:
        self.write(f"Fan-out to {sizes} accounts at {self.options['fanout_latency_ms']} ms...")
        results = {"single": self.end_to_end(20)["ack"], "groups": []}
        for size in sizes:
            # The fill prices of the orders just acknowledged are read a second later: not
            # while this group is being sent.
            self.wait_housekeeping_idle()
            body = {
                "accounts": self.account_ids[:size],
                "order": {
                    "symbol": SYMBOL,
                    "exchange": EXCHANGE,
                    "side": "BUY",
                    "quantity": QUANTITY,
                    "order_type": "MARKET",
                },
            }
            started_wall = time.time()
            cpu_before = self.cpu_used()
            accepted, status, content = self.api_client(timeout=120).request(
                "POST", "/api/order-groups/", json.dumps(body).encode()
            )
            if status != 202:
                raise CommandError(
                    f"POST /api/order-groups/ -> {status}: {content.decode(errors='replace')}"
                )
            group_id = json.loads(content)["id"]
            self.wait_answered(timeout=300)
            cpu = self.cpu_used_since(cpu_before)
            children = dict.fromkeys(
                Order.objects.filter(group_id=group_id).values_list("pk", flat=True), started_wall
            )
            delays = self.timings(children)["ack"]
            results["groups"].append(
                {
                    "size": size,
                    "accepted": accepted,
                    "all": max(delays),
                    "p50": percentile(delays, 50),
                    "cpu": cpu,
                }
            )
        return results

    def memory(self) -> dict:
        return {
            "web": self.web.peak_rss(),
            "worker": self.worker.peak_rss(),
            "housekeeping": self.housekeeping.peak_rss(),
        }

    # Report ------------------------------------------------------------------------------

    def report(self, results: dict, elapsed: float) -> None:
        o = self.options
        accept, e2e = results["accept"], results["e2e"]
        clients, processes = self.client_layout()
        lines = [
            "",
            f"bench_orders: Match-Trader simulator, PostgreSQL, Redis; web gunicorn "
            f"{o['web_workers']}x{o['web_threads']} gthread; worker {o['worker_pool']} "
            f"-c {o['worker_concurrency']} on the orders queue, prefork -c 1 on housekeeping; "
            f"{os.cpu_count()} CPUs; Python {platform.python_version()} "
            f"({os.path.realpath(sys.executable)}): a loop of 10^7 additions took "
            f"{self.loop_seconds:.2f}s",
            "",
            "API accept (POST /api/orders/ -> 202)",
            f"  1 client, keep-alive      p50 {ms(percentile(accept['single'], 50))}"
            f"   p90 {ms(percentile(accept['single'], 90))}"
            f"   p99 {ms(percentile(accept['single'], 99))}",
            f"  {clients} clients in {processes} processes, {accept['total']} orders,"
            f" order worker paused   p50 {ms(percentile(accept['alone'], 50))}"
            f"   p99 {ms(percentile(accept['alone'], 99))}"
            f"   throughput {accept['total'] / accept['alone_wall']:.0f} orders/s (target >= 300)",
            "    CPU per accepted order: "
            + cpu_per(accept["alone_cpu"], accept["total"])
            + f" (the machine's {os.cpu_count()} cores allow"
            f" {os.cpu_count() * accept['total'] / accept['alone_cpu']['machine']:.0f} orders/s)",
            f"    then the worker alone sent that backlog in {accept['backlog_drain']:.2f}s"
            f" ({accept['total'] / accept['backlog_drain']:.0f} orders/s)",
            f"  {clients} clients in {processes} processes, {accept['total']} orders,"
            f" worker sending meanwhile   p50 {ms(percentile(accept['latencies'], 50))}"
            f"   p99 {ms(percentile(accept['latencies'], 99))}"
            f"   throughput {accept['total'] / accept['wall']:.0f} orders/s",
            f"    all {accept['total']} at the broker after {accept['drain']:.2f}s"
            f" ({accept['total'] / accept['drain']:.0f} orders/s sent by the worker)",
            "",
            f"End to end at {o['latency_ms']} ms broker latency,"
            f" {len(e2e['ack'])} orders one by one",
        ]
        ack_p50 = percentile(e2e["ack"], 50)
        direct_p50 = percentile(e2e["direct"], 50)
        fills_p50 = percentile(e2e["direct_fills"], 50)
        lines += [
            f"  POST -> ack recorded        p50 {ms(ack_p50)}"
            f"   p99 {ms(percentile(e2e['ack'], 99))}",
            f"  POST -> answer (wait=10)    p50 {ms(percentile(e2e['observed'], 50))}"
            f"   p99 {ms(percentile(e2e['observed'], 99))}",
            f"  where the time goes (p50): accept {ms(percentile(e2e['accept'], 50))},"
            f" queue+pickup {ms(percentile(e2e['queue'], 50))},"
            f" broker call+record {ms(percentile(e2e['broker'], 50))}",
            f"  direct place_order          p50 {ms(direct_p50)}"
            f"   p99 {ms(percentile(e2e['direct'], 99))}",
            f"  direct place + fills read   p50 {ms(fills_p50)}"
            f"   p99 {ms(percentile(e2e['direct_fills'], 99))}",
            f"  overhead: e2e / direct place {ack_p50 / direct_p50:.2f}x  (target <= 1.5x);"
            f" e2e / direct place+fills {ack_p50 / fills_p50:.2f}x",
        ]
        if "fanout" in results:
            fanout = results["fanout"]
            single = percentile(fanout["single"], 50)
            lines += [
                "",
                f"Fan-out at {o['fanout_latency_ms']} ms broker latency"
                f" (one order end to end: p50 {ms(single)})",
            ]
            for group in fanout["groups"]:
                lines.append(
                    f"  {group['size']:>4} accounts   accepted in {ms(group['accepted'])}"
                    f"   all acknowledged {ms(group['all'])}"
                    f" ({group['all'] / single:.1f}x one order; target <= 10x)"
                    f"   child p50 {ms(group['p50'])}"
                )
                lines.append(
                    "    CPU per child: "
                    + cpu_per(group["cpu"], group["size"])
                    + f" (on {os.cpu_count()} cores: at least"
                    f" {group['cpu']['machine'] / os.cpu_count():.2f}s for all)"
                )
        memory = results["memory"]
        lines += [
            "",
            "Peak memory (VmHWM per process, MiB)",
            f"  web:    {', '.join(f'{v:.0f}' for v in memory['web'])}  (master first)",
            f"  worker: {', '.join(f'{v:.0f}' for v in memory['worker'])}  (main first)",
            f"  housekeeping worker: {', '.join(f'{v:.0f}' for v in memory['housekeeping'])}",
            "",
            f"Finished in {elapsed:.0f}s.",
        ]
        self.write("\n".join(lines))

    def cleanup(self) -> None:
        self.purge_queues()
        if self.team is None:
            return
        Order.objects.filter(team=self.team).delete()  # orders protect their accounts
        OrderGroup.objects.filter(team=self.team).delete()
        self.team.delete()
        if self.user is not None:
            self.user.delete()

    @staticmethod
    def purge_queues() -> None:
        """Drop tasks left for this run's orders (fill-price reads, follow-up syncs), so the
        next run's workers do not spend its cores on them. Run after the workers stopped (they
        hand back what they held): the broker database given to the benchmark is its own."""
        from algoways.celery import app

        with app.connection_for_write() as connection:
            for queue in ("orders", "housekeeping"):
                connection.default_channel.queue_purge(queue)
