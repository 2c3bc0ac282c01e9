"""Slow clients against the real server: bodies trickled a byte at a time, by many connections
at once. Each gets a 408 when its time is up, nothing of theirs is stored, and everyone else is
served as usual meanwhile."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import orjson
import pytest

from tests.conftest import ADMIN, INGEST, Server, record

pytestmark = pytest.mark.e2e
TIMEOUT = 2.0


def trickle(port: int, body: bytes, out: list, every: float = 0.25) -> None:
    """Send the headers, then the body a byte at a time; keep what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /v1/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        answer = b""
        try:
            for byte in body:
                sock.sendall(bytes([byte]))
                time.sleep(every)
                sock.setblocking(False)
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                if answer:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        out.append(answer)


def test_trickled_bodies_time_out_with_408_while_others_are_served(server_factory, tmp_path):
    server: Server = server_factory(tmp_path / "slow.duckdb", extra_env={"METERING_BODY_TIMEOUT": str(TIMEOUT)}).start()
    answers: list[bytes] = []
    slow = [threading.Thread(target=trickle, args=(server.port, orjson.dumps(record(f"slow-{i}")), answers))
            for i in range(40)]
    for t in slow:
        t.start()
    time.sleep(0.5)
    # Meanwhile, an ordinary client is served at once, every time.
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {INGEST}"}, timeout=10) as client:
        for i in range(20):
            r = client.post("/v1/usage", json=record(f"fast-{i}"))
            assert r.status_code == 200 and r.json()["accepted"] == 1
    for t in slow:
        t.join(timeout=60)
    assert len(answers) == 40
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer and b"nothing was stored" in answer
    for i in (0, 39):
        r = httpx.get(f"{server.url}/v1/records/slow-{i}", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 404, r.text
    assert httpx.get(f"{server.url}/v1/records/fast-0", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
