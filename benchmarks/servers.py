"""The same app under two ASGI servers, side by side: uvicorn (what `metering serve` runs) and granian
(a Rust HTTP server), each on a fresh database, each measured with the same load generator in the same
run: GET /healthz, single-record POSTs from 64 connections, 1,000-record batches from 4. Prints
figures; asserts nothing.

    .venv/bin/python -m benchmarks.servers [--quick]

granian is not a dependency of the service, only of the dev extra (for this measurement).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from benchmarks.ingest import SIZES, pct, run
from tests.conftest import ADMIN, INGEST, Server, free_port, generate_records


def app_from_env():
    """The app as `metering serve` makes it (settings from the environment, the same collector
    settings), for granian's `--factory`."""
    from metering.api.app import create_app
    from metering.settings import Settings

    app = create_app(Settings.from_env())
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return app


class GranianServer:
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = db.parent / f"granian-{self.port}.log"
        env = {**os.environ, "METERING_DB": str(db), "METERING_ADMIN_TOKEN": ADMIN, "METERING_INGEST_TOKEN": INGEST}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1", "--log-level", "warning", "benchmarks.servers:app_from_env"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"granian exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"granian did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _measure(url: str, singles: list[bytes], batches: list[bytes]) -> dict[str, float]:
    ref_time, ref_lat = run(url, "GET", "/healthz", [b""] * len(singles), 64)
    one_time, one_lat = run(url, "POST", "/v1/usage", singles, 64)
    batch_time, _ = run(url, "POST", "/v1/usage", batches, 4)
    return {"healthz_per_s": len(singles) / ref_time, "healthz_p99_ms": pct(ref_lat, 99),
            "singles_per_s": len(singles) / one_time, "singles_p99_ms": pct(one_lat, 99),
            "batch_records_per_s": len(batches) * 1000 / batch_time}


def scenarios(size: str = "full") -> list[dict]:
    if importlib.util.find_spec("granian") is None:
        return [{"scenario": "the same app under granian", "figure": "not measured",
                 "reference": "granian is not installed (it comes with the dev extra)", "values": {}}]
    n_singles, n_batches = SIZES[size]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, start in (("uvicorn", lambda db: Server(db).start()), ("granian", GranianServer)):
            records = generate_records(n_singles + n_batches * 1000, seed=7, prefix=f"srv-{name}")
            singles = [orjson.dumps(r) for r in records[:n_singles]]
            batches = [orjson.dumps(records[n_singles + i * 1000:n_singles + (i + 1) * 1000]) for i in range(n_batches)]
            server = start(Path(tmp) / f"{name}.duckdb")
            try:
                run(server.url, "GET", "/healthz", [b""] * 200, 8)  # warm up
                results[name] = _measure(server.url, singles, batches)
            finally:
                server.stop()
    u, g = results["uvicorn"], results["granian"]

    def line(r: dict[str, float]) -> str:
        return (f"GET /healthz {r['healthz_per_s']:,.0f} req/s (p99 {r['healthz_p99_ms']:.1f} ms); single POSTs "
                f"{r['singles_per_s']:,.0f} req/s ({100 * r['singles_per_s'] / r['healthz_per_s']:.0f}% of its /healthz, "
                f"p99 {r['singles_p99_ms']:.1f} ms); batches {r['batch_records_per_s']:,.0f} records/s")

    return [{"scenario": "the same app under granian (64 connections for singles, 4 for batches)",
             "figure": line(g), "reference": "under uvicorn, same run: " + line(u),
             "values": {"granian": g, "uvicorn": u}}]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
