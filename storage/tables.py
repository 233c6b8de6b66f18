"""Schema-checked Parquet tables: captions, runs, offsets, training, results, embed_log.

Layout under the root (local folder or fsspec URL)::

    <table>/part-<part>.parquet                  unpartitioned tables
    <table>/<column>=<value>/part-<part>.parquet  hive-partitioned tables

Partitioned by the column queries filter on first: ``captions`` by ``dataset`` (a
stage reads one dataset's captions) and ``results`` by ``task`` (reports compare
encoders within a task). The other tables are small and unpartitioned. Partition
values are percent-encoded in folder names (``nlphuji%2Fflickr30k``); DuckDB and
pyarrow both decode them.

Every append writes new part files, each atomically (temporary name, then rename;
one put on object stores), so a reader never sees half a file. With ``part`` given
the append is idempotent: a part already written is left alone, so a retried task
that names its part by a fingerprint of its inputs never duplicates rows.

Every ``results`` row carries the fingerprints of what produced it (captions_fp,
source/target_identity_fp, offset_fp, projection_fp, config_fp, code_version) and
``stand_in``, true when any model involved is a tiny or toy stand-in.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage.errors import TableSchemaError
from storage.fs import Location

__all__ = ["SCHEMAS", "PARTITIONS", "TableStore", "TableSchemaError"]

_TS = pa.timestamp("us", tz="UTC")
_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    """(name, type, required) triples; required columns refuse nulls."""
    return pa.schema([pa.field(name, typ, nullable=not required) for name, typ, required in fields])


SCHEMAS: dict[str, pa.Schema] = {
    "captions": _schema(
        ("dataset", _S, True),
        ("caption_id", _S, True),
        ("text", _S, True),
        ("text_sha", _S, True),  # storage.fingerprint.text_key(text): the cache key
        ("source", _S, False),
        ("snapshot", _S, False),  # source revision / etag / file hash
        ("ingested_at", _TS, True),
    ),
    "runs": _schema(
        ("run_id", _S, True),
        ("flow", _S, True),
        ("config_name", _S, False),
        ("config_fp", _S, False),
        ("code_version", _S, False),
        ("started_at", _TS, True),
        ("finished_at", _TS, False),
        ("status", _S, True),
        ("stand_in", _B, False),
    ),
    "offsets": _schema(
        ("run_id", _S, True),
        ("encoder", _S, True),
        ("dataset", _S, True),
        ("identity_fp", _S, True),
        ("n_text", _I, True),
        ("n_modal", _I, True),
        ("text_mean_norm", _F, True),
        ("modal_mean_norm", _F, True),
        ("gap_norm", _F, True),
        ("offset_fp", _S, True),
        ("path", _S, False),
    ),
    "training": _schema(
        ("run_id", _S, True),
        ("encoder", _S, True),
        ("variant", _S, False),
        ("projection_fp", _S, False),
        ("epoch", _I, True),
        ("loss", _F, True),
        ("lr", _F, False),
        ("seconds", _F, False),
    ),
    "results": _schema(
        ("run_id", _S, True),
        ("task", _S, True),
        ("eval_name", _S, True),
        ("dataset", _S, True),
        ("source_encoder", _S, False),
        ("target_encoder", _S, False),
        ("variant", _S, False),
        ("metric", _S, True),
        ("value", _F, True),
        ("n_queries", _I, False),
        ("stand_in", _B, True),
        ("captions_fp", _S, False),
        ("source_identity_fp", _S, False),
        ("target_identity_fp", _S, False),
        ("offset_fp", _S, False),
        ("projection_fp", _S, False),
        ("config_fp", _S, True),
        ("code_version", _S, True),
        ("created_at", _TS, True),
    ),
    "embed_log": _schema(
        ("run_id", _S, True),
        ("stage", _S, True),
        ("encoder", _S, True),
        ("tower", _S, True),
        ("namespace", _S, True),
        ("n_requested", _I, True),
        ("n_computed", _I, True),
        ("seconds", _F, True),
        ("created_at", _TS, True),
        ("n_skipped", _I, False),  # items left out as undecodable (on_bad_item: skip); null in older rows
        ("skipped", _S, False),  # the first of them, one path per line
    ),
}

#: table -> hive partition column (absent: unpartitioned).
PARTITIONS: dict[str, str] = {"captions": "dataset", "results": "task"}

_PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")

# Python values accepted per Arrow type (bool is excluded from the numbers on purpose).
_ACCEPT = {
    "string": (str,),
    "int64": (int, np.integer),
    "double": (float, int, np.floating, np.integer),
    "bool": (bool, np.bool_),
}


class TableStore:
    """The pipeline's Parquet tables under one root (local folder or fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None):
        self.loc = Location(os.fspath(root), dict(storage_options or {}))

    def __repr__(self) -> str:
        return f"TableStore({self.loc.url!r})"

    def append(self, name: str, rows: Sequence[Mapping[str, Any]] | pa.Table, part: str | None = None) -> int:
        """Check rows against the table's schema and write them; return rows written.

        `rows` is a list of dicts (every column present, None only where nullable) or a
        pyarrow Table with those columns. Errors name the table, the column and, for
        dicts, the row. With `part`, a part already written is left alone (returns 0).
        """
        schema = _schema_of(name)
        table = _to_table(name, schema, rows)
        if table.num_rows == 0:
            return 0
        if part is not None and not _PART_NAME.fullmatch(part):
            raise ValueError(f"table {name!r}: part name {part!r} must match {_PART_NAME.pattern}")
        file_name = f"part-{part or _unique_part()}.parquet"
        written = 0
        for folder, piece in _split_partitions(name, table):
            rel = f"{name}/{folder}/{file_name}" if folder else f"{name}/{file_name}"
            data = _parquet_bytes(piece)
            if part is None:
                self.loc.write_file(rel, data, atomic=True)
                written += piece.num_rows
            elif self.loc.write_new(rel, data):
                written += piece.num_rows
        return written

    def read(self, name: str, filters: Any = None) -> pa.Table:
        """All rows of a table (with the full schema; empty if nothing was written).

        `filters`: a dict {column: value or list of values}, a pyarrow compute
        Expression, or pyarrow's DNF list of (column, op, value) tuples. Row order
        across parts is not defined.
        """
        schema = _schema_of(name)
        if not self.files(name):
            return schema.empty_table()
        column = PARTITIONS.get(name)
        partitioning = ds.partitioning(pa.schema([pa.field(column, _S)]), flavor="hive") if column else None
        dataset = ds.dataset(
            self.loc.path(name),
            schema=schema,
            format="parquet",
            filesystem=None if self.loc.is_local else self.loc.fs,
            partitioning=partitioning,
        )
        return dataset.to_table(filter=_filter_expression(name, schema, filters)).cast(schema)

    def files(self, name: str) -> list[str]:
        """Relative paths of a table's Parquet files (sorted)."""
        _schema_of(name)
        return sorted(
            f"{name}/{rel}"
            for rel in self.loc.file_sizes(name)
            if rel.endswith(".parquet") and not os.path.basename(rel).startswith((".", "_"))
        )


