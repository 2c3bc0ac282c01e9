"""The gateway's client (metering.client.UsageClient) against the real server (`metering serve` in
a subprocess): records/s from the first `send` to the last acknowledgement, batched in memory and
through the disk spool (1 and 8 sender threads), beside the same kind of records POSTed one by
one from 64 keep-alive connections (benchmarks/loadgen.py, as in benchmarks/ingest.py: the most
a gateway gets from single-record POSTs here), measured in the same run. Also the latency
of `send` itself, which is what the gateway's request path pays. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.client [--quick] [--rows N]
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import orjson

from benchmarks.loadgen import load
from metering.client import UsageClient
from tests.conftest import INGEST, Server, generate_records

SIZES = {"smoke": (300, 100), "quick": (10_000, 2_000), "full": (50_000, 5_000)}
THREADS = 8


def one_by_one(url: str, records: list[dict]) -> float:
    """Records/s POSTing each record alone from 64 keep-alive connections over 2 processes."""
    elapsed, _ = load(url, "POST", "/v1/usage", INGEST, [orjson.dumps(r) for r in records], connections=64)
    return len(records) / elapsed


def batched(url: str, records: list[dict], *, spool: Path | None, threads: int) -> dict:
    """Records/s from the first send to flush() returning, and send() latencies."""
    latencies: list[float] = []
    client = UsageClient(url, INGEST, spool_dir=spool, batch_size=1000, max_pending=max(100_000, len(records)))

    def work(part: list[dict]) -> None:
        own = []
        for r in part:
            t = time.perf_counter()
            client.send(r)
            own.append(time.perf_counter() - t)
        latencies.extend(own)

    workers = [threading.Thread(target=work, args=(records[i::threads],)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    sent = time.perf_counter()
    assert client.flush(timeout=600), "the client did not deliver"
    elapsed = time.perf_counter() - started
    stats = client.stats()
    client.close()
    assert stats["accepted"] == len(records), stats
    q = statistics.quantiles(latencies, n=100)
    return {"rate": len(records) / elapsed, "send_rate": len(records) / (sent - started), "p50_us": q[49] * 1e6,
            "p99_us": q[98] * 1e6, "fsyncs": stats["fsyncs"], "posts": stats["posts"]}


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    n, singles = SIZES[size]
    n = rows or n
    records = generate_records(3 * n + singles, seed=5, prefix="client")
    parts = [records[i * n:(i + 1) * n] for i in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "bench.duckdb").start()
        try:
            reference = one_by_one(server.url, records[3 * n:])
            memory = batched(server.url, parts[0], spool=None, threads=1)
            spool_1 = batched(server.url, parts[1], spool=Path(tmp) / "spool-1", threads=1)
            spool_8 = batched(server.url, parts[2], spool=Path(tmp) / "spool-8", threads=THREADS)
        finally:
            server.stop()
    ref = f"the same kind of records POSTed one by one, 64 connections: {reference:,.0f} records/s"

    def row(name: str, m: dict, extra: str = "") -> dict:
        return {"scenario": f"UsageClient, {name}, {n:,} records",
                "figure": f"{m['rate']:,.0f} records/s send→acknowledged ({m['rate'] / reference:.0f}x one by one); "
                          f"send() p50 {m['p50_us']:,.0f} µs, p99 {m['p99_us']:,.0f} µs{extra}",
                "reference": ref,
                "values": {**m, "reference_records_per_s": reference}}

    return [
        row("batches of 1,000 from the in-memory queue, 1 sender thread", memory),
        row("disk spool (append + fdatasync before send returns), 1 sender thread", spool_1,
            f"; {spool_1['fsyncs']:,} fsyncs"),
        row(f"disk spool, {THREADS} sender threads (fsyncs grouped)", spool_8,
            f"; {spool_8['fsyncs']:,} fsyncs ({n / max(spool_8['fsyncs'], 1):.1f} records per fsync; "
            f"1 thread: {spool_1['rate']:,.0f} records/s)"),
    ]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
