"""A DuckDB catalog file holding a copy of every table, for the duckdb shell and Python.

    duckdb -readonly .textme/catalog.duckdb -c "select eval_name, variant, metric, value from latest_results"
    duckdb.connect(".textme/catalog.duckdb", read_only=True).sql("select * from offsets")

Why a copy (materialised tables) and not views over the Parquet files: the catalog must
answer the same queries wherever the workdir is, and only with the parts the tables'
own manifests list and whose checksums match. DuckDB 1.5 offers no view that does both:

- views hold the paths they were built with: absolute paths break when a workdir is
  copied or moved ("No files found that match the pattern ..."), relative paths resolve
  against the *process's* working directory, not the catalog's folder, so they break as
  soon as the shell runs anywhere else;
- ``file_search_path`` would fix that, but it is a per-connection setting the shell
  user would have to type; nothing stored in a database file sets it on open;
- a glob reads every Parquet file in the folder, also one dropped there by hand, and
  does not check checksums; a view over an explicit file list would be checked only
  when it was built, not when it is read.

A copy has none of these problems: the file is self-contained (copy it anywhere, query
it from anywhere, with any duckdb >= 1.0: it is written with storage version v1.0.0),
and what it holds was read through `TableStore.scan`, so only listed, intact parts.
The cost is the copy: the catalog is rebuilt by the pipeline at each run's end, and
holds the tables as of then. A rebuild takes from the previous file every table whose
parts have not changed (`captions`, the big one, rarely changes), appends to it only the
new parts' rows where a table merely gained parts (`results`, `head_checks`: each run
adds its own), and re-reads the others; so a run's rebuild costs what the run wrote, not
the whole history.

Besides the tables, the catalog has ``latest_results`` (a view: the newest row of each
number) and a ``meta`` schema: ``meta.parts`` (every part copied: table, file, sha256,
rows), ``meta.problems`` (every part left out: table, file, kind, detail) and
``meta.info`` (built_at, tables root).

Queries that cannot write: `open_read_only` opens a catalog read-only with DuckDB's
external access off (no file read or written besides the catalog itself: no COPY TO,
EXPORT, ATTACH, read_csv/read_parquet/glob of any path, INSTALL or LOAD, no spill
files) and its configuration locked (no SET can undo that), and `read_only_statement`
admits exactly one statement, a SELECT (WITH, FROM, VALUES, TABLE, DESCRIBE, SHOW,
SUMMARIZE and PRAGMA show_tables parse as SELECT) or an EXPLAIN of one. Everything
else (CREATE, INSERT, SET, CALL, a second statement after a `;`) is refused up front.
There is nothing to set up after opening, because the catalog needs no file but itself.

One writer at a time per catalog file: `build_catalog` builds a new file beside the old
one and renames it into place, so a reader never opens a half-built catalog. Everyone
else opens it read-only (DuckDB allows one read-write process or many read-only ones).
Any TableStore root works (local, file://, s3://, memory://): DuckDB reads nothing but
the catalog file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from storage.fs import fsync_dir
from storage.parts import Problem
from storage.tables import LATEST, SCHEMAS, TableStore

__all__ = ["build_catalog", "catalog_problems", "open_read_only", "read_only_statement", "QueryRefused",
           "READ_STATEMENTS", "LATEST_RESULTS_SQL", "STORAGE_VERSION"]

#: The DuckDB storage format the catalog is written in: readable by every duckdb >= 1.0.
STORAGE_VERSION = "v1.0.0"

#: `results` keeps every run's rows (the history); `latest_results` shows, for each
#: number (evaluation, variant, metric, encoders), only the row written last.
LATEST_RESULTS_SQL = """
CREATE OR REPLACE VIEW latest_results AS
SELECT * FROM results
QUALIFY row_number() OVER (
    PARTITION BY eval_name, task, dataset, variant, metric, source_encoder, target_encoder
    ORDER BY created_at DESC, run_id DESC) = 1
