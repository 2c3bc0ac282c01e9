"""A newcomer's first minutes (issue 14): `make run` (the demo) and the CLI share one default database,
and a CLI command beside the running demo shows its figures; the README's "Try it" figures come out as
printed beside the demo's traffic; a pipe closed early is no traceback; report formats are offered only
where they exist."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from metering.backends import ServerFile
from metering.cli import REPORT_FORMATS
from tests.conftest import ADMIN, free_port, record

E2E = pytest.mark.e2e
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
TRY_IT = {  # the README's "Try it" record
    "request_id": "chatcmpl-1", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "key-a",
    "model": "minimax-m2-7", "endpoint": "chat.completions",
    "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920},
              "completion_tokens_details": {"reasoning_tokens": 200}}}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no METERING_ variables but those given."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("METERING_")}, **extra}


def cli(*args: str, env: dict[str, str], cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metering.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`metering demo` as `make run` starts it, in a fresh checkout's place: no token in the environment,
    the default database (data/metering.duckdb under the working directory)."""
    home = tmp_path_factory.mktemp("newcomer")
    port = free_port()
    log = (home / "demo.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "metering.cli", "demo", "--days", "3", "--quiet", "--port", str(port)],
                            cwd=home, env=clean_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / "demo.log").read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    printed = (home / "demo.log").read_text()
    token = next(line.split()[-1] for line in printed.splitlines() if "admin token:" in line)
    yield {"home": home, "url": url, "token": token, "printed": printed, "proc": proc}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@E2E
def test_the_demo_serves_the_default_database_and_the_cli_goes_through_it(demo):
    home = demo["home"]
    assert (home / "data" / "metering.duckdb").exists()
    found = ServerFile.find(home / "data" / "metering.duckdb")
    assert found is not None and found.url == demo["url"] and found.token == demo["token"]
    assert (found.path.stat().st_mode & 0o777) == 0o600
    r = cli("report", "daily", "--format", "json", env=clean_env(), cwd=home)
    assert r.returncode == 0, r.stderr
    assert "going through it" in r.stderr and demo["url"] in r.stderr
    mine = json.loads(r.stdout)
    theirs = httpx.get(f"{demo['url']}/v1/reports/daily", params={"format": "json"},
                       headers={"Authorization": f"Bearer {demo['token']}"}, timeout=60).json()
    assert mine == theirs
    assert mine["totals"]["requests"] > 1000 and mine["totals"]["cost"] not in ("0", None)  # the demo's, not zeros
    r = cli("budgets", "status", "key-01", env=clean_env(), cwd=home)
    assert r.returncode == 0 and json.loads(r.stdout)["budgets"], r.stderr


@E2E
def test_the_readme_try_it_figures_come_out_as_printed_beside_the_demo(demo):
    headers = {"Authorization": f"Bearer {demo['token']}"}
    r = httpx.post(f"{demo['url']}/v1/usage", json=TRY_IT, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    body = httpx.get(f"{demo['url']}/v1/usage", headers=headers, timeout=30, params={
        "start": "2026-11-25", "end": "2026-11-26", "api_key_id": "key-a", "group_by": "model"}).json()
    (row,) = body["buckets"][0]["results"]
    assert (row["model"], row["cost"], row["list_cost"]) == ("minimax-m2-7", "0.0002505", "0.000501")


@E2E
def test_a_pipe_closed_early_ends_quietly(demo):
    """`metering budgets status key-01 | head -3` and `metering report daily | head`: the reader goes away;
    no traceback, the exit status a shell gives a tool stopped by a closed pipe (141)."""
    home = demo["home"]
    # the reader closes before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "metering.cli", "budgets", "status", "key-01"], cwd=home,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err and b"Exception ignored" not in err, err
    # the reader takes a few lines of a report larger than the pipe's buffer (made one page), then goes away
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "metering.cli", "report", "daily", "--group-by",
                             "api_key_id,model,endpoint"], cwd=home, env=clean_env(), stdout=write_end,
                            stderr=subprocess.PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = [reader.readline() for _ in range(3)]
    _, err = proc.communicate(timeout=120)
    assert first[0].startswith(b"date,") and proc.returncode == 141, err
    assert b"Traceback" not in err and b"Exception ignored" not in err, err
    # and through a shell pipeline, as typed
    shell = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m metering.cli report daily --group-by "
                            "api_key_id,model,endpoint | head -3"], cwd=home, env=clean_env(), capture_output=True,
                           text=True, timeout=120)
    assert len(shell.stdout.splitlines()) == 3 and shell.stdout.startswith("date,")
    assert "Traceback" not in shell.stderr and "Exception ignored" not in shell.stderr


@E2E
def test_a_held_database_without_a_known_token_gets_the_exact_command(server_factory, tmp_path):
    server = server_factory(tmp_path / "held.duckdb").start()  # its admin token came from its environment
    assert ServerFile.find(server.db).token is None  # so it is not written down
    r = cli("report", "daily", "--db", str(server.db), env=clean_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"METERING_TOKEN=<its admin token> metering report daily --db {server.db} --url {server.url}" in r.stderr
    r = cli("report", "daily", "--format", "json", "--db", str(server.db), env=clean_env(METERING_TOKEN=ADMIN))
    assert r.returncode == 0 and json.loads(r.stdout)["totals"]["requests"] == 0, r.stderr
    server.stop()
    assert not ServerFile.path_for(server.db).exists()  # withdrawn at a clean stop


@E2E
def test_a_server_file_left_by_a_killed_server_is_ignored(server_factory, tmp_path):
    server = server_factory(tmp_path / "killed.duckdb").start()
    httpx.post(f"{server.url}/v1/usage", json=record("k-1", occurred_at="2026-11-25T10:00:00Z"),
               headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    server.kill()
    assert ServerFile.path_for(server.db).exists() and ServerFile.find(server.db) is None
    r = cli("report", "daily", "--start", "2026-11-25", "--end", "2026-11-26", "--format", "json", "--db",
            str(server.db), env=clean_env())
    assert r.returncode == 0 and json.loads(r.stdout)["totals"]["requests"] == 1, r.stderr


def test_report_formats_are_offered_only_where_the_server_has_them():
    from metering.services import reports

    assert REPORT_FORMATS == {"daily": reports.DAILY_FORMATS, "statement": reports.STATEMENT_FORMATS,
                              "focus": reports.FOCUS_FORMATS}
    r = cli("report", "focus", "--start", "2026-11-01", "--end", "2026-11-02", "--format", "xlsx", "--url",
            "http://127.0.0.1:9", env=clean_env(METERING_TOKEN=ADMIN))  # refused before any call
    assert r.returncode == 2 and "invalid choice: 'xlsx'" in r.stderr and "cannot reach" not in r.stderr
    help_text = cli("report", "focus", "--help", env=clean_env()).stdout
    assert "{csv,parquet}" in help_text and "xlsx" not in help_text
    assert "{json,csv,xlsx}" in cli("report", "statement", "--help", env=clean_env()).stdout
