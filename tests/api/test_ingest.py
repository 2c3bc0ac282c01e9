"""POST /v1/usage over HTTP: batches, NDJSON, idempotency, and bad input."""

from __future__ import annotations

import orjson
import pytest

from metering.services.ingest import MAX_BODY_BYTES
from tests.conftest import ADMIN, INGEST, auth, record
from tests.unit.test_records import BAD


def stored_ids(store) -> list[str]:
    with store.reading() as cur:
        return [r[0] for r in cur.execute("SELECT request_id FROM ledger ORDER BY request_id").fetchall()]


def post(client, body, token=INGEST, **headers):
    if isinstance(body, (bytes, str)):
        return client.post("/v1/usage", content=body, headers={**auth(token), **headers})
    return client.post("/v1/usage", json=body, headers={**auth(token), **headers})


def test_one_object_an_array_and_ndjson_are_all_accepted(client, store):
    assert post(client, record("a")).json() == {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
    assert post(client, [record("b"), record("c")]).json()["accepted"] == 2
    ndjson = b"\n".join(orjson.dumps(record(r)) for r in ("d", "e")) + b"\n\n"
    r = post(client, ndjson, **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["accepted"] == 2
    assert stored_ids(store) == ["a", "b", "c", "d", "e"]


def test_native_usage_is_normalized_and_priced(client, store):
    body = {"request_id": "n1", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "k", "model": "minimax-m2-7",
            "endpoint": "chat.completions",
            "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920},
                      "completion_tokens_details": {"reasoning_tokens": 200}}}
    assert post(client, body).status_code == 200
    with store.reading() as cur:
        row = cur.execute("SELECT input_tokens, cached_tokens, thinking_tokens, cost_pico, list_cost_pico, "
                          "rate_version_id FROM ledger").fetchone()
    assert row == (2006, 1920, 200, 250_500_000, 501_000_000, 1)


def test_identical_retry_is_a_duplicate_and_changed_content_is_a_conflict(client, store):
    assert post(client, [record("x"), record("y")]).json()["accepted"] == 2
    again = post(client, [record("x"), record("y", output_tokens=301), record("z")])
    assert again.status_code == 422
    assert again.json()["accepted"] == 1 and again.json()["duplicates"] == 1 and again.json()["rejected"] == 1
    (error,) = again.json()["errors"]
    assert error["index"] == 1 and error["request_id"] == "y" and "conflict" in error["error"]
    assert stored_ids(store) == ["x", "y", "z"]


def test_duplicates_within_one_batch(client, store):
    r = post(client, [record("same"), record("same"), record("same", input_tokens=5, cached_tokens=0)])
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, 1)
    assert body["errors"][0]["index"] == 2 and "conflict" in body["errors"][0]["error"]
    assert stored_ids(store) == ["same"]


def test_a_large_body_settles_retries_conflicts_and_in_body_duplicates_record_by_record(client, store):
    """Bodies of FAST_PATH_MIN records or more are checked by columns and inserted in one statement;
    what the ledger does not take is then settled one record at a time, as for small bodies."""
    first = [record(f"L{i}", tags={"team": "a", "env": "prod"}) for i in range(40)]
    assert post(client, first).json()["accepted"] == 40
    retry = [dict(r) for r in first[:20]]
    retry[3] = dict(retry[3], tags={"env": "prod", "team": "a"})  # the same tags in another order
    retry[5] = dict(retry[5], output_tokens=retry[5]["output_tokens"] + 1)  # changed content
    fresh = [record(f"M{i}") for i in range(20)]
    body = retry + fresh + [dict(fresh[0]), dict(fresh[1], input_tokens=fresh[1]["input_tokens"] + 1)]
    result = post(client, body).json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (20, 20, 2)
    assert [(e["index"], e["request_id"]) for e in result["errors"]] == [(5, "L5"), (41, "M1")]
    assert all("conflict" in e["error"] for e in result["errors"])
    assert len(stored_ids(store)) == 60


