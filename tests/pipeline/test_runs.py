"""`runs`: one row per flow run (in TableStore reads and in DuckDB), `textme runs`, and a
run whose process was killed shown as crashed, then recorded so by the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import load_config
from tasks.runs import process_alive
from tasks.workspace import Workspace
from tests.pipeline.helpers import run_pipeline, write_mini_config

TEXTME = str(Path(sys.executable).parent / "textme")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_process_alive_knows_dead_and_reused_pids():
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)
    # a live pid whose process started after the run did is another process
    assert not process_alive(os.getpid(), datetime.now(timezone.utc) - timedelta(days=365))


def test_runs_lists_each_run_once(pipeline_runs):
    config = pipeline_runs["config"]
    cfg = load_config(config)
    result = invoke("runs", config, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    ids = [r["run_id"] for r in listed]
    assert len(ids) == len(set(ids)) >= 3
    for run in (pipeline_runs["cold"], pipeline_runs["warm"], pipeline_runs["edit"]):
        (row,) = [r for r in listed if r["run_id"] == run]
        assert row["status"] == "completed" and row["flow"] == "textme-pipeline" and row["duration_s"] > 0
    with duckdb.connect(str(Workspace.of(cfg).catalog), read_only=True) as con:
        assert con.execute("select count(*), count(distinct run_id) from runs").fetchone() == (len(ids), len(ids))
    text = invoke("runs", config)
    assert text.exit_code == 0 and text.stdout.count("completed") == len(ids)
    assert pipeline_runs["cold"][:8] in text.stdout and "duration" in text.stdout


@pytest.mark.slow
def test_a_killed_run_is_shown_crashed_then_recorded_by_the_next_run(tmp_path, assets, subprocess_env):
    config = write_mini_config(tmp_path / "killed", assets, epochs=2)
    cfg = load_config(config)
    from storage.tables import TableStore

    tables = TableStore(Workspace.of(cfg).tables)
    proc = subprocess.Popen([TEXTME, "run", str(config)], env=subprocess_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        started = []
        while not started and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            started = [r for r in tables.read("runs").to_pylist() if r["pid"] == proc.pid]
        assert started and started[0]["status"] == "running", "the run never recorded its start"
    finally:
        proc.kill()
        proc.wait()
    killed = started[0]["run_id"]

    shown = json.loads(invoke("runs", config, "--json").stdout)
    assert [(r["run_id"], r["status"], r["recorded_status"]) for r in shown] == [(killed, "crashed", "running")]
    assert "crashed" in invoke("runs", config).stdout
    assert tables.read("runs").column("status").to_pylist() == ["running"]  # `textme runs` writes nothing
    status = invoke("status", config)
    assert status.exit_code == 0 and f"last run: {killed} textme-pipeline crashed" in status.stdout

    new = run_pipeline(config)  # the next run records it
    got = {r["run_id"]: r["status"] for r in tables.read("runs").to_pylist()}
    assert got == {killed: "crashed", new: "completed"}
    with duckdb.connect(str(Workspace.of(cfg).catalog), read_only=True) as con:
        assert sorted(con.execute("select status from runs").fetchall()) == [("completed",), ("crashed",)]
