"""GET /metrics in process: one registry per app, the writer's lag read through its accessor, and the
metrics token's settings. (Scraping the real server after ingest: tests/e2e/test_metrics.py.)"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from metering.api.app import create_app
from metering.settings import Settings, SettingsError
from metering.store.db import Store
from tests.conftest import ADMIN, INGEST, METRICS, auth, record


def values(client: TestClient) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics", headers=auth(METRICS)).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_two_apps_in_one_process_count_apart(client, settings, tmp_path):
    other_store = Store(tmp_path / "other.duckdb")
    try:
        with TestClient(create_app(settings, store=other_store)) as other:
            client.post("/v1/usage", json=[record(f"r{i}") for i in range(5)], headers=auth(INGEST))
            accepted = ("metering_ingest_records_total", (("outcome", "accepted"),))
            assert values(client)[accepted] == 5
            assert values(other)[accepted] == 0
    finally:
        other_store.close()


def test_rollup_lag_is_the_writers_unflushed_records_until_a_flush(client, store):
    client.post("/v1/usage", json=[record(f"lag-{i}") for i in range(3)], headers=auth(INGEST))
    state = store.writer.state()
    lag = values(client)[("metering_rollup_lag_records", ())]
    assert lag == state.unflushed_records  # the gauge is the accessor's figure
    store.writer.call(store.writer.flush)
    assert store.writer.state().unflushed_records == 0 and store.writer.state().lag_seconds == 0
    assert values(client)[("metering_rollup_lag_records", ())] == 0
    assert values(client)[("metering_rollup_lag_seconds", ())] == 0


@pytest.mark.parametrize(("metrics_token", "phrase"), [
    ("short", "METERING_METRICS_TOKEN is too short"),
    (ADMIN, "METERING_METRICS_TOKEN must differ from METERING_ADMIN_TOKEN"),
    (INGEST, "METERING_METRICS_TOKEN must differ from METERING_INGEST_TOKEN"),
])
def test_a_weak_or_shared_metrics_token_stops_start_up(metrics_token, phrase):
    settings = Settings.from_env({"METERING_ADMIN_TOKEN": ADMIN, "METERING_INGEST_TOKEN": INGEST,
                                  "METERING_METRICS_TOKEN": metrics_token})
    with pytest.raises(SettingsError, match=phrase):
        settings.for_serving()


def test_without_a_metrics_token_only_the_admin_reads_metrics(tmp_path, store):
    settings = Settings(db_path=tmp_path / "m.duckdb", admin_token=ADMIN, ingest_token=INGEST, evaluate_on_ingest=False)
    with TestClient(create_app(settings, store=store)) as c:
        assert c.get("/metrics", headers=auth(ADMIN)).status_code == 200
        assert c.get("/metrics", headers=auth(METRICS)).status_code == 401
