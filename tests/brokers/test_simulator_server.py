"""The simulators' HTTP server: a client hanging up before its answer is normal, not an error."""

from __future__ import annotations

import socket
import struct
import time
from urllib.parse import urlsplit

from brokers.simulators.base import RunningSimulator
from brokers.simulators.matchtrade import MatchTraderSimulator


def test_a_client_that_hangs_up_before_its_answer_leaves_no_traceback(capfd):
    running = RunningSimulator(MatchTraderSimulator())
    try:
        running.simulator.faults.latency_ms = 200
        address = urlsplit(running.url)
        for _ in range(3):
            with socket.create_connection((address.hostname, address.port)) as client:
                # Linger 0: closing resets the connection instead of a polite FIN.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.sendall(b"GET /mtr-api/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            # closed with a reset: the server's answer, 200 ms later, finds nobody
        time.sleep(0.5)
        running.simulator.faults.latency_ms = 0
    finally:
        running.stop()
    assert "Traceback" not in capfd.readouterr().err
