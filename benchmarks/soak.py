"""Soak: the real server for a set time, ingest at half its measured capacity (1,000-record
batches, a fresh request_id each) with readers alongside (a key's usage, its budget status, the
daily report), reporting every interval: records in, errors, read latency percentiles, and the
server's memory. Goals: no errors, memory flat. Not a CI test.

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--interval 30] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from benchmarks.budgets import prepare
from benchmarks.concurrent import BATCH
from benchmarks.loadgen import load
from tests.conftest import ADMIN, INGEST, Server, generate_records


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _ingest(url: str, rate: float, seconds: float, counts, connections: int = 4) -> None:
    """Paced 1,000-record batches for `seconds` over a few connections; puts (ok records, errors)
    about once a second. Bodies come from one template with a fresh request_id prefix per batch."""
    template = orjson.dumps(generate_records(BATCH, seed=7, prefix="soak-XXXXXXXXXX",
                                             start=datetime.now(UTC) - timedelta(minutes=5), span=timedelta(minutes=4)))
    interval = BATCH / rate
    lock = threading.Lock()
    state = {"next": 0, "sent": 0, "errors": 0}
    started = time.perf_counter()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {INGEST}",
                                                              "Content-Type": "application/json"}) as client:
            while time.perf_counter() - started < seconds:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                wait = started + i * interval - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                body = template.replace(b"XXXXXXXXXX", f"{i:010d}".encode())
                try:
                    r = client.post("/v1/usage", content=body)
                    ok = r.status_code == 200 and r.json()["accepted"] == BATCH
                except httpx.HTTPError:
                    ok = False
                with lock:
                    state["sent" if ok else "errors"] += BATCH if ok else 1

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        with lock:
            counts.put((state["sent"], state["errors"]))
            state["sent"] = state["errors"] = 0
    with lock:
        counts.put((state["sent"], state["errors"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=30, help="seconds per report line")
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in the ledger before the soak")
    parser.add_argument("--out", default="test-artifacts/bench/soak.json")
    args = parser.parse_args()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        db = prepare(Path(tmp) / "soak.duckdb", args.rows, amount="1000000")
        server = Server(db).start()
        try:
            probe = generate_records(40 * BATCH, seed=1, prefix="cap", start=datetime.now(UTC) - timedelta(hours=1),
                                     span=timedelta(minutes=30))
            elapsed, _ = load(server.url, "POST", "/v1/usage", INGEST,
                              [orjson.dumps(probe[i:i + BATCH]) for i in range(0, len(probe), BATCH)], connections=4)
            capacity = len(probe) / elapsed
            print(f"capacity {capacity:,.0f} records/s; soaking at {capacity / 2:,.0f} for {args.minutes:g} min",
                  flush=True)
            counts: multiprocessing.Queue = multiprocessing.Queue()
            writer = multiprocessing.Process(target=_ingest, args=(server.url, capacity / 2, seconds, counts))
            writer.start()
            reads: list[float] = []
            read_errors = [0]
            stop = threading.Event()
            lock = threading.Lock()

            def reader() -> None:
                day = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
                paths = [f"/v1/usage?api_key_id=key-0&start={day}&bucket=day", "/v1/budgets/status?api_key_id=key-0",
                         f"/v1/reports/daily?start={day}"]
                with httpx.Client(base_url=server.url, timeout=60,
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as client:
                    while not stop.is_set():
                        for path in paths:
                            stop.wait(0.1)  # a dashboard's or a gateway's pace, not a flood
                            t0 = time.perf_counter()
                            try:
                                ok = client.get(path).status_code == 200
                            except httpx.HTTPError:
                                ok = False
                            with lock:
                                reads.append(time.perf_counter() - t0)
                                read_errors[0] += 0 if ok else 1

            threads = [threading.Thread(target=reader) for _ in range(2)]
            for t in threads:
                t.start()
            lines = []
            started = time.perf_counter()
            print(f"{'t (s)':>6} {'records/s':>10} {'errors':>6} {'reads':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8}")
            while writer.is_alive() or not counts.empty():
                time.sleep(args.interval)
                ok = errors = 0
                while not counts.empty():
                    a, b = counts.get()
                    ok, errors = ok + a, errors + b
                with lock:
                    window, reads[:] = list(reads), []
                    errors += read_errors[0]
                    read_errors[0] = 0
                p50 = statistics.median(window) * 1000 if window else 0
                p99 = statistics.quantiles(window, n=100)[98] * 1000 if len(window) > 1 else 0
                line = {"t": round(time.perf_counter() - started), "records_per_s": ok / args.interval, "errors": errors,
                        "reads": len(window), "p50_ms": p50, "p99_ms": p99, "rss_mib": rss_bytes(server.proc.pid) / 2**20}
                lines.append(line)
                print(f"{line['t']:>6} {line['records_per_s']:>10,.0f} {errors:>6} {len(window):>6} {p50:>7.1f} "
                      f"{p99:>7.1f} {line['rss_mib']:>8.0f}", flush=True)
                if not writer.is_alive() and counts.empty():
                    break
            stop.set()
            for t in threads:
                t.join()
            writer.join()
        finally:
            server.stop()
    rss = [x["rss_mib"] for x in lines]
    summary = {"minutes": args.minutes, "capacity_records_per_s": capacity, "errors": sum(x["errors"] for x in lines),
               "rss_first_mib": rss[0] if rss else 0, "rss_last_mib": rss[-1] if rss else 0, "intervals": lines}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"errors {summary['errors']}; memory {summary['rss_first_mib']:.0f} -> {summary['rss_last_mib']:.0f} MiB; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