# ---------------------------------------------------------------------- helpers


def _schema_of(name: str) -> pa.Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(SCHEMAS)}") from None


def _unique_part() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}"


def _to_table(name: str, schema: pa.Schema, rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return _check_table(name, schema, rows)
    if isinstance(rows, (Mapping, str, bytes)):
        raise TypeError(f"table {name!r}: rows must be a list of dicts or a pyarrow.Table, not a {type(rows).__name__}")
    rows = list(rows)
    expected = set(schema.names)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"table {name!r} row {i}: expected a dict, got {type(row).__name__}")
        if row.keys() != expected:
            missing = [c for c in schema.names if c not in row]
            if missing:
                raise TableSchemaError(f"table {name!r} row {i}: missing column {missing[0]!r} (missing: {missing})")
            extra = sorted(set(row) - expected)
            raise TableSchemaError(f"table {name!r} row {i}: unknown column {extra[0]!r}; columns are {schema.names}")
    arrays = [_column(name, f, [row[f.name] for row in rows]) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _column(table: str, f: pa.Field, values: list) -> pa.Array:
    accept = _ACCEPT.get(str(f.type)) or ((datetime,) if pa.types.is_timestamp(f.type) else None)
    for i, v in enumerate(values):
        if v is None:
            if not f.nullable:
                raise TableSchemaError(f"table {table!r} row {i}: column {f.name!r} is required, got None")
            continue
        bad_bool = isinstance(v, (bool, np.bool_)) and not pa.types.is_boolean(f.type)
        if bad_bool or not isinstance(v, accept):
            raise TableSchemaError(
                f"table {table!r} row {i}: column {f.name!r} expects {f.type}, got {type(v).__name__} {v!r}"
            )
    return pa.array(values, type=f.type)  # naive datetimes are taken as UTC


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether a column of type src may be cast to the schema's dst (same kind only:
    never str -> number, which pyarrow would parse)."""
    if pa.types.is_null(src):
        return True  # an all-None column; the null check decides
    if _is_text(dst):
        return _is_text(src)
    if pa.types.is_floating(dst):
        return pa.types.is_floating(src) or pa.types.is_integer(src)
    for kind in (pa.types.is_integer, pa.types.is_timestamp, pa.types.is_boolean):
        if kind(dst):
            return kind(src)
    return src == dst


def _check_table(name: str, schema: pa.Schema, table: pa.Table) -> pa.Table:
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise TableSchemaError(f"table {name!r}: missing column {missing[0]!r} (missing: {missing})")
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise TableSchemaError(f"table {name!r}: unknown column {extra[0]!r}; columns are {schema.names}")
    arrays = []
    for f in schema:
        col = table.column(f.name)
        if col.type != f.type:
            if not _castable(col.type, f.type):
                raise TableSchemaError(f"table {name!r}: column {f.name!r} expects {f.type}, got {col.type}")
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise TableSchemaError(f"table {name!r}: column {f.name!r} cannot become {f.type}: {e}") from None
        if not f.nullable and col.null_count:
            first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
            raise TableSchemaError(f"table {name!r} row {first}: column {f.name!r} is required, got None")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)


def _split_partitions(name: str, table: pa.Table) -> list[tuple[str, pa.Table]]:
    """[(hive folder or "", rows without the partition column)], one per value."""
    column = PARTITIONS.get(name)
    if column is None:
        return [("", table)]
    values = table.column(column)
    out = []
    for value in sorted(set(values.to_pylist())):
        if value == "":
            raise TableSchemaError(f"table {name!r}: partition column {column!r} must not be empty")
        piece = table.filter(pc.equal(values, value)).drop_columns([column])
        out.append((f"{column}={quote(value, safe='')}", piece))
    return out


def _parquet_bytes(table: pa.Table) -> memoryview:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getbuffer()


def _filter_expression(name: str, schema: pa.Schema, filters: Any):
    if filters is None or isinstance(filters, ds.Expression):
        return filters
    if isinstance(filters, Mapping):
        expr = None
        for column, value in filters.items():
            if column not in schema.names:
                raise KeyError(f"table {name!r}: cannot filter on unknown column {column!r}; columns: {schema.names}")
            if isinstance(value, (list, tuple, set)):
                term = ds.field(column).isin(list(value))
            else:
                term = ds.field(column) == value
            expr = term if expr is None else expr & term
        return expr
    return pq.filters_to_expression(filters)
