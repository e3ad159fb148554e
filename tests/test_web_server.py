"""The web server as the Procfile runs it: gunicorn with ``algoways.gunicorn``."""

from __future__ import annotations

import http.client
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from algoways.gunicorn import KEEPALIVE_REQUESTS
from tests.orders.worker import free_port

ROOT = Path(__file__).resolve().parent.parent


def procfile_web_command(port: int) -> list[str]:
    """The Procfile's web command, on ``port``, with this interpreter's gunicorn."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web":
            argv = shlex.split(command.replace("${PORT:-8000}", str(port)))
            return [str(Path(sys.executable).parent / "gunicorn"), *argv[1:]]
    raise AssertionError("The Procfile has no web process.")


@pytest.fixture
def web_server():
    port = free_port()
    process = subprocess.Popen(
        procfile_web_command(port),
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "algoways.settings"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {process.stderr.read().decode()}")
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(10)


def test_a_keep_alive_connection_is_closed_after_its_last_allowed_request(web_server):
    connection = http.client.HTTPConnection("127.0.0.1", web_server, timeout=10)
    answers = []
    client_ports = []
    for _ in range(KEEPALIVE_REQUESTS + 2):
        connection.request("GET", "/api/orders/")
        response = connection.getresponse()
        response.read()
        answers.append(response.getheader("Connection"))
        client_ports.append(connection.sock.getsockname()[1] if connection.sock else None)
    connection.close()

    # Every answer keeps the connection open but the last one the connection may carry; the
    # client then opens a new connection and the requests go on, none lost.
    assert answers[KEEPALIVE_REQUESTS - 1] == "close"
    assert "close" not in answers[: KEEPALIVE_REQUESTS - 1]
    assert answers[KEEPALIVE_REQUESTS] != "close"
    assert client_ports[KEEPALIVE_REQUESTS - 1] is None  # http.client closed it
    assert len(set(client_ports[: KEEPALIVE_REQUESTS - 1])) == 1


def test_a_worker_imports_every_view_and_freezes_them_before_its_first_request():
    # In a fresh interpreter: this one imported the views long ago.
    script = (
        "import sys, django; django.setup()\n"
        "from algoways.gunicorn import post_worker_init\n"
        "import gc\n"
        "before = 'orders.api.views' in sys.modules, gc.get_freeze_count() > 0\n"
        "post_worker_init(worker=None)\n"
        "print(*before, 'orders.api.views' in sys.modules, 'accounts.api.views' in sys.modules,"
        " gc.get_freeze_count() > 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "algoways.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # ... and freezes what it loaded out of the garbage collector's full collections.
    assert result.stdout.split() == ["False", "False", "True", "True", "True"]
