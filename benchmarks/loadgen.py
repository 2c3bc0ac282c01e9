"""A small HTTP/1.1 load generator: keep-alive connections on asyncio (uvloop), requests built
once as bytes, responses read by Content-Length. It costs a few microseconds per request, so
that on this 2-core machine the server, not the client, is what a benchmark measures (httpx
costs about 1 ms per request and capped the do-nothing endpoint at ~500 req/s).

Each of `processes` processes runs `connections` connections; each connection sends its share
of the bodies one after another and records each latency.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import urlsplit


def _request(method: str, host: str, path: str, token: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(host: str, port: int, requests: list[bytes], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status >= 300:
                raise RuntimeError(f"{status}: {body[:200]!r}")
    finally:
        writer.close()


def _process(url: str, method: str, path: str, token: str, bodies: list[bytes], connections: int,
             content_type: str = "application/json") -> list[float]:
    import uvloop

    parts = urlsplit(url)
    requests = [_request(method, parts.netloc, path, token, body, content_type) for body in bodies]
    latencies: list[float] = []

    async def main() -> None:
        await asyncio.gather(*(_connection(parts.hostname, parts.port, requests[i::connections], latencies)
                               for i in range(min(connections, len(requests)))))

    uvloop.run(main())
    return latencies


def load(url: str, method: str, path: str, token: str, bodies: list[bytes], *, connections: int,
         processes: int = 2, content_type: str = "application/json") -> tuple[float, list[float]]:
    """(seconds from the first request to the last response, every request's latency)"""
    processes = max(1, min(processes, connections))
    per_process = max(1, connections // processes)
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_warm, range(processes)))  # the workers exist before the clock starts
        started = time.perf_counter()
        parts = list(pool.map(_process, [url] * processes, [method] * processes, [path] * processes,
                              [token] * processes, [bodies[i::processes] for i in range(processes)],
                              [per_process] * processes, [content_type] * processes))
        elapsed = time.perf_counter() - started
    return elapsed, [x for part in parts for x in part]


def _warm(_: int) -> None:
    import uvloop  # noqa: F401 (imported before the clock starts)
