"""The DuckDB catalog: a table per table (only listed, intact parts), read-only readers,
empty tables, any root, the duckdb shell, a copied workdir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from storage_helpers import flip_byte
from test_storage_table_parts import run_row, write_raw
from test_storage_tables import NOW as T0
from test_storage_tables import caption, result

from storage import parts
from storage.catalog import build_catalog, catalog_problems
from storage.tables import SCHEMAS, TableStore

NOW = datetime(2026, 1, 25, tzinfo=timezone.utc)


def duckdb_shell() -> str:
    """The duckdb shell the project installs (the duckdb-cli package, beside python)."""
    beside = Path(sys.executable).parent / "duckdb"
    found = str(beside) if beside.exists() else shutil.which("duckdb")
    assert found, "no duckdb shell: the project depends on duckdb-cli (pip install -e .)"
    return found


@pytest.fixture(params=["local", "file"])
def tables(request, tmp_path):
    path = tmp_path / "tables"
    return TableStore(str(path) if request.param == "local" else f"file://{path}")


def test_a_table_for_every_table_even_empty_ones(tables, tmp_path):
    tables.append("results", [result("retrieval", 0.5), result("zero_shot", 0.7)])
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = {r[0] for r in con.execute("select table_name from duckdb_tables() where schema_name = 'main'")
                 .fetchall()}
        assert names == set(SCHEMAS)
        views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        assert views == {"latest_results"}
        for name, schema in SCHEMAS.items():
            described = con.execute(f"describe {name}").fetchall()
            assert {r[0] for r in described} == set(schema.names), name
        assert con.execute("select count(*) from captions").fetchone() == (0,)
        captions_types = {r[0]: r[1] for r in con.execute("describe captions").fetchall()}
        assert captions_types["ingested_at"] == "TIMESTAMP WITH TIME ZONE"
        rows = con.execute("select task, value from results order by task").fetchall()
        assert rows == [("retrieval", 0.5), ("zero_shot", 0.7)]
    finally:
        con.close()


def test_rows_appended_after_the_build_are_seen_once_rebuilt(tables, tmp_path):
    tables.append("captions", [caption("coco", 0)])
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    tables.append("captions", [caption("nlphuji/flickr 30k", 1), caption("coco", 2)])
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from captions").fetchone() == (1,)  # a copy, as of its build
    build_catalog(tables, path)
    with duckdb.connect(str(path), read_only=True) as con:
        got = con.execute("select dataset, count(*) from captions group by 1 order by 1").fetchall()
    assert got == [("coco", 2), ("nlphuji/flickr 30k", 1)]  # hive value decoded, typed VARCHAR


def test_partition_values_that_look_like_numbers_stay_text(tables, tmp_path):
    tables.append("captions", [caption("2017", 0)])
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select dataset from captions").fetchall() == [("2017",)]


def test_two_read_only_readers_at_once_and_rebuild_replaces(tables, tmp_path):
    tables.append(
        "runs",
        [
            dict(
                run_id="r1",
                flow="embed",
                config_name="demo",
                config_fp="f" * 64,
                code_version="v",
                started_at=NOW,
                finished_at=None,
                status="running",
                stand_in=True,
                host="h",
                pid=1,
                updated_at=NOW,
            )
        ],
    )
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    a = duckdb.connect(str(path), read_only=True)
    b = duckdb.connect(str(path), read_only=True)
    try:
        assert a.execute("select status from runs").fetchall() == b.execute("select status from runs").fetchall()
        assert build_catalog(tables, path) == path  # rebuilding while readers hold the old one
        assert a.execute("select count(*) from runs").fetchone() == (1,)
    finally:
        a.close()
        b.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.duckdb", "tables"]  # no temp files left


def test_any_table_root_can_back_a_catalog(tmp_path):
    tables = TableStore("memory://catalog-test")
    tables.append("results", [result("retrieval", 0.5)])
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select value from results").fetchall() == [(0.5,)]


def test_latest_results_keeps_the_newest_row_of_each_number(tables, tmp_path):
    later = datetime(2026, 2, 1, tzinfo=timezone.utc)
    tables.append("results", [result("retrieval", 0.5), result("retrieval", 0.4, metric="R@5")], part="run-1")
    tables.append("results", [result("retrieval", 0.6, run_id="run-2", created_at=later),
                              result("retrieval", 0.1, run_id="run-2", created_at=later, variant="uncentred")],
                  part="run-2")
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from results").fetchone() == (4,)
        got = con.execute("select variant, metric, value, run_id from latest_results order by 1, 2").fetchall()
    assert got == [("textme", "R@1", 0.6, "run-2"), ("textme", "R@5", 0.4, "run-1"),
                   ("uncentred", "R@1", 0.1, "run-2")]


def test_runs_are_one_row_per_run(tables, tmp_path):
    tables.append("runs", [run_row("r1", "running")], part="r1.started")
    tables.append("runs", [run_row("r1", "completed", finished=T0 + timedelta(seconds=9))], part="r1.finished")
    tables.append("runs", [run_row("r2", "running")], part="r2.started")
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from runs").fetchone() == (2,)
        assert con.execute("select status from runs where run_id = 'r1'").fetchall() == [("completed",)]


def test_parts_nobody_listed_or_damaged_never_reach_the_catalog(tables, tmp_path):
    tables.append("results", [result("retrieval", 84.0)], part="run-1")
    tables.append("results", [result("zero_shot", 70.0, run_id="run-2")], part="run-2")
    root = tables.loc.url
    forged = result("retrieval", 12.34, run_id="run-9", created_at=NOW + timedelta(days=1))
    write_raw(root, "results/task=retrieval/part-run-9.parquet", [forged], drop=("task",))
    damaged = next(f for f in tables.files("results") if "zero_shot" in f)
    flip_byte(root, damaged, 120)
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select metric, value from latest_results").fetchall() == [("R@1", 84.0)]
        problems = {(p.kind, p.file) for p in catalog_problems(con)}
        assert con.execute("select count(*) from meta.parts").fetchone() == (1,)
    assert problems == {("unlisted", "results/task=retrieval/part-run-9.parquet"), ("damaged", damaged)}


def demo_like_tables(root: Path) -> TableStore:
    """Tables shaped like a demo run's: results of two tasks, training, offsets, runs."""
    tables = TableStore(root)
    rows = [result("retrieval", v, eval_name="image_retrieval", variant=variant)
            for v, variant in ((84.0, "textme"), (12.5, "uncentred"))]
    rows.append(result("classification", 71.0, eval_name="point_classification", metric="top1"))
    tables.append("results", rows, part="run-1")
    tables.append("training", [dict(run_id="run-1", encoder="toy_image", variant="textme", projection_fp="p",
                                    epoch=e, loss=1.0 / (e + 1), lr=5e-4, seconds=0.1) for e in range(3)])
    tables.append("runs", [run_row("run-1", "completed", finished=T0 + timedelta(seconds=40))], part="run-1.f")
    return tables


