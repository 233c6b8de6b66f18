"""A DuckDB catalog file with one view per table, over the tables' Parquet files.

    duckdb .textme/catalog.duckdb -c "select eval_name, variant, metric, value from latest_results"
    duckdb.connect(".textme/catalog.duckdb", read_only=True).sql("select * from offsets")

Views read the files at query time (``read_parquet`` over a glob, hive partitions,
``union_by_name`` so older parts without a newer column still read), so rows appended
after the build are seen without rebuilding. Two exceptions need a rebuild, which is
cheap: a table that had no files at build time is a typed empty view (DuckDB refuses a
glob that matches nothing), and a moved table root.

One writer: `build_catalog` builds a new file beside the old one and renames it into
place, so a reader never opens a half-built catalog. Everyone else opens it read-only
(DuckDB allows one read-write process or many read-only ones).

DuckDB reads local paths by itself and s3://, gs://, https:// through its httpfs
extension (loaded, with credentials, by whoever queries). Other fsspec roots, such as
memory://, cannot back a catalog: `build_catalog` says so.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa

from storage.fs import fsync_dir
from storage.tables import PARTITIONS, SCHEMAS, TableStore

__all__ = ["build_catalog", "DUCKDB_REMOTE_PROTOCOLS", "LATEST_RESULTS_SQL"]

#: URL schemes DuckDB can read (with httpfs) besides local files.
DUCKDB_REMOTE_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "http", "https", "az", "abfss")

#: `results` keeps every run's rows (the history); `latest_results` shows, for each
#: number (evaluation, variant, metric, encoders), only the row written last.
LATEST_RESULTS_SQL = """
CREATE OR REPLACE VIEW latest_results AS
SELECT * FROM results
QUALIFY row_number() OVER (
    PARTITION BY eval_name, task, dataset, variant, metric, source_encoder, target_encoder
    ORDER BY created_at DESC, run_id DESC) = 1
"""

_DUCKDB_TYPES = {"string": "VARCHAR", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN"}


def build_catalog(tables: TableStore, catalog_path: str | os.PathLike[str]) -> Path:
    """Write (or replace) the DuckDB catalog at `catalog_path`; return its path."""
    table_root = _duckdb_root(tables)
    path = Path(catalog_path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        con = duckdb.connect(str(tmp))
        try:
            for name, schema in SCHEMAS.items():
                con.execute(_view_sql(name, schema, table_root, bool(tables.files(name))))
            con.execute(LATEST_RESULTS_SQL)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
        fsync_dir(str(path.parent))
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return path


def _duckdb_root(tables: TableStore) -> str:
    loc = tables.loc
    if loc.is_local:
        return loc.root
    protocol = loc.fs.protocol if isinstance(loc.fs.protocol, str) else loc.fs.protocol[0]
    if protocol not in DUCKDB_REMOTE_PROTOCOLS:
        raise ValueError(
            f"cannot build a DuckDB catalog over tables at {loc.url}: DuckDB reads only local "
            f"paths and {', '.join(DUCKDB_REMOTE_PROTOCOLS)} URLs (through httpfs). Put the "
            "tables in a local folder or on object storage DuckDB can reach"
        )
    return loc.full_url()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(name: str, schema: pa.Schema, root: str, has_files: bool) -> str:
    if not has_files:
        columns = ", ".join(f"CAST(NULL AS {_duckdb_type(f.type)}) AS {f.name}" for f in schema)
        return f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} WHERE false"
    column = PARTITIONS.get(name)
    if column:
        glob = f"{root}/{name}/*/*.parquet"
        options = f"hive_partitioning = true, hive_types = {{'{column}': 'VARCHAR'}}"
    else:
        glob = f"{root}/{name}/*.parquet"
        options = "hive_partitioning = false"
    return (
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_quote(glob)}, {options}, union_by_name = true)"
    )


def _duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return _DUCKDB_TYPES[str(t)]
