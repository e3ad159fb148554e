"""HTTP clients for ``bench_orders``: stdlib only, so client processes start without Django.

``ApiClient`` is one keep-alive ``http.client`` connection that times each request with
``time.perf_counter``. ``client_process`` is the entry point of one load-generator process: it
runs its share of the clients, a thread each, released together by a barrier shared with the
benchmark, and puts each client's timings on a queue.
"""

from __future__ import annotations

import http.client
import select
import threading
import time
from urllib.parse import urlsplit


class ApiClient:
    """One keep-alive connection to the platform's API, authenticated with an API key."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30):
        url = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        self.headers = {"Authorization": f"Api-Key {api_key}", "Content-Type": "application/json"}

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[float, int, bytes]:
        """(seconds, status, body) of one request, sent on the kept-alive connection."""
        sock = self.connection.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            # Readable between two responses means the server closed the idle connection
            # (gunicorn keeps one alive for 2 s): open a new one rather than fail the request.
            self.connection.close()
        headers = self.headers if headers is None else {**self.headers, **headers}
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
            content = response.read()
        except BaseException:
            # http.client refuses further requests on a connection left mid-exchange.
            self.connection.close()
            raise
        return time.perf_counter() - started, response.status, content

    def close(self) -> None:
        self.connection.close()


def client_process(
    base_url: str,
    api_key: str,
    path: str,
    bodies_per_client: list[list[bytes]],
    barrier,
    results,
) -> None:
    """Run one client thread per list of bodies; each puts (latencies, finished, cpu, error):
    ``cpu`` is the CPU seconds its own thread used from the barrier's release to the end."""
    threads = [
        threading.Thread(target=_client, args=(base_url, api_key, path, bodies, barrier, results))
        for bodies in bodies_per_client
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _client(base_url, api_key, path, bodies, barrier, results) -> None:
    """POST each body in turn on one connection; stop at the first answer other than 201/202."""
    client = ApiClient(base_url, api_key)
    latencies: list[float] = []
    error = None
    cpu_started = None
    try:
        barrier.wait(timeout=120)
        cpu_started = time.thread_time()
        for body in bodies:
            elapsed, status, content = client.request("POST", path, body)
            if status not in (201, 202):
                error = f"POST {path} -> {status}: {content.decode(errors='replace')}"
                break
            latencies.append(elapsed)
    except Exception as exc:
        error = f"POST {path} failed: {exc!r}"
    # perf_counter is CLOCK_MONOTONIC on Linux, one clock for every process on the machine,
    # so the benchmark can compare this moment with the one it released the barrier at.
    finished = time.perf_counter()
    cpu = time.thread_time() - cpu_started if cpu_started is not None else 0.0
    client.close()
    results.put((latencies, finished, cpu, error))