@pytest.mark.parametrize("size", [3, 40], ids=["priced-in-python", "priced-in-sql"])
def test_a_cost_beyond_the_supported_range_is_rejected_and_the_rest_of_the_body_stored(client, store, size):
    most = {"current": "1000000", "list": "1000000"}  # the highest price a rate card takes, per 1M tokens
    r = client.post("/v1/rates", json={"model": "dear", "effective_from": "2026-01-01T00:00:00Z",
                                       "input": most, "output": most, "cached_input": most}, headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    body = [record(f"d{i}", model="dear") for i in range(size)]
    body[1] = dict(body[1], input_tokens=2**31 - 1, cached_tokens=0, cache_write_tokens=0,
                   output_tokens=2**31 - 1, thinking_tokens=None)
    result = post(client, body).json()
    assert (result["accepted"], result["rejected"]) == (size - 1, 1)
    assert result["errors"][0]["index"] == 1 and "beyond the supported range" in result["errors"][0]["error"]
    assert "d1" not in stored_ids(store) and len(stored_ids(store)) == size - 1


def test_native_retry_of_a_canonical_record_is_a_duplicate(client):
    canonical = record("c1", endpoint="messages", input_tokens=2098, cached_tokens=1800, cache_write_tokens=248,
                       output_tokens=503, thinking_tokens=None)
    native = {k: canonical[k] for k in ("request_id", "occurred_at", "api_key_id", "model", "endpoint")}
    native["usage"] = {"input_tokens": 50, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 248,
                       "output_tokens": 503}
    assert post(client, canonical).json()["accepted"] == 1
    assert post(client, native).json()["duplicates"] == 1


@pytest.mark.parametrize(("case", "body", "field", "phrase"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_record_is_rejected_by_index_and_field_while_the_valid_ones_are_stored(client, store, case, body,
                                                                                       field, phrase):
    r = post(client, [record("ok-1"), body, record("ok-2")])
    assert r.status_code == 422
    result = r.json()
    assert (result["accepted"], result["rejected"]) == (2, 1)
    (error,) = result["errors"]
    assert error["index"] == 1 and phrase in error["error"]
    if field:
        assert error["field"] == field and error["error"].startswith(field)
    assert stored_ids(store) == ["ok-1", "ok-2"]


def test_malformed_json_is_a_400_with_the_error_shape(client, store):
    r = post(client, b'{"request_id": "a", ', **{"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request" and "not valid JSON" in r.json()["error"]["message"]
    assert post(client, b'"just a string"').status_code == 400
    assert stored_ids(store) == []


def test_a_broken_ndjson_line_is_rejected_alone(client, store):
    body = orjson.dumps(record("l1")) + b"\n{broken\n" + orjson.dumps(record("l3"))
    r = post(client, body, **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["index"] == 1 and "line 2" in r.json()["errors"][0]["error"]
    assert stored_ids(store) == ["l1", "l3"]


def test_oversized_body_and_too_many_records_are_413(client, store):
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    r = post(client, big, **{"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    many = [record(f"m{i}") for i in range(10_001)]
    r = post(client, many)
    assert r.status_code == 413 and "10000" in r.json()["error"]["message"]
    assert stored_ids(store) == []


def test_ten_thousand_records_in_one_request_are_fine(client, store):
    r = post(client, [record(f"t{i}") for i in range(10_000)])
    assert r.status_code == 200 and r.json()["accepted"] == 10_000


def test_unknown_model_is_stored_unpriced_and_listed(client, store):
    post(client, [record("u1", model="mystery-1"), record("u2", model="mystery-1"), record("p1")])
    r = client.get("/v1/unpriced", headers=auth(ADMIN))
    assert r.status_code == 200
    assert [(m["model"], m["requests"]) for m in r.json()["data"]] == [("mystery-1", 2)]
    with store.reading() as cur:
        costs = dict(cur.execute("SELECT request_id, cost_pico FROM ledger").fetchall())
    assert costs["u1"] is None and costs["p1"] is not None


def test_record_before_the_first_rate_version_is_unpriced(client, store):
    post(client, record("old", occurred_at="2024-06-01T00:00:00Z"))
    with store.reading() as cur:
        assert cur.execute("SELECT cost_pico, rate_version_id FROM ledger").fetchone() == (None, None)
