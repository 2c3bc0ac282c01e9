"""Budget reservations (issue 17): admission before the call, exact counts under concurrency,
settlement, release, expiry with an injected clock, the tightest budget deciding, unpriced models."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tests.conftest import ADMIN, INGEST, auth, record

# 1,000 input tokens at 0.15 and 500 output tokens at 0.60 per 1M: 0.00015 + 0.0003 = 0.00045 USD a hold.
ASK = {"api_key_id": "key-a", "model": "minimax-m2-7", "max_input_tokens": 1000, "max_output_tokens": 500}
HOLD = "0.00045"


def enforced(client, scope: dict, amount: str, **fields) -> str:
    r = client.post("/v1/budgets", json={"scope": scope, "amount": amount, "enforce": True, **fields},
                    headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def reserve(client, request_id: str, **fields) -> dict:
    r = client.post("/v1/reservations", json={"request_id": request_id, **ASK, **fields}, headers=auth(INGEST))
    assert r.status_code == 200, r.text
    return r.json()


def status_of(client, budget_id: str) -> dict:
    return client.get(f"/v1/budgets/{budget_id}/status", headers=auth(ADMIN)).json()


def test_a_hold_is_the_most_the_call_can_cost_and_shows_as_held(client, two_keys):
    bid = enforced(client, {"api_key_id": "key-a"}, "1")
    answer = reserve(client, "r1")
    assert answer["decision"] == "allow" and answer["held"] == HOLD
    assert answer["budgets"][0]["held"] == HOLD and answer["budgets"][0]["remaining"] == "0.99955"
    st = status_of(client, bid)
    assert st["held"] == HOLD and st["spent"] == "0" and st["remaining"] == "0.99955"
    assert client.get("/v1/budgets/status", params={"api_key_id": "key-a"},
                      headers=auth(INGEST)).json()["budgets"][0]["held"] == HOLD


def test_concurrent_reservations_admit_exactly_the_room_there_is(client, two_keys):
    bid = enforced(client, {"account_id": "acct-1"}, "0.0045")  # room for exactly 10 holds
    answers: list[dict] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = client.post("/v1/reservations", json={"request_id": f"c{i}", **ASK}, headers=auth(INGEST))
        with lock:
            answers.append(r.json())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = [a for a in answers if a["decision"] == "allow"]
    denied = [a for a in answers if a["decision"] == "deny"]
    assert len(allowed) == 10 and len(denied) == 30
    assert all(a["denied_by"] == [bid] and a["held"] == "0" and bid in a["reason"] for a in denied)
    assert status_of(client, bid)["held"] == "0.0045"


def test_settlement_replaces_the_hold_with_the_actual_cost_below_or_above_it(client, two_keys):
    bid = enforced(client, {"api_key_id": "key-a"}, "1")
    reserve(client, "below")
    reserve(client, "above")
    # below: 100 input + 100 output = 0.000015 + 0.00006; above: 10,000 output = 0.006 (the gateway under-asked)
    body = [record("below", input_tokens=100, cached_tokens=0, output_tokens=100, thinking_tokens=None),
            record("above", input_tokens=0, cached_tokens=0, output_tokens=10_000, thinking_tokens=None)]
    assert client.post("/v1/usage", json=body, headers=auth(INGEST)).status_code == 200
    st = status_of(client, bid)
    assert st["held"] == "0" and st["spent"] == "0.006075"
    assert client.get("/v1/reservations/below", headers=auth(INGEST)).json()["status"] == "settled"
    again = client.post("/v1/usage", json=body, headers=auth(INGEST)).json()  # a retried record: settled once
    assert again["duplicates"] == 2 and status_of(client, bid)["spent"] == "0.006075"


def test_release_gives_the_hold_back_and_is_idempotent(client, two_keys):
    bid = enforced(client, {"all": True}, "0.0009")  # two holds
    reserve(client, "a1")
    reserve(client, "a2")
    assert reserve(client, "a3")["decision"] == "deny"
    for _ in range(2):
        r = client.delete("/v1/reservations/a1", headers=auth(INGEST))
        assert r.status_code == 200 and r.json()["status"] == "released"
    assert status_of(client, bid)["held"] == HOLD
    assert reserve(client, "a3")["decision"] == "allow"
    assert client.delete("/v1/reservations/nope", headers=auth(INGEST)).status_code == 404
    assert client.post("/v1/usage", json=record("a1", input_tokens=1, cached_tokens=0, output_tokens=1,
                                                  thinking_tokens=None), headers=auth(INGEST)).status_code == 200
    assert client.get("/v1/reservations/a1", headers=auth(INGEST)).json()["status"] == "released"


def test_an_expired_hold_counts_no_more(client, two_keys, clock):
    from metering.services import reservations

    bid = enforced(client, {"api_key_id": "key-a"}, "0.0009")
    reserve(client, "e1", ttl_seconds=60)
    reserve(client, "e2", ttl_seconds=3600)
    assert reserve(client, "e3")["decision"] == "deny"
    clock.now += timedelta(seconds=61)
    assert status_of(client, bid)["held"] == HOLD
    assert client.get("/v1/reservations/e1", headers=auth(INGEST)).json()["status"] == "expired"
    assert reserve(client, "e3")["decision"] == "allow"
    assert reservations.expire(client.app.state.ctx) == ["e1"]
    assert client.get("/v1/reservations/e1", headers=auth(INGEST)).json()["status"] == "expired"


def test_the_tightest_of_several_enforced_budgets_decides(client, two_keys):
    wide = enforced(client, {"all": True}, "100")
    account = enforced(client, {"account_id": "acct-1"}, "10")
    tag = enforced(client, {"tag": {"project": "x"}}, "0.0009")  # two holds for project x
    own = enforced(client, {"api_key_id": "key-a"}, "0.002")  # four holds
    enforced_not = client.post("/v1/budgets", json={"scope": {"api_key_id": "key-a"}, "amount": "0.000001"},
                               headers=auth(ADMIN)).json()["id"]  # alerts only: never decides
    tagged = [reserve(client, f"t{i}", tags={"project": "x"}) for i in range(3)]
    assert [a["decision"] for a in tagged] == ["allow", "allow", "deny"] and tagged[2]["denied_by"] == [tag]
    plain = [reserve(client, f"p{i}") for i in range(3)]
    assert [a["decision"] for a in plain] == ["allow", "allow", "deny"] and plain[2]["denied_by"] == [own]
    assert {b["id"] for b in tagged[0]["budgets"]} == {wide, account, tag, own}
    assert enforced_not not in {b["id"] for b in plain[0]["budgets"]}
    assert status_of(client, wide)["held"] == "0.0018"  # every hold counts against every budget it covers


def test_a_model_without_a_price_is_denied_with_the_reason(client, two_keys):
    enforced(client, {"api_key_id": "key-a"}, "100")
    answer = reserve(client, "u1", model="no-such-model")
    assert answer["decision"] == "deny" and "no price" in answer["reason"] and answer["held"] == "0"


def test_a_retried_reservation_gets_the_same_answer_and_different_terms_a_conflict(client, two_keys):
    bid = enforced(client, {"api_key_id": "key-a"}, "1")
    first = reserve(client, "same")
    again = reserve(client, "same")
    assert again["decision"] == first["decision"] == "allow" and again["held"] == first["held"]
    assert status_of(client, bid)["held"] == HOLD  # held once
    r = client.post("/v1/reservations", json={"request_id": "same", **ASK, "max_output_tokens": 9},
                    headers=auth(INGEST))
    assert r.status_code == 409 and "conflict" in r.json()["error"]["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"max_output_tokens": -1}, "max_output_tokens"), ({"max_output_tokens": None}, "max_output_tokens"),
    ({"ttl_seconds": 0}, "ttl_seconds"), ({"model": ""}, "model"), ({"colour": "red"}, "colour"),
    ({"tags": {"a": 1}}, "tags"), ({"max_input_tokens": 2**40}, "max_input_tokens"),
])
def test_bad_reservations_get_a_400_naming_the_field(client, body, field):
    r = client.post("/v1/reservations", json={"request_id": "bad", **ASK, **body}, headers=auth(INGEST))
    assert r.status_code == 400 and field in r.json()["error"]["message"], r.text