"""

_META = {
    "parts": pa.schema([("table", pa.string()), ("file", pa.string()), ("sha256", pa.string()),
                        ("rows", pa.int64())]),
    "problems": pa.schema([("table", pa.string()), ("file", pa.string()), ("kind", pa.string()),
                           ("detail", pa.string())]),
    "info": pa.schema([("built_at", pa.timestamp("us", tz="UTC")), ("tables_root", pa.string())]),
}


def build_catalog(tables: TableStore, catalog_path: str | os.PathLike[str]) -> Path:
    """Write (or replace) the DuckDB catalog at `catalog_path`; return its path.

    From the current catalog, a table is taken as it is when its listed parts (files
    and checksums) are the ones it was built from, with no part left out then; it is
    taken and caught up (the new parts' rows appended, nothing else read) when it was
    built from some of the parts listed now and the table is not keyed; the others are
    read again. When the tables read again are the larger part, the catalog is built
    afresh, so a file never carries much free space.
    """
    path = Path(catalog_path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    current = {name: sorted((f"{name}/{e.file}", e.sha256) for e in tables.parts(name)) for name in SCHEMAS}
    held = _reusable(path, current)
    meta: dict[str, list[dict]] = {"parts": [], "problems": [], "info": [
        {"built_at": datetime.now(timezone.utc), "tables_root": tables.loc.url}]}
    try:
        if held:
            shutil.copyfile(path, tmp)
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": STORAGE_VERSION})
        try:
            for name in SCHEMAS:
                if name in held:
                    caught_up = _catch_up(con, tables, name, held[name], current[name])
                    if caught_up is not None:
                        meta["parts"] += caught_up[0]
                        meta["problems"] += caught_up[1]
                        continue
                scan = tables.scan(name)
                con.execute(f"DROP TABLE IF EXISTS {name}")
                _create_table(con, name, scan.table)
                meta["parts"] += [_part_row(name, e) for e in scan.parts]
                meta["problems"] += [_problem_row(p) for p in scan.problems]
            con.execute(LATEST_RESULTS_SQL)
            con.execute("CREATE SCHEMA IF NOT EXISTS meta")
            for name, schema in _META.items():
                con.execute(f"DROP TABLE IF EXISTS meta.{name}")
                _create_table(con, f"meta.{name}", pa.Table.from_pylist(meta[name], schema=schema))
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
        fsync_dir(str(path.parent))
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return path


def _catch_up(con: duckdb.DuckDBPyConnection, tables: TableStore, name: str, held: list[tuple[str, str, int]],
              listed: list[tuple[str, str]]) -> tuple[list[dict], list[dict]] | None:
    """Bring the copied table `name`, built from the parts `held`, up to the parts
    listed now: unchanged, or the new parts' rows appended. Returns its meta rows
    (parts, problems), or None when it has to be read again (a held part was compacted
    away or rewritten since `listed` was taken)."""
    parts = [{"table": name, "file": f, "sha256": sha, "rows": rows} for f, sha, rows in held]
    if [(f, sha) for f, sha, _ in held] == listed:
        return parts, [_problem_row(p) for p in tables.unlisted(name)]
    prefix = f"{name}/"
    added = tables.scan_added(name, {(f.removeprefix(prefix), sha) for f, sha, _ in held})
    if added is None:
        return None
    if added.table.num_rows:
        con.register("_incoming", added.table)
        try:
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _incoming")
        finally:
            con.unregister("_incoming")
    return parts + [_part_row(name, e) for e in added.parts], [_problem_row(p) for p in added.problems]


def _part_row(name: str, entry: Any) -> dict:
    return {"table": name, "file": f"{name}/{entry.file}", "sha256": entry.sha256, "rows": entry.rows}


def _problem_row(p: Problem) -> dict:
    return {"table": p.table, "file": p.file, "kind": p.kind, "detail": p.detail}


def _reusable(path: Path, current: dict[str, list[tuple[str, str]]]) -> dict[str, list[tuple[str, str, int]]]:
    """{table: the parts (file, sha256, rows) it was built from} for the tables of the
    catalog at `path` that can be kept as they are or caught up: built from exactly the
    parts listed now, or (a table that is not keyed) from some of them; none left out
    damaged or missing then; with the table's current columns. Empty when a fresh build
    is better."""
    if not path.is_file():
        return {}
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return {}
    try:
        built: dict[str, list[tuple[str, str, int]]] = {}
        for table, file, sha, rows in con.execute('SELECT "table", file, sha256, rows FROM meta.parts').fetchall():
            built.setdefault(table, []).append((file, sha, rows))
        broken = {t for (t,) in con.execute(
            "SELECT DISTINCT \"table\" FROM meta.problems WHERE kind <> 'unlisted'").fetchall()}
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, kind in con.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = 'main' ORDER BY table_name, column_index").fetchall():
            columns.setdefault(table, []).append((column, kind))
        expected = {name: _duckdb_columns(con, schema) for name, schema in SCHEMAS.items()}
    except duckdb.Error:  # an older catalog (views, no meta): build afresh
        return {}
    finally:
        con.close()
    held = {}
    for name, now in current.items():
        parts = sorted(built.get(name, []))
        was = [(f, sha) for f, sha, _ in parts]
        grown = name not in LATEST and set(was) <= set(now)
        if (was == now or grown) and name not in broken and columns.get(name) == expected[name]:
            held[name] = parts
    kept_rows = sum(rows for parts in held.values() for _, _, rows in parts)
    dropped_rows = sum(rows for name, parts in built.items() if name not in held for _, _, rows in parts)
    return held if held and kept_rows >= dropped_rows else {}


def _duckdb_columns(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a table built from an Arrow table of `schema`."""
    con.register("_shape", schema.empty_table())
    try:
        return [(r[0], r[1]) for r in con.execute("DESCRIBE SELECT * FROM _shape").fetchall()]
    finally:
        con.unregister("_shape")


def _create_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    con.register("_incoming", table)
    try:
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _incoming")
    finally:
        con.unregister("_incoming")


def catalog_problems(con: duckdb.DuckDBPyConnection) -> list[Problem]:
    """The parts a catalog's build left out (an older catalog without `meta`: none)."""
    try:
        rows = con.execute("SELECT \"table\", file, kind, detail FROM meta.problems ORDER BY 1, 2").fetchall()
    except duckdb.Error:
        return []
    return [Problem(*row) for row in rows]


#: Statement types a query may have (DuckDB's parser names; see the module docstring).
READ_STATEMENTS = ("SELECT", "EXPLAIN")

#: Connection settings of a query: the catalog file only, no extensions, no changes.
_LOCKDOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # no scanning of the caller's Python variables
    "temp_directory": "",                 # no spill files next to the catalog
    "lock_configuration": True,           # last: nothing above can be SET back
}

