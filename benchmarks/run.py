"""The benchmark suite in one command: every scenario beside its reference measured in the same
run, written as JSON and as a Markdown table. Figures are printed, never asserted.

    .venv/bin/python -m benchmarks.run [--size smoke|quick|full] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

SUITES = ("ingest", "servers", "otlp", "imports", "reports", "keyindex", "reconcile", "budgets", "concurrent",
          "reservations", "pricing", "client", "periods", "lake", "metrics")


def markdown(results: list[dict]) -> str:
    lines = ["| scenario | figure | reference (same run) |", "|---|---|---|"]
    lines += [f"| {r['scenario']} | {r['figure']} | {r['reference']} |" for r in results]
    return "\n".join(lines)


def module_main(scenarios) -> None:
    """The command line of one benchmark module: `--quick` (1M rows) or `--rows N`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="the quick size")
    args = parser.parse_args()
    kwargs = {"rows": args.rows} if args.rows else {}
    print(markdown(scenarios("quick" if args.quick else "full", **kwargs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=["smoke", "quick", "full"], default="full")
    parser.add_argument("--out", default="test-artifacts/bench", help="folder for results.json and results.md")
    args = parser.parse_args()
    import importlib

    results: list[dict] = []
    started = time.perf_counter()
    for name in SUITES:
        module = importlib.import_module(f"benchmarks.{name}")
        results += module.scenarios(args.size)
        print(markdown(results[-1:]).splitlines()[-1], flush=True)
    machine = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {"size": args.size, "at": datetime.now(UTC).isoformat(), "machine": machine,
                "seconds": time.perf_counter() - started, "results": results}
    (out / "results.json").write_text(json.dumps(document, indent=2))
    header = f"Size `{args.size}`, {machine['cores']} cores, Python {machine['python']}, {document['at'][:16]} UTC\n\n"
    (out / "results.md").write_text(header + markdown(results) + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
