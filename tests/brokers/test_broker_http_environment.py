"""Broker HTTP and the environment: proxies and NO_PROXY honoured, read once; no ~/.netrc."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from brokers.adapters import base
from brokers.adapters.base import BrokerAdapter


class RecordingServer:
    """A loopback HTTP server that answers ``{}`` and records each request line and header."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorded.append((self.path, dict(self.headers)))
                body = json.dumps({}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class PingAdapter(BrokerAdapter):
    code = "ping"

    def ping(self):
        return self._json(self._request("GET", "/ping"))


@pytest.fixture
def server():
    running = RecordingServer()
    yield running
    running.stop()


@pytest.fixture
def clean_environment(monkeypatch):
    """No proxy settings from the machine; the once-per-process reads start afresh."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    base.environment_proxies.cache_clear()
    base.environment_ca_bundle.cache_clear()
    yield monkeypatch
    base.environment_proxies.cache_clear()
    base.environment_ca_bundle.cache_clear()


def test_a_proxy_from_the_environment_carries_broker_requests(server, clean_environment):
    clean_environment.setenv("HTTP_PROXY", server.url)
    adapter = PingAdapter(credentials={}, base_url="http://broker.example")
    try:
        adapter.ping()
    finally:
        adapter.close()
    # A proxied request names the whole URL; only the proxy (on loopback) was contacted.
    assert [path for path, _ in server.requests] == ["http://broker.example/ping"]


def test_no_proxy_sends_straight_to_the_broker(server, clean_environment):
    clean_environment.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    clean_environment.setenv("NO_PROXY", "127.0.0.1")
    adapter = PingAdapter(credentials={}, base_url=server.url)
    try:
        adapter.ping()
    finally:
        adapter.close()
    assert [path for path, _ in server.requests] == ["/ping"]


def test_netrc_credentials_are_never_sent_to_a_broker(server, clean_environment, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password their-secret\n")
    netrc.chmod(0o600)
    clean_environment.setenv("NETRC", str(netrc))
    requests.get(server.url + "/plain", timeout=5)  # plain requests reads ~/.netrc...
    adapter = PingAdapter(credentials={}, base_url=server.url)
    try:
        adapter.ping()
    finally:
        adapter.close()
    plain, ours = server.requests
    assert "Authorization" in plain[1]  # ...so this test would see a leak
    assert "Authorization" not in ours[1]


def test_the_environment_is_read_once_per_broker_origin(server, clean_environment):
    reads = []
    real = requests.utils.get_environ_proxies

    def counted(url, no_proxy=None):
        reads.append(url)
        return real(url, no_proxy=no_proxy)

    clean_environment.setattr(requests.utils, "get_environ_proxies", counted)
    for _ in range(5):
        adapter = PingAdapter(credentials={}, base_url=server.url)
        try:
            adapter.ping()
        finally:
            adapter.close()
    assert len(server.requests) == 5
    assert reads == [server.url]


def test_a_ca_bundle_from_the_environment_is_used(clean_environment, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    clean_environment.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    adapter = PingAdapter(credentials={}, base_url="https://broker.example")
    try:
        assert adapter.http.verify == str(bundle)
    finally:
        adapter.close()