README_SQL = """
  select eval_name, variant, metric, round(value, 2) as value, stand_in
  from latest_results where metric = 'R@1' order by eval_name, variant"""


def shell(catalog: str, sql: str, cwd: Path) -> str:
    proc = subprocess.run([duckdb_shell(), "-readonly", catalog, "-csv", "-c", sql], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_duckdb_shell_reads_the_catalog(tmp_path):
    version = subprocess.run([duckdb_shell(), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.split()[0].lstrip("v").split(".")[:2] == duckdb.__version__.split(".")[:2]
    build_catalog(demo_like_tables(tmp_path / ".textme" / "tables"), tmp_path / ".textme" / "catalog.duckdb")
    out = shell(".textme/catalog.duckdb", README_SQL, tmp_path)
    assert out.splitlines() == ["eval_name,variant,metric,value,stand_in",
                                "image_retrieval,textme,R@1,84.0,true", "image_retrieval,uncentred,R@1,12.5,true"]


def test_a_copied_workdir_answers_the_same_from_anywhere(tmp_path):
    work = tmp_path / "work"
    build_catalog(demo_like_tables(work / "tables"), work / "catalog.duckdb")
    expected = shell("catalog.duckdb", README_SQL, work)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(work, moved)
    shutil.rmtree(work)  # nothing may point back at the original
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    assert shell(os.path.relpath(moved / "catalog.duckdb", elsewhere), README_SQL, elsewhere) == expected
    assert shell(str(moved / "catalog.duckdb"), "select count(*) from training", elsewhere).split() == ["count_star()",
                                                                                                      "3"]


def read_files(monkeypatch) -> list[str]:
    """The part files every read from now on fetches and checks (table/file)."""
    seen: list[str] = []
    original = parts.check
    monkeypatch.setattr(parts, "check", lambda loc, table, entry: seen.append(f"{table}/{entry.file}") or original(
        loc, table, entry))
    return seen


def test_a_rebuild_reads_only_what_changed(tables, tmp_path, monkeypatch):
    tables.append("captions", [caption("coco", i) for i in range(50)], part="snap1")
    tables.append("results", [result("retrieval", 0.5)], part="run-1")
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    first = tables.files("results")
    scanned = []
    original = TableStore.scan
    monkeypatch.setattr(TableStore, "scan", lambda self, name, *a, **k: scanned.append(name) or original(
        self, name, *a, **k))
    read = read_files(monkeypatch)
    tables.append("results", [result("retrieval", 0.7, run_id="run-2")], part="run-2")
    build_catalog(tables, path)
    # results only gained a part: its new rows are appended, the old part is not read again
    assert scanned == [] and read == [f for f in tables.files("results") if f not in first]
    with duckdb.connect(str(path), read_only=True) as con:
        assert sorted(con.execute("select run_id, value from results").fetchall()) == [("run-1", 0.5),
                                                                                       ("run-2", 0.7)]
        assert sorted(r[0] for r in con.execute(
            "select file from meta.parts where \"table\" = 'results'").fetchall()) == tables.files("results")
    assert tables.compact("results").parts_after == 1  # the parts the catalog holds are gone:
    read.clear()
    build_catalog(tables, path)  # results is read again, whole
    assert scanned == ["results"] and read == tables.files("results")
    scanned.clear()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from captions").fetchone() == (50,)
        assert con.execute("select count(*) from results").fetchone() == (2,)
        assert con.execute("select count(*) from meta.parts where \"table\" = 'captions'").fetchone() == (1,)
    # a table left out damaged last time is read again (its writer may have healed it)
    damaged = tables.files("captions")[0]
    flip_byte(tables.loc.url, damaged, 100)
    scanned.clear()
    build_catalog(tables, path)  # captions' parts are as listed before: kept, not re-read
    assert scanned == []
    tables.append("captions", [caption("coco", i) for i in range(50)], part="snap1")  # healed by its writer
    build_catalog(tables, path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from captions").fetchone() == (50,)
        assert catalog_problems(con) == []


def test_a_damaged_new_part_is_left_out_of_a_catch_up_then_read_once_healed(tables, tmp_path):
    tables.append("results", [result("retrieval", 0.5)], part="run-1")
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    tables.append("results", [result("retrieval", 0.7, run_id="run-2")], part="run-2")
    new = next(f for f in tables.files("results") if "run-2" in f)
    good = (Path(tables.loc.url.removeprefix("file://")) / new).read_bytes()
    flip_byte(tables.loc.url, new, 120)
    build_catalog(tables, path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select run_id from results").fetchall() == [("run-1",)]
        assert [(p.kind, p.file) for p in catalog_problems(con)] == [("damaged", new)]
    (Path(tables.loc.url.removeprefix("file://")) / new).write_bytes(good)
    build_catalog(tables, path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert sorted(con.execute("select run_id from results").fetchall()) == [("run-1",), ("run-2",)]
        assert catalog_problems(con) == []


def test_a_catalog_of_views_from_before_is_replaced(tables, tmp_path):
    path = tmp_path / "catalog.duckdb"
    with duckdb.connect(str(path)) as con:  # what the previous version built
        con.execute("create view results as select 1 as x")
    tables.append("results", [result("retrieval", 0.5)])
    build_catalog(tables, path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select value from results").fetchall() == [(0.5,)]
