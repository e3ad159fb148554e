"""HTTP plumbing, test controls and fault injection shared by every broker simulator.

A simulator subclasses ``Simulator``, declares its routes with ``@route(method, pattern)`` and
speaks its broker's exact wire format. This module gives all of them, identically:

- a threaded HTTP server on loopback (``serve()`` / ``start_in_thread()``);
- latency (``--latency-ms``) and faults: an error rate, bursts of 429, slow responses, and
  accept-then-hang (the order is recorded in the ledger, then the connection is dropped without
  an answer);
- a ledger of every order received, with its client tag, for exactly-once assertions;
- test controls under ``/__sim__/``:
    GET  /__sim__/health             -> {"ok": true}
    GET  /__sim__/ledger             -> {"orders": [...]}
    POST /__sim__/faults             JSON: latency_ms, error_rate, error_status, rate_limit_burst,
                                      retry_after, slow_ms, hang_next_orders, hang_seconds
    POST /__sim__/reset              back to the seed, faults cleared
    POST /__sim__/expire-sessions    every issued token stops working
    POST /__sim__/prices             JSON {"<instrument key>": "123.45", ...}: move the market
"""

from __future__ import annotations

import copy
import json
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

#: India Standard Time (Kite, Angel and Fyers run their sessions and markets in it).
IST = timezone(timedelta(hours=5, minutes=30), "IST")


class DropConnection(Exception):
    """Raised by a handler to close the socket without sending any response."""


@dataclass
class Request:
    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # from the route pattern

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body, parse_float=Decimal)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def cookie(self, name: str) -> str | None:
        for part in self.header("cookie").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str -> text/html; bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


