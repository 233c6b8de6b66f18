"""The DuckDB catalog: a view per table, read-only readers, empty tables, remote roots."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pytest
from test_storage_tables import caption, result

from storage.catalog import build_catalog
from storage.tables import SCHEMAS, TableStore

NOW = datetime(2026, 1, 25, tzinfo=timezone.utc)


@pytest.fixture(params=["local", "file"])
def tables(request, tmp_path):
    path = tmp_path / "tables"
    return TableStore(str(path) if request.param == "local" else f"file://{path}")


def test_views_for_every_table_even_empty_ones(tables, tmp_path):
    tables.append("results", [result("retrieval", 0.5), result("zero_shot", 0.7)])
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    con = duckdb.connect(str(path), read_only=True)
    try:
        views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        assert views == set(SCHEMAS) | {"latest_results"}
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


def test_rows_appended_after_the_build_are_seen(tables, tmp_path):
    tables.append("captions", [caption("coco", 0)])
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    tables.append("captions", [caption("nlphuji/flickr 30k", 1), caption("coco", 2)])
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
            )
        ],
    )
    path = build_catalog(tables, tmp_path / "catalog.duckdb")
    a = duckdb.connect(str(path), read_only=True)
    b = duckdb.connect(str(path), read_only=True)
    try:
        assert a.execute("select status from runs").fetchall() == b.execute("select status from runs").fetchall()
    finally:
        a.close()
        b.close()
    assert build_catalog(tables, path) == path  # rebuilding over an existing catalog
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.duckdb", "tables"]  # no temp files left


def test_memory_root_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="DuckDB reads only local paths"):
        build_catalog(TableStore("memory://catalog-test"), tmp_path / "catalog.duckdb")


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
