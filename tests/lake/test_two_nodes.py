"""Two ingest nodes side by side: two `metering serve --lake --node-id` processes on two database files,
records routed by account, some retries landing on the other node, both exporting into one lake. The
Spark documents over the lake equal, byte for byte, those of one node that ingested every record once;
a request_id stored on both nodes with different content is reported, not summed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from metering.cli import main
from metering.lake._spark import SparkLakeSource
from metering.ratecard import load_rate_card
from metering.services import ingest as ingesting
from metering.services import reports
from metering.services.context import Context
from metering.services.documents import render
from metering.settings import DEFAULT_RATE_CARD
from metering.store.db import Store
from tests.conftest import ADMIN, INGEST, NOW, auth, generate_records

pytestmark = pytest.mark.e2e
ACCOUNTS = {f"key-{i}": f"acct-{i % 4}" for i in range(0, 20, 2)}  # odd keys are not registered: unassigned
NODE_OF_ACCOUNT = {"acct-0": 0, "acct-1": 0, "acct-2": 1, "acct-3": 1}


def node_for(api_key_id: str) -> int:
    """The gateway's routing: by account; a key it does not know, by the key's number."""
    account = ACCOUNTS.get(api_key_id)
    return NODE_OF_ACCOUNT[account] if account else int(api_key_id.split("-")[1]) % 2


def lake_rows(lake: Path, node: str) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (lake / "usage").glob(f"day=*/{node}-*.parquet"))


def test_two_nodes_in_one_lake_give_the_documents_of_one_node(server_factory, tmp_path, spark, capsys):
    lake = tmp_path / "lake"
    names = ["node-a", "node-b"]
    servers = [server_factory(tmp_path / f"{name}.duckdb", args=["--lake", str(lake), "--node-id", name,
                                                                 "--lake-interval", "0.5"]).start()
               for name in names]
    single = Store(tmp_path / "single.duckdb")
    single.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="test")
    for key, account in ACCOUNTS.items():
        body = {"api_key_id": key, "account_id": account, "name": f"Key {key}", "secret": f"sk_{key}_0123456789abcdef"}
        r = httpx.post(f"{servers[NODE_OF_ACCOUNT[account]].url}/v1/keys", json=body, headers=auth(ADMIN))
        assert r.status_code == 201, r.text
        single.add_key(api_key_id=key, account_id=account, name=body["name"], secret_sha256=f"{hash(key) & 2**64 - 1:064x}")

    records = generate_records(2400, seed=77)
    routed: list[list[dict]] = [[], []]
    retries = []
    for i, rec in enumerate(records):
        routed[node_for(rec["api_key_id"])].append(rec)
        if i % 25 == 0:  # the gateway timed out on the first node and retried on the other
            retries.append((1 - node_for(rec["api_key_id"]), rec))
    conflicting = {**records[10], "output_tokens": records[10]["output_tokens"] + 7}
    accepted = [0, 0]

    def post(node: int, batch: list[dict]) -> dict:
        r = httpx.post(f"{servers[node].url}/v1/usage", json=batch, headers=auth(INGEST), timeout=60)
        assert r.status_code in (200, 422), r.text
        accepted[node] += r.json()["accepted"]
        return r.json()

    for node in (0, 1):
        for start in range(0, len(routed[node]), 400):
            post(node, routed[node][start:start + 400])
    for node, rec in retries:
        assert post(node, [rec])["accepted"] == 1  # the other node had not seen it: stored there too
    wrong = post(1 - node_for(conflicting["api_key_id"]), [conflicting])
    assert wrong["accepted"] == 1  # not the same node: nothing to compare with there
    once = ingesting.ingest_items(Context(single), [*records, conflicting])
    assert once["rejected"] == 1  # one node would have refused the conflict

    # The lake follows each serving node within seconds.
    deadline = time.monotonic() + 90
    while any(lake_rows(lake, names[n]) < accepted[n] for n in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [lake_rows(lake, n) for n in names] == accepted
    for server in servers:
        server.stop()
    assert {json.loads((lake / "_state" / f"{n}.json").read_text())["plan_end"] for n in names} == {None}

    source = SparkLakeSource(lake)
    ledger = reports.LedgerSource(Context(single))
    for tz in ("UTC", "America/New_York"):
        ours = reports.daily_report(source, now=NOW, start="2026-11-05", end="2026-11-26", tz=tz)
        theirs = reports.daily_report(ledger, now=NOW, start="2026-11-05", end="2026-11-26", tz=tz)
        assert render(ours, "csv") == render(theirs, "csv"), tz
        assert render(ours, "json") == render(theirs, "json"), tz
    assert source.conflict_count == 1 and source.conflicts == [conflicting["request_id"]]
    for account, fmt in (("acct-2", "csv"), ("unassigned", "json")):
        assert (render(reports.statement(source, account=account, month="2026-11", tz="Asia/Kolkata"), fmt)
                == render(reports.statement(ledger, account=account, month="2026-11", tz="Asia/Kolkata"), fmt))
    focus = reports.focus_export(source, start="2026-11-05", end="2026-11-26")
    assert render(focus, "csv") == render(reports.focus_export(ledger, start="2026-11-05",
                                                                               end="2026-11-26"), "csv")

    # The command: Kolkata days, JSON; the conflict is in the document's meta and on stderr, not in the sums.
    out = tmp_path / "kolkata.json"
    assert main(["report", "daily", "--start", "2026-11-05", "--end", "2026-11-26", "--tz", "Asia/Kolkata",
                 "--format", "json", "--engine", "spark", "--lake", str(lake), "-o", str(out)]) == 0
    assert "conflicting content" in capsys.readouterr().err
    document = json.loads(out.read_bytes())
    assert document.pop("conflicts")["examples"] == [conflicting["request_id"]]
    expected = reports.daily_report(ledger, now=NOW, start="2026-11-05", end="2026-11-26", tz="Asia/Kolkata")
    assert document == json.loads(render(expected, "json"))
    single.close()