def route(method: str, pattern: str) -> Callable:
    """Declare a handler for ``method`` on paths matching ``pattern`` ({name}: one segment)."""
    regex = re.compile(
        "^" + re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", pattern) + "$"
    )

    def decorate(func: Callable) -> Callable:
        func._route = (method.upper(), regex)
        return func

    return decorate


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Real brokers send JSON numbers; the shortest float repr keeps a price's digits.
        return float(value)
    raise TypeError(f"Not JSON serializable: {type(value)}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_json_default).encode()


@dataclass
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit_burst: int = 0
    retry_after: int = 1
    slow_ms: int = 0
    hang_next_orders: int = 0
    hang_seconds: float = 30.0


class Simulator:
    """Base class of the broker simulators. Subclasses set ``name`` and ``default_seed``."""

    name = ""
    default_seed: dict = {}

    def __init__(self, seed: dict | None = None, *, latency_ms: int = 0, random_seed: int = 7):
        self.seed = copy.deepcopy(seed if seed is not None else self.default_seed)
        self.lock = threading.RLock()
        self.random = random.Random(random_seed)
        self.initial_latency_ms = latency_ms
        self.routes = [
            (func._route[0], func._route[1], func)
            for func in (getattr(self, name) for name in dir(self))
            if callable(func) and hasattr(func, "_route")
        ]
        self.reset()

    # State -----------------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.faults = Faults(latency_ms=self.initial_latency_ms)
            self.ledger: list[dict] = []
            #: (arrival time, method, path) of recent API requests, for counting logins and
            #: measuring the request rate a client really produced.
            self.requests_seen: deque[tuple[float, str, str]] = deque(maxlen=100_000)
            self.load_seed(copy.deepcopy(self.seed))

    def load_seed(self, seed: dict) -> None:
        """Build users, apps, instruments and accounts from the seed. Subclasses implement."""
        raise NotImplementedError

    def expire_sessions(self) -> None:
        """Invalidate every issued token. Subclasses implement."""
        raise NotImplementedError

    def set_prices(self, prices: dict[str, Decimal]) -> None:
        """Move the market. Subclasses with an engine implement."""
        raise NotImplementedError

    def record_order(self, *, client_tag: str, broker_order_id: str, **details: Any) -> None:
        """Append to the ledger: every order the broker received, whatever became of it."""
        with self.lock:
            self.ledger.append(
                {
                    "client_tag": client_tag,
                    "broker_order_id": broker_order_id,
                    "received_at": time.time(),
                    **{k: str(v) if isinstance(v, Decimal) else v for k, v in details.items()},
                }
            )

    def hang_if_asked(self) -> None:
        """Accept-then-hang: call after recording an order; may never answer."""
        with self.lock:
            if self.faults.hang_next_orders <= 0:
                return
            self.faults.hang_next_orders -= 1
            seconds = self.faults.hang_seconds
        time.sleep(seconds)
        raise DropConnection()

    # Broker-specific error bodies used by the fault injector --------------------------------

    def rate_limited_response(self, retry_after: int) -> Response:
        return Response(429, {"message": "Too many requests"}, {"Retry-After": str(retry_after)})

    def server_error_response(self, status: int) -> Response:
        return Response(status, {"message": "Internal server error"})

    # Dispatch --------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/__sim__/"):
            return self._control(request)
        faults = self.faults
        with self.lock:
            self.requests_seen.append((time.time(), request.method, request.path))
            burst = faults.rate_limit_burst > 0
            if burst:
                faults.rate_limit_burst -= 1
            fail = faults.error_rate > 0 and self.random.random() < faults.error_rate
        delay = faults.latency_ms + faults.slow_ms
        if delay:
            time.sleep(delay / 1000)
        if burst:
            return self.rate_limited_response(faults.retry_after)
        if fail:
            return self.server_error_response(faults.error_status)
        for method, regex, handler in self.routes:
            match = regex.match(request.path)
            if match and method == request.method:
                request.params = {k: unquote(v) for k, v in match.groupdict().items()}
                return handler(request)
        return self.not_found_response(request)

    def not_found_response(self, request: Request) -> Response:
        return Response(404, {"message": f"No route {request.method} {request.path}"})

    def _control(self, request: Request) -> Response:
        action = request.path[len("/__sim__/") :]
        if action == "health":
            return Response(200, {"ok": True, "simulator": self.name})
        if action == "ledger":
            with self.lock:
                return Response(200, {"orders": list(self.ledger)})
        if request.method != "POST":
            return Response(405, {"message": "POST only"})
        if action == "faults":
            with self.lock:
                for key, value in request.json().items():
                    if not hasattr(self.faults, key):
                        return Response(400, {"message": f"Unknown fault {key}"})
                    setattr(self.faults, key, type(getattr(self.faults, key))(value))
            return Response(200, {"ok": True})
        if action == "reset":
            self.reset()
            return Response(200, {"ok": True})
        if action == "expire-sessions":
            with self.lock:
                self.expire_sessions()
            return Response(200, {"ok": True})
        if action == "prices":
            self.set_prices({k: Decimal(str(v)) for k, v in request.json().items()})
            return Response(200, {"ok": True})
        return Response(404, {"message": f"Unknown control {action}"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    simulator: Simulator

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            raw_query=parts.query,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response = self.server.simulator.handle(request)
        except DropConnection:
            self.close_connection = True
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        body = response.body
        content_type = response.content_type
        if isinstance(body, (dict, list)):
            payload = dumps(body)
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            payload = body.encode()
            content_type = content_type or "text/html; charset=utf-8"
        else:
            payload = body or b""
            content_type = content_type or "application/octet-stream"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0):
        self.simulator = simulator
        self._open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def process_request(self, request, client_address):
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the body back
        # until the client's delayed ACK (40 ms) on a kept-alive connection.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._open_connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        """A client that hung up before its answer (a timeout, a stopped worker) is normal here;
        anything else is a simulator bug and is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._open_connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening and cut every kept-alive connection, as a broker going away would."""
        super().server_close()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Cut every open connection: the next request opens a new one (a new handler)."""
        with self._connections_lock:
            connections = list(self._open_connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class RunningSimulator:
    """A simulator serving on loopback in a background thread (for tests and benchmarks)."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0):
        self.simulator = simulator
        self.server = SimulatorServer(simulator, host, port)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"sim-{simulator.name}", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
