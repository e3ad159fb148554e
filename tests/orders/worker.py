"""Real processes for end-to-end order tests: a private Redis server and Celery workers.

The tests that use these run the whole pipeline as production does: the API in the test
process publishes to Redis after commit, a separate ``celery worker`` process (prefork, like the
Procfile) picks the task up, reads the committed rows from the PostgreSQL *test* database and
calls a broker simulator served by the test process on loopback.

Redis is a private ``redis-server`` on a free loopback port, one per test module: the tests stop
and flush it freely without touching a Redis server anyone else uses (CI's, another xdist
worker's). Every process started here is started in its own session and stopped by its own id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import kombu.pools

BASE_DIR = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")

#: Short timings so that retries, reconciliation and sweeps happen within seconds in a test.
WORKER_ENV = {
    "CELERY_VISIBILITY_TIMEOUT": "30",
    "ORDERS_RECONCILE_DELAY_SECONDS": "0.5",
    "ORDERS_RECONCILE_GRACE_SECONDS": "1",
    "ORDERS_STUCK_PENDING_SECONDS": "1",
    "ORDERS_RETRY_BASE_SECONDS": "0.2",
    "ORDERS_RETRY_MAX_SECONDS": "2",
    "BROKER_CONNECT_TIMEOUT": "1",
    "BROKER_READ_TIMEOUT": "5",
    "LOG_LEVEL": "WARNING",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.1, message: str = ""):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"Still not true after {timeout}s")
        time.sleep(interval)


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for another process from a Django connection's settings (the test DB)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"


def _stop(process: subprocess.Popen, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # pool children left behind, if any
    except ProcessLookupError:
        pass
    process.wait(5)


class RedisServer:
    """A throwaway ``redis-server`` on loopback: no persistence, stoppable and restartable."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=10, message=f"redis-server on {self.port} not up")
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def flush(self) -> None:
        self.client().flushall()


class CeleryWorker:
    """``celery -A algoways worker`` on the orders and housekeeping queues, as the Procfile runs
    it, with its output in a log file (shown by ``log()`` when a test fails)."""

    def __init__(self, *, env: dict[str, str], concurrency: int = 2, pool: str = "prefork"):
        self.env = {**os.environ, **WORKER_ENV, **env}
        self.concurrency = concurrency
        self.pool = pool
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        handle, path = tempfile.mkstemp(prefix="celery-worker-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60.0) -> CeleryWorker:
        self.log_path.write_text("")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(CELERY),
                    "-A",
                    "algoways",
                    "worker",
                    "-Q",
                    "orders,housekeeping",
                    "-c",
                    str(self.concurrency),
                    "--pool",
                    self.pool,
                    "-n",
                    self.name,
                    "-l",
                    "INFO",  # for the "ready." line; the platform's own loggers stay at WARNING
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            self._ready,
            timeout=timeout,
            interval=0.2,
            message=f"The Celery worker did not start:\n{self.log()}",
        )
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"The Celery worker exited:\n{self.log()}")
        return " ready." in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:]

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        """The pool processes (direct children of the worker's main process)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == self.pid:
                found.append(int(entry.name))
        return found

    def kill9(self) -> None:
        """SIGKILL the whole worker, main process and pool, as a crash or an OOM kill would."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


@contextmanager
def celery_publishing_to(broker_url: str, *, visibility_timeout: int = 30):
    """Make this process's Celery app publish to ``broker_url`` for real (not eagerly)."""
    from algoways.celery import app

    saved = {
        name: app.conf[name]
        for name in ("broker_url", "broker_transport_options", "task_always_eager")
    }

    def reset_pools():
        # The connection and producer pools are built on first use from the broker URL, and
        # kombu keeps them in a registry keyed by that URL: close and forget them all.
        kombu.pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    # Celery prefers the CELERY_BROKER_URL environment variable over its configuration.
    saved_environment = os.environ.pop("CELERY_BROKER_URL", None)
    app.conf.broker_url = broker_url
    app.conf.broker_transport_options = {"visibility_timeout": visibility_timeout}
    app.conf.task_always_eager = False
    reset_pools()
    try:
        with app.connection_for_write() as connection:
            used = f"{connection.transport.driver_type}://{connection.hostname}:{connection.port}"
            assert broker_url.startswith(used), (used, broker_url)
        yield app
    finally:
        reset_pools()
        for name, value in saved.items():
            app.conf[name] = value
        if saved_environment is not None:
            os.environ["CELERY_BROKER_URL"] = saved_environment
