"""Rate card aliases (issue 14): other spellings of a model id (`MiniMax-M2.7`) priced as the model, at
ingest on both paths (small bodies priced in Python, large ones in the INSERT) and by re-rating; kept in
the database across restarts; never ambiguous across models. The ledger keeps the model id as sent."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from metering.api.app import create_app
from metering.errors import RateCardError
from metering.pricing import price_record
from metering.ratecard import load_rate_card
from metering.records import parse_record
from metering.services.context import open_store
from metering.services.ingest import FAST_PATH_MIN
from metering.store.db import Store
from tests.conftest import ADMIN, INGEST, MODEL, NOW, auth, generate_records, record

ALIASES = ["MiniMax-M2.7", "minimax-m2.7", "minimax/MiniMax-M2.7", "minimax/minimax-m2.7"]
LATER = {"model": MODEL, "effective_from": "2026-11-15T00:00:00Z", "input": {"current": "0.12", "list": "0.30"},
         "cached_input": {"current": "0.024", "list": "0.06"}, "output": {"current": "0.50", "list": "1.20"},
         "web_search": {"current": "5", "list": "10"}}
NO_ALIASES = """
[[models.minimax-m2-7.versions]]
effective_from = 2025-01-01T00:00:00Z
input        = { current = "0.15", list = "0.30" }
cached_input = { current = "0.03", list = "0.06" }
output       = { current = "0.60", list = "1.20" }
"""


def ledger(store: Store) -> dict[str, tuple]:
    with store.reading() as cur:
        rows = cur.execute("SELECT request_id, model, rate_version_id, cost_pico, list_cost_pico FROM ledger").fetchall()
    return {r[0]: r[1:] for r in rows}


def spelled(n: int, *, seed: int, prefix: str) -> list[dict]:
    """Generated records, each model id one of: the model, its aliases, a case variant that is no alias,
    a model the card does not price."""
    rng = random.Random(seed)
    spellings = [MODEL, *ALIASES, "MINIMAX-M2.7", "unpriced-model"]
    return [{**r, "model": rng.choice(spellings)} for r in generate_records(n, seed=seed, prefix=prefix)]


def expected(store: Store, item: dict) -> tuple:
    """(model as sent, version id, cost, list cost) as pricing the record under its canonical name gives."""
    rec = parse_record(item, now=NOW)
    version = store.card.version_at(store.card.model_of(rec.model) if rec.model in ALIASES else rec.model,
                                    rec.occurred_at)
    if version is None:
        return (rec.model, None, None, None)
    priced = price_record(rec, version)
    return (rec.model, version.id, priced.cost.total, priced.list_cost.total)


def test_the_shipped_card_has_the_realistic_spellings_of_minimax_m2_7():
    from metering.settings import DEFAULT_RATE_CARD

    card = load_rate_card(DEFAULT_RATE_CARD)
    assert card.aliases_of(MODEL) == sorted(ALIASES)
    assert all(card.model_of(a) == MODEL for a in ALIASES) and card.model_of("MINIMAX-M2.7") == "MINIMAX-M2.7"


def test_an_alias_is_priced_as_the_model_on_both_ingest_paths_and_the_ledger_keeps_the_id_as_sent(client, store):
    assert client.post("/v1/rates", json=LATER, headers=auth(ADMIN)).status_code == 201  # two versions in range
    small = spelled(FAST_PATH_MIN - 1, seed=1, prefix="small")  # priced in Python (services.ingest.price)
    large = spelled(600, seed=2, prefix="large")  # priced in the INSERT (the ASOF join on pricing.units_table)
    for body in (small, large):
        r = client.post("/v1/usage", json=body, headers=auth(INGEST))
        assert r.status_code == 200 and r.json()["accepted"] == len(body), r.text
    stored = ledger(store)
    for item in small + large:
        assert stored[item["request_id"]] == expected(store, item), item
    seen = {stored[i["request_id"]][0] for i in large}
    assert set(ALIASES) <= seen and "MINIMAX-M2.7" in seen  # every spelling was exercised
    assert all(stored[i["request_id"]][1] is None for i in large if i["model"] == "MINIMAX-M2.7")  # exact match
    # /v1/unpriced lists no alias; a case variant that is no alias is still unpriced
    unpriced = {m["model"] for m in client.get("/v1/unpriced", headers=auth(ADMIN)).json()["data"]}
    assert unpriced == {"MINIMAX-M2.7", "unpriced-model"}
    # reports group by the model id as sent, each spelling priced
    usage = client.get("/v1/usage", params={"start": "2026-10-01", "end": "2026-12-01", "bucket": "month",
                                            "group_by": "model"}, headers=auth(ADMIN)).json()
    by_model = {row["model"]: row for b in usage["buckets"] for row in b["results"]}
    assert by_model["MiniMax-M2.7"]["unpriced_requests"] == 0 and by_model["MiniMax-M2.7"]["cost"] != "0"


def test_an_alias_added_later_prices_stored_records_by_re_rating(tmp_path, settings):
    card = tmp_path / "card.toml"
    card.write_text(NO_ALIASES)
    store = open_store(settings.__class__(**{**{f: getattr(settings, f) for f in settings.__dataclass_fields__},
                                             "rate_card_path": card}))
    try:
        with TestClient(create_app(settings, store=store)) as client:
            items = [record(f"late-{i}", model=ALIASES[i % 2], input_tokens=1000 + i) for i in range(40)]
            assert client.post("/v1/usage", json=items, headers=auth(INGEST)).json()["accepted"] == 40
            assert all(row[1] is None for row in ledger(store).values())
            listed = client.get("/v1/unpriced", headers=auth(ADMIN)).json()["data"]
            assert [(m["model"], m["priced_as"]) for m in listed] == [("MiniMax-M2.7", None), ("minimax-m2.7", None)]

            r = client.post("/v1/rates", json={"model": MODEL, "aliases": ALIASES[:2]}, headers=auth(ADMIN))
            assert r.status_code == 201 and r.json() == {"model": MODEL, "aliases": sorted(ALIASES[:2])}
            listed = client.get("/v1/unpriced", headers=auth(ADMIN)).json()["data"]
            assert {m["priced_as"] for m in listed} == {MODEL}  # stored unpriced until re-rated: says so
            dry = client.post("/v1/reprice", json={"start": "2026-11-01", "end": "2026-12-01", "dry_run": True},
                              headers=auth(ADMIN)).json()
            assert dry["totals"]["changed"] == 40 and dry["totals"]["unpriced_after"] == 0
            client.post("/v1/reprice", json={"start": "2026-11-01", "end": "2026-12-01"}, headers=auth(ADMIN))
            stored = ledger(store)
            for item in items:  # as ingest with the alias would have priced it, model id as sent
                assert stored[item["request_id"]] == expected(store, item)
            assert client.get("/v1/unpriced", headers=auth(ADMIN)).json()["data"] == []
    finally:
        store.close()


def test_aliases_survive_a_restart_and_get_v1_rates_shows_them(client, settings, store):
    r = client.post("/v1/rates", json={"model": MODEL, "aliases": ["mm-2.7-gateway"]}, headers=auth(ADMIN))
    assert r.status_code == 201 and "mm-2.7-gateway" in r.json()["aliases"]
    models = client.get("/v1/rates", headers=auth(ADMIN)).json()["models"]
    assert models[0]["model"] == MODEL and models[0]["aliases"] == sorted([*ALIASES, "mm-2.7-gateway"])
    store.close()
    reopened = Store(settings.db_path)
    try:
        assert reopened.card.model_of("mm-2.7-gateway") == MODEL
        assert reopened.card.aliases_of(MODEL) == sorted([*ALIASES, "mm-2.7-gateway"])
    finally:
        reopened.close()


OTHER = {"model": "other-model", "effective_from": "2026-01-01T00:00:00Z", "input": {"current": "1", "list": "1"},
         "cached_input": {"current": "1", "list": "1"}, "output": {"current": "1", "list": "1"}}


@pytest.mark.parametrize(("body", "status", "phrase"), [
    ({"model": "other-model", "aliases": ["MiniMax-M2.7"]}, 409, "already an alias of model 'minimax-m2-7'"),
    ({"model": "other-model", "aliases": [MODEL]}, 409, "is a model of the rate card"),
    ({"model": "other-model", "aliases": ["MINIMAX-M2.7"]}, 409, "differs only in case from 'MiniMax-M2.7'"),
    ({"model": "other-model", "aliases": ["Minimax-M2-7"]}, 409, "differs only in case from 'minimax-m2-7'"),
    ({"model": "other-model", "aliases": ["other-model"]}, 422, "the model's own name"),
    ({"model": "no-versions", "aliases": ["nv"]}, 422, "has no versions"),
    ({"model": "other-model", "aliases": "x"}, 422, "must be a list"),
    ({"model": "other-model", "aliases": ["a", "a"]}, 422, "listed twice"),
    ({"model": "other-model", "aliases": [""]}, 422, "1 to 200 characters"),
    ({**OTHER, "model": "MiniMax-M2.7", "effective_from": "2026-02-01T00:00:00Z"}, 409, "is an alias of model"),
])
def test_aliases_never_collide_across_models(client, body, status, phrase):
    assert client.post("/v1/rates", json=OTHER, headers=auth(ADMIN)).status_code == 201
    r = client.post("/v1/rates", json=body, headers=auth(ADMIN))
    assert r.status_code == status and phrase in r.json()["error"]["message"], r.text
    assert set(r.json()) == {"error"}


def test_a_version_and_a_colliding_alias_in_one_request_add_neither(client):
    before = client.get("/v1/rates", headers=auth(ADMIN)).json()
    r = client.post("/v1/rates", json={**OTHER, "aliases": ["fine-alias", "MiniMax-M2.7"]}, headers=auth(ADMIN))
    assert r.status_code == 409
    assert client.get("/v1/rates", headers=auth(ADMIN)).json() == before
    r = client.post("/v1/rates", json={**OTHER, "aliases": ["fine-alias"]}, headers=auth(ADMIN))
    assert r.status_code == 201 and r.json()["model"] == "other-model" and r.json()["aliases"] == ["fine-alias"]
    again = client.post("/v1/rates", json={"model": "other-model", "aliases": ["fine-alias"]}, headers=auth(ADMIN))
    assert again.status_code == 201 and again.json()["aliases"] == ["fine-alias"]  # adding it again: no change


def card_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "card.toml"
    path.write_text(NO_ALIASES + text)
    return path


@pytest.mark.parametrize(("text", "phrase"), [
    ('\n[models.minimax-m2-7]\naliases = "MiniMax-M2.7"\n', "aliases must be a list"),
    ('\n[models.minimax-m2-7]\naliases = ["b"]\n[[models.b.versions]]\neffective_from = 2025-01-01T00:00:00Z\n'
     'input = { current = "1", list = "1" }\ncached_input = { current = "1", list = "1" }\n'
     'output = { current = "1", list = "1" }\n', "'b' is a model of the rate card"),
    ('\n[models.minimax-m2-7]\nalias = ["x"]\n', "expected a list of [[models.minimax-m2-7.versions]] tables"),
])
def test_a_bad_alias_in_the_file_names_the_file_and_the_model(tmp_path, text, phrase):
    path = card_file(tmp_path, text)
    with pytest.raises(RateCardError) as exc:
        load_rate_card(path)
    assert str(path) in exc.value.message and "minimax-m2-7" in exc.value.message and phrase in exc.value.message


def test_a_file_alias_that_the_database_gives_another_model_stops_start_up(tmp_path, store):
    version = dataclasses.replace(store.card.versions[MODEL][0], model="other-model", id=None)
    store.add_rates("other-model", version=version, aliases=["gw-spelling"])
    path = card_file(tmp_path, '\n[models.minimax-m2-7]\naliases = ["gw-spelling"]\n')
    with pytest.raises(RateCardError, match=r"'gw-spelling'.*already an alias of model 'other-model'"):
        store.seed_rate_card(load_rate_card(path), source=str(path))