_EXPLAIN = re.compile(r"\s*explain\s+(?:analy[sz]e\s+)?(?:\([^)]*\)\s*)?(?P<inner>.*)\Z", re.I | re.S)


class QueryRefused(ValueError):
    """A query that is not one read-only statement (the message says why, in one line)."""


def open_read_only(catalog_path: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """A read-only, locked-down connection to a catalog (see the module docstring)."""
    return duckdb.connect(str(catalog_path), read_only=True, config=dict(_LOCKDOWN))


def read_only_statement(sql: str) -> duckdb.Statement:
    """The one read-only statement in `sql`, or QueryRefused (duckdb.ParserException
    for SQL that does not parse)."""
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise QueryRefused("no SQL statement given")
    if len(statements) > 1:
        kinds = ", ".join(s.type.name for s in statements)
        raise QueryRefused(f"one statement at a time: got {len(statements)} ({kinds})")
    statement = statements[0]
    kind = statement.type.name
    if kind == "EXPLAIN":
        match = _EXPLAIN.match(statement.query)
        inner = duckdb.extract_statements(match.group("inner")) if match and match.group("inner").strip() else []
        if len(inner) != 1 or inner[0].type.name != "SELECT":
            raise QueryRefused("EXPLAIN is allowed of a SELECT only: queries are read-only")
    elif kind not in READ_STATEMENTS:
        raise QueryRefused(f"{kind} statements are not allowed: queries are read-only "
                           "(SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)")
    return statement
