"""OpenTelemetry trace export (POST /v1/traces) against the real server (`metering serve` in a
subprocess): records/s of usage spans in OTLP/HTTP protobuf and OTLP/JSON, beside the same records
posted to POST /v1/usage as JSON arrays, in the same run, on the same server, with the same batch
size and load generator. Prints figures; asserts nothing about time.

    .venv/bin/python -m benchmarks.otlp [--quick]

Each export request holds BATCH spans, as an SDK's BatchSpanProcessor sends them (its default
max_export_batch_size is 512); every span is a chat span with GenAI usage attributes, and the
records POST /v1/usage gets are those metering.otlp makes of the very same spans.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from google.protobuf import json_format

from benchmarks.loadgen import load
from metering import otlp
from tests.conftest import ADMIN, INGEST, Server, generate_records
from tests.otlp_builders import nanos, request, span

BATCH = 512
CLIENTS = 4
SIZES = {"smoke": 2, "quick": 20, "full": 100}  # export requests per path


def spans_for(records: list[dict], first: int) -> list:
    """Chat spans carrying each record's usage, as a GenAI instrumentation would set them."""
    out = []
    for i, r in enumerate(records):
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": r["model"],
                 "gen_ai.response.id": r["request_id"], "metering.api_key_id": r["api_key_id"],
                 "gen_ai.usage.input_tokens": r["input_tokens"],
                 "gen_ai.usage.cache_read.input_tokens": r["cached_tokens"],
                 "gen_ai.usage.cache_creation.input_tokens": r["cache_write_tokens"],
                 "gen_ai.usage.output_tokens": r["output_tokens"], "metering.tag.project": r["tags"]["project"],
                 "gen_ai.provider.name": "anthropic" if r["endpoint"] == "messages" else "openai"}
        if r["endpoint"] == "responses":
            attrs["openai.api.type"] = "responses"
        if r["thinking_tokens"] is not None:
            attrs["gen_ai.usage.reasoning.output_tokens"] = r["thinking_tokens"]
        end = datetime.fromisoformat(r["occurred_at"])
        out.append(span(attrs, n=first + i + 1, end=nanos(end), name=f"chat {r['model']}"))
    return out


def otlp_json(message) -> bytes:
    """OTLP/JSON of a request: protobuf's JSON mapping with the ids in hex, as the specification says."""
    data = json_format.MessageToDict(message)
    spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
    dicts = [s for rs in data["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    for proto, as_dict in zip(spans, dicts, strict=True):
        as_dict["traceId"], as_dict["spanId"] = proto.trace_id.hex(), proto.span_id.hex()
    return orjson.dumps(data)


def bodies(size: str, prefix: str, seed: int) -> tuple[list, list[bytes]]:
    """(the export requests, the same records as POST /v1/usage bodies)"""
    now = datetime.now(UTC)
    records = generate_records(SIZES[size] * BATCH, seed=seed, prefix=prefix, start=now - timedelta(days=10),
                               span=timedelta(days=9))
    requests_, usage_bodies = [], []
    for i in range(0, len(records), BATCH):
        message = request(*spans_for(records[i:i + BATCH], i), resource={"service.name": "bench"})
        requests_.append(message)
        usage_bodies.append(orjson.dumps(otlp.spans_to_records(message).records))
    return requests_, usage_bodies


def scenarios(size: str = "full") -> list[dict]:
    n = SIZES[size] * BATCH
    proto_requests, _ = bodies(size, "proto", 7)
    json_requests, _ = bodies(size, "json", 7)
    _, usage_bodies = bodies(size, "usage", 7)  # the same spans' records under other request ids
    proto_bodies = [m.SerializeToString() for m in proto_requests]
    json_bodies = [otlp_json(m) for m in json_requests]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "bench.duckdb").start()
        try:
            url = server.url
            usage_time, _ = load(url, "POST", "/v1/usage", INGEST, usage_bodies, connections=CLIENTS)
            proto_time, _ = load(url, "POST", "/v1/traces", INGEST, proto_bodies, connections=CLIENTS,
                                 content_type="application/x-protobuf")
            json_time, _ = load(url, "POST", "/v1/traces", INGEST, json_bodies, connections=CLIENTS)
            stored = httpx.get(f"{url}/v1/usage", params={"start": "2000-01-01", "end": "2099-01-01", "bucket": "month"},
                               headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60).json()["totals"]["requests"]
        finally:
            server.stop()
    if stored != 3 * n:  # every span became a record, once: a figure of anything else would mean nothing
        raise RuntimeError(f"the ledger holds {stored} records, not {3 * n}")
    usage_rate, proto_rate, json_rate = n / usage_time, n / proto_time, n / json_time
    reference = f"POST /v1/usage, the same records as JSON arrays of {BATCH}: {usage_rate:,.0f} records/s"
    return [
        {"scenario": f"OTLP trace export, protobuf, {BATCH} usage spans a request, {CLIENTS} concurrent clients",
         "figure": f"{proto_rate:,.0f} records/s ({100 * proto_rate / usage_rate:.0f}% of the reference)",
         "reference": reference,
         "values": {"records_per_s": proto_rate, "reference_records_per_s": usage_rate}},
        {"scenario": f"OTLP trace export, JSON, {BATCH} usage spans a request, {CLIENTS} concurrent clients",
         "figure": f"{json_rate:,.0f} records/s ({100 * json_rate / usage_rate:.0f}% of the reference)",
         "reference": reference,
         "values": {"records_per_s": json_rate, "reference_records_per_s": usage_rate}},
    ]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
