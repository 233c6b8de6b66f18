"""Schema-checked Parquet tables: captions, runs, offsets, training, results, embed_log,
head_checks.

Layout under the root (local folder or fsspec URL)::

    <table>/part-<part>.parquet                   unpartitioned tables
    <table>/<column>=<value>/part-<part>.parquet  hive-partitioned tables
    <table>/_manifest/...                         the parts the table wrote (storage/parts.py)

Partitioned by the column queries filter on first: ``captions`` by ``dataset`` (a
stage reads one dataset's captions) and ``results`` by ``task`` (reports compare
encoders within a task). The other tables are small and unpartitioned. Partition
values are percent-encoded in folder names (``nlphuji%2Fflickr30k``).

Every append writes new part files, each atomically (temporary name, then rename;
one put on object stores), then lists each in the table's own manifest with its sha256
and row count. Readers use only listed parts whose bytes match: a Parquet file dropped
into a table folder by hand, or a truncated or flipped part, is left out and reported
(logged once, returned by `scan`, listed by `verify`), so it can neither change a number
nor break later reads. With ``part`` given the append is idempotent: a part already
written is left alone (a retried task that names its part by a fingerprint of its
inputs never duplicates rows), and one whose file is missing or damaged is written
again. Parts named by ``part`` get a random token in their file name, so two writers
of the same part never write the same file.

Keyed tables (``LATEST``: ``runs`` by ``run_id``) get a new row per change (a run's
start, its end); reads show each key's latest row, so a run is one row.

`compact` merges a partition's parts into one (``textme tables compact``, and
automatically past AUTO_COMPACT_PARTS parts); the swap is atomic for readers.
Tables written before manifests existed have no entries: their parts are reported as
unlisted until `adopt` lists them, once, on request (``textme tables adopt CONFIG``).

Every ``results`` row carries the fingerprints of what produced it (captions_fp,
source/target_identity_fp, offset_fp, projection_fp, config_fp, code_version) and
``stand_in``, true when any model involved is a tiny or toy stand-in.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage import parts
from storage.errors import TableSchemaError
from storage.fs import Location
from storage.parts import Entry, Problem

__all__ = ["SCHEMAS", "PARTITIONS", "LATEST", "AUTO_COMPACT_PARTS", "TableStore", "TableScan", "TableReport",
           "CompactReport", "Problem", "TableSchemaError"]

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
        ("status", _S, True),  # running, completed, failed, crashed
        ("stand_in", _B, False),
        ("host", _S, False),  # where the run's process ran, and its pid: a dead one is "crashed"
        ("pid", _I, False),
        ("updated_at", _TS, False),  # when this row was written (the latest row of a run wins)
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
        ("warm_start_from", _S, False),  # heads the projection heads continued from; null: from scratch
        ("config_fp", _S, True),
        ("code_version", _S, True),
        ("created_at", _TS, True),
    ),
    # One row per head input check an evaluation ran (textme.head_check), per run: the
    # head's first Linear on the actual centred inputs vs its first BatchNorm's running
    # statistics. verdict: ok | mismatch | skipped (var_ratio / mean_shift then null).
    "head_checks": _schema(
        ("run_id", _S, True),
        ("eval_name", _S, True),
        ("encoder", _S, True),
        ("variant", _S, True),  # textme | released | uncentred
        ("tower", _S, True),  # the inputs: modal items or text (queries, text documents)
        ("projection_fp", _S, True),  # our stage key, or released:<file>@sha256:<hex>
        ("offset_fp", _S, False),
        ("head_file", _S, True),
        ("n_rows", _I, True),
        ("var_ratio", _F, False),  # median over features of var(z) / running_var
        ("mean_shift", _F, False),  # median of |mean(z) - running_mean| / running std
        ("verdict", _S, True),
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
        ("device", _S, False),  # where the chunk ran: cpu, cuda:0, gpu:<Ray GPU id>; null: cached (nothing ran)
    ),
}

#: table -> hive partition column (absent: unpartitioned).
PARTITIONS: dict[str, str] = {"captions": "dataset", "results": "task"}

#: Keyed tables: a read shows one row per key, the one with the latest of the ordering
#: columns (the first non-null one); older rows stay in the files as history.
LATEST: dict[str, tuple[str, tuple[str, ...]]] = {"runs": ("run_id", ("updated_at", "finished_at", "started_at"))}

#: Reads do not report unlisted files younger than this (a write may be in progress).
UNLISTED_GRACE_S = 30.0

#: Automatic compaction (`compact_if_needed`) merges a partition's parts once it has this many.
AUTO_COMPACT_PARTS = 16

_PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")
_PART_FILE = re.compile(r"part-([A-Za-z0-9][A-Za-z0-9_.=-]*?)(?:\.[0-9a-f]{8})?\.parquet")
_READ_ATTEMPTS = 20

log = logging.getLogger("storage.tables")
_reported: set[tuple[str, str, str]] = set()

# Python values accepted per Arrow type (bool is excluded from the numbers on purpose).
_ACCEPT = {
    "string": (str,),
    "int64": (int, np.integer),
    "double": (float, int, np.floating, np.integer),
    "bool": (bool, np.bool_),
}


@dataclass
class TableScan:
    """What a read used: the rows, the parts they came from, and the parts left out."""

    table: pa.Table
    parts: list[Entry]
    problems: list[Problem]


@dataclass
class TableReport:
    """`TableStore.verify()` for one table: listed parts checked, problems found."""

    table: str
    parts: int            # listed (visible) parts
    rows: int             # rows in the listed parts that passed
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def __str__(self) -> str:
        head = f"table {self.table}: {self.parts} parts, {self.rows} rows"
        if self.ok:
            return f"{head}, ok"
        counts = ", ".join(f"{n} {k}" for k in ("damaged", "missing", "unlisted", "bad entry")
                           if (n := len(self.kinds(k))))
        return f"{head}; {counts}: " + "; ".join(str(p) for p in self.problems)


@dataclass
class CompactReport:
    """What `TableStore.compact` did to one table."""

    table: str
    parts_before: int
    parts_after: int
    rows_before: int
    rows_after: int
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"table {self.table}: {self.parts_before} -> {self.parts_after} parts, "
                f"{self.rows_before} -> {self.rows_after} rows")


class _NotAnExtension(Exception):
    """`scan_added`: a part the caller holds is no longer listed as it was."""


class TableStore:
    """The pipeline's Parquet tables under one root (local folder or fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None):
        self.loc = Location(os.fspath(root), dict(storage_options or {}))

    def __repr__(self) -> str:
        return f"TableStore({self.loc.url!r})"

    # ------------------------------------------------------------------ writing
    def append(self, name: str, rows: Sequence[Mapping[str, Any]] | pa.Table, part: str | None = None) -> int:
        """Check rows against the table's schema and write them; return rows written.

        `rows` is a list of dicts (every column present, None only where nullable) or a
        pyarrow Table with those columns. Errors name the table, the column and, for
        dicts, the row. With `part`, a part already written is left alone (returns 0),
        unless its file is missing or damaged: then it is written again (healed).
        """
        schema = _schema_of(name)
        table = _to_table(name, schema, rows)
        if table.num_rows == 0:
            return 0
        if part is not None and not _PART_NAME.fullmatch(part):
            raise ValueError(f"table {name!r}: part name {part!r} must match {_PART_NAME.pattern}")
        parts.ensure_generation(self.loc, name)
        listing = parts.list_entries(self.loc, name) if part is not None else None
        written = 0
        for folder, piece in _split_partitions(name, table):
            written += self._write_part(name, folder, piece, part, listing)
        return written

    def _write_part(self, name: str, folder: str, piece: pa.Table, part: str | None,
                    listing: parts.Listing | None) -> int:
        broken: parts.Entry | None = None
        if part is not None:
            holder = listing.holder(folder, part)
            if holder is not None:
                own = holder.id == posixpath.join(folder, part) and holder.id not in listing.hidden_ids
                if not own or isinstance(parts.check(self.loc, name, holder), bytes):
                    return 0  # written (maybe compacted into another part): idempotent
                broken = holder  # its own entry, but the file is missing or damaged: heal
            # A token in the file name: two writers of one part never write the same file,
            # so an entry always describes the bytes of the file it names.
            file_name = f"part-{part}.{uuid.uuid4().hex[:8]}.parquet"
        else:
            part = _unique_part()
            file_name = f"part-{part}.parquet"
        rel = posixpath.join(folder, file_name)
        data = _parquet_bytes(piece)
        self.loc.write_file(f"{name}/{rel}", data, atomic=True)
        parts.publish(self.loc, name, parts.Entry.new(posixpath.join(folder, part), rel, data, piece.num_rows,
                                                      parts=(part,)))
        if broken is not None:
            parts.bump_generation(self.loc, name)  # readers that listed the old entry list again
            self.loc.remove(name, broken.file)
        return piece.num_rows

    # ------------------------------------------------------------------ reading
    def read(self, name: str, filters: Any = None, *, history: bool = False) -> pa.Table:
        """All rows of a table (with the full schema; empty if nothing was written).

        Only parts the table's manifest lists, with matching checksums, are read; the
        others are left out and logged (`scan` returns them). `filters`: a dict {column:
        value or list of values}, a pyarrow compute Expression, or pyarrow's DNF list of
        (column, op, value) tuples. Keyed tables (LATEST) show each key's latest row;
        `history=True` returns every row written. Row order across parts is not defined.
        """
        return self.scan(name, filters, history=history).table

    def scan(self, name: str, filters: Any = None, *, history: bool = False) -> TableScan:
        """Like `read`, also returning the parts used and the problems found."""
        schema = _schema_of(name)
        expr = _filter_expression(name, schema, filters)
        folders = _partition_folders(name, filters)
        listing, pieces, used, problems = self._load_listed(name, schema, lambda listing: listing.visible, folders)
        problems = listing.bad + problems + self._unlisted(name, listing, folders)
        table = pa.concat_tables(pieces) if pieces else schema.empty_table()
        if not history and name in LATEST:
            table = _latest_rows(table, *LATEST[name])
        if expr is not None:
            table = table.filter(expr)
        _log_problems(self.loc.url, problems)
        return TableScan(table, used, problems)

    def scan_added(self, name: str, known: Collection[tuple[str, str]]) -> TableScan | None:
        """The rows of the listed parts that `known` does not hold, or None when a part in
        `known` is no longer listed as it was (compacted away, rewritten): then only a
        whole `scan` says what the table holds. `known`: (file, sha256) pairs as `parts()`
        lists them. What a copy of the table built from `known` needs to catch up, read
        without re-reading (and re-checking) `known`'s files. Problems are the table's,
        as `scan` reports them. Not for keyed tables: a new row there replaces an old one."""
        if name in LATEST:
            raise ValueError(f"table {name!r} is keyed: a new row replaces an old one, so only scan() reads it")
        schema = _schema_of(name)
        known = set(known)

        def added(listing: parts.Listing) -> list[parts.Entry]:
            listed = {(e.file, e.sha256): e for e in listing.visible}
            if not known <= listed.keys():
                raise _NotAnExtension
            return [e for pair, e in listed.items() if pair not in known]

        try:
            listing, pieces, used, problems = self._load_listed(name, schema, added, None)
        except _NotAnExtension:
            return None
        problems = listing.bad + problems + self._unlisted(name, listing)
        _log_problems(self.loc.url, problems)
        return TableScan(pa.concat_tables(pieces) if pieces else schema.empty_table(), used, problems)

    def _load_listed(self, name: str, schema: pa.Schema, select: Callable[[parts.Listing], list[parts.Entry]],
                     folders: set[str] | None
                     ) -> tuple[parts.Listing, list[pa.Table], list[parts.Entry], list[Problem]]:
        """List the parts and `_load` the entries `select(listing)` picks, listing again
        when a compaction removed one of them meanwhile."""
        for _ in range(_READ_ATTEMPTS):
            listing = parts.list_entries(self.loc, name)
            try:
                return (listing, *self._load(name, schema, select(listing), folders, listing.generation))
            except parts.Stale:
                continue
        raise RuntimeError(f"table {name!r}: its parts kept changing while being read")

    def _load(self, name: str, schema: pa.Schema, entries: list[parts.Entry], folders: set[str] | None,
              generation: str) -> tuple[list[pa.Table], list[parts.Entry], list[Problem]]:
        pieces, used, problems = [], [], []
        for entry in entries:
            if folders is not None and entry.folder not in folders:
                continue
            data = parts.check(self.loc, name, entry)
            if isinstance(data, Problem):
                if data.kind == "missing" and parts.read_generation(self.loc, name) != generation:
                    raise parts.Stale  # compacted away since listed
                problems.append(data)
                continue
            try:
                piece = _conform(name, schema, pq.read_table(pa.BufferReader(data)), entry.folder)
            except (pa.ArrowException, TableSchemaError) as exc:
                problems.append(Problem(name, f"{name}/{entry.file}", "damaged", f"unreadable: {exc}"))
                continue
            if piece.num_rows != entry.rows:
                problems.append(Problem(name, f"{name}/{entry.file}", "damaged",
                                        f"{piece.num_rows} rows, its entry says {entry.rows}"))
                continue
            pieces.append(piece)
            used.append(entry)
        return pieces, used, problems

    def _unlisted(self, name: str, listing: parts.Listing, folders: set[str] | None = None, *,
                  grace_s: float = UNLISTED_GRACE_S) -> list[Problem]:
        """Parquet files no entry lists. Files younger than `grace_s` are left out: a
        writer renames its part into place just before publishing its entry."""
        known = listing.referenced_files()
        now = time.time()
        out = []
        for rel, modified in parts.part_files(self.loc, name).items():
            if rel in known or (folders is not None and posixpath.dirname(rel) not in folders):
                continue
            age = None if modified is None else now - modified
            if age is not None and age < grace_s:
                continue
            fresh = f"; written {age:.0f} s ago: maybe a write in progress" if age is not None and age < 60 else ""
            out.append(Problem(name, f"{name}/{rel}", "unlisted",
                               "not in the table's manifest: written by hand, by a killed writer, or before "
                               f"table manifests existed (`textme tables adopt CONFIG` lists such parts){fresh}"))
        return out

    def files(self, name: str) -> list[str]:
        """Relative paths (from the root) of the parts a read uses: listed and not superseded."""
        return sorted(f"{name}/{e.file}" for e in self.parts(name))

    def parts(self, name: str) -> list[Entry]:
        """The manifest entries of the parts a read uses (nothing is read or checked)."""
        _schema_of(name)
        return parts.list_entries(self.loc, name).visible

    def has_part(self, name: str, part: str, *, partition: str | None = None) -> bool:
        """Whether part `part` (of the partition value `partition`, for a partitioned
        table) was written and its file passes its checksum: what a cached stage can ask
        before trusting that the rows it wrote are still there. Reads the part's bytes."""
        column = PARTITIONS.get(name)
        if (column is None) != (partition is None):
            raise ValueError(f"table {name!r}: give partition= exactly when the table is partitioned")
        folder = f"{column}={quote(partition, safe='')}" if column else ""
        holder = parts.list_entries(self.loc, name).holder(folder, part)
        return holder is not None and isinstance(parts.check(self.loc, name, holder), bytes)

    def read_part(self, name: str, part: str) -> pa.Table:
        """The rows of the files that hold part `part`, in every partition: its own files,
        or the compacted ones its rows went into (which hold other parts' rows too: the
        caller filters). Reads only those files, checked like `read`; a damaged one is
        left out and logged. For "this run's rows" without reading every run's."""
        def holders(listing: parts.Listing) -> list[parts.Entry]:
            found = (listing.holder(folder, part) for folder in sorted({e.folder for e in listing.visible}))
            return list({h.id: h for h in found if h is not None}.values())

        schema = _schema_of(name)
        _, pieces, _, problems = self._load_listed(name, schema, holders, None)
        _log_problems(self.loc.url, problems)
        return pa.concat_tables(pieces) if pieces else schema.empty_table()

    def legacy(self) -> list[str]:
        """Tables holding Parquet parts but no manifest at all (not even the generation
        file every writer writes before its first part): written before table manifests
        existed, and unread until `adopt` lists their parts."""
        return [name for name in SCHEMAS
                if not parts.read_generation(self.loc, name) and parts.part_files(self.loc, name)]

    def unlisted(self, name: str) -> list[Problem]:
        """Parquet files in the table's folder that its manifest does not list (older than
        UNLISTED_GRACE_S: younger ones may be a write in progress)."""
        _schema_of(name)
        return self._unlisted(name, parts.list_entries(self.loc, name))

    # ------------------------------------------------------------------ checking, compaction
    def verify(self, names: Sequence[str] | None = None) -> list[TableReport]:
        """Check every listed part of each table (default: all) against its entry.

        Problems per table: listed parts `missing` or `damaged` (size, sha256, rows),
        `unlisted` Parquet files (not in the manifest: never read) and `bad entry`
        (unreadable manifest entries; unlisted files written in the last minute say so:
        they may be a write in progress). Reads every byte; changes nothing.

            for report in TableStore(ws.tables).verify():   # textme verify
                report.ok, str(report), report.problems      # Problem(table, file, kind, detail)
        """
        reports = []
        for name in names or list(SCHEMAS):
            scan = self.scan(name, history=True)
            problems = [p for p in scan.problems if p.kind != "unlisted"]
            problems += self._unlisted(name, parts.list_entries(self.loc, name), grace_s=0.0)
            listed = len(scan.parts) + sum(p.kind in ("damaged", "missing") for p in problems)
            reports.append(TableReport(name, listed, scan.table.num_rows, problems))
        return reports

    def compact(self, name: str, *, min_parts: int = 2) -> CompactReport:
        """Merge the parts of every partition holding at least `min_parts` into one part.

        No row is lost or duplicated (keyed tables keep each key's latest row); damaged
        or missing parts are left alone and reported. The swap is one atomic entry per
        partition: readers see the old parts or the merged one, never both or neither.
        One compaction per table at a time (a lock file on local disk; on object stores
        run one compaction at a time)."""
        schema = _schema_of(name)
        if not parts.list_entries(self.loc, name).entries:
            return CompactReport(name, 0, 0, 0, 0)
        with self._compaction_lock(name):
            listing = parts.list_entries(self.loc, name)
            # superseded entries an interrupted compaction left behind
            parts.retire(self.loc, name, listing.hidden, keep_files={e.file for e in listing.visible})
            listing = parts.list_entries(self.loc, name)
            visible = listing.visible
            report = CompactReport(name, len(visible), len(visible), sum(e.rows for e in visible),
                                   sum(e.rows for e in visible))
            by_folder: dict[str, list[parts.Entry]] = {}
            for e in visible:
                by_folder.setdefault(e.folder, []).append(e)
            merged: list[parts.Entry] = []
            column = PARTITIONS.get(name)
            for folder, entries in sorted(by_folder.items()):
                if len(entries) < max(2, min_parts):
                    continue
                pieces, used, problems = self._load(name, schema, entries, None, listing.generation)
                report.problems += problems
                if len(used) < 2:
                    continue
                table = pa.concat_tables(pieces)
                if name in LATEST:
                    table = _latest_rows(table, *LATEST[name])
                if column:
                    table = table.drop_columns([column])
                part = f"compact-{_unique_part()}"
                rel = posixpath.join(folder, f"part-{part}.parquet")
                data = _parquet_bytes(table)
                self.loc.write_file(f"{name}/{rel}", data, atomic=True)
                held = tuple(sorted({p for e in used for p in e.parts}))
                parts.publish(self.loc, name, parts.Entry.new(posixpath.join(folder, part), rel, data,
                                                              table.num_rows, parts=held,
                                                              replaces=tuple(e.id for e in used)))
                merged += used
                report.parts_after -= len(used) - 1
                report.rows_after -= sum(e.rows for e in used) - table.num_rows
            parts.retire(self.loc, name, merged)
        return report

    def compact_if_needed(self, names: Sequence[str] | None = None, *,
                          min_parts: int = AUTO_COMPACT_PARTS) -> list[CompactReport]:
        """Compact the tables (default: all) where a partition has `min_parts` parts or more."""
        reports = []
        for name in names or list(SCHEMAS):
            counts: dict[str, int] = {}
            for e in parts.list_entries(self.loc, name).visible:
                counts[e.folder] = counts.get(e.folder, 0) + 1
            if counts and max(counts.values()) >= min_parts:
                reports.append(self.compact(name, min_parts=min_parts))
        return reports

    @contextmanager
    def _compaction_lock(self, name: str) -> Iterator[None]:
        if not self.loc.is_local:
            yield
            return
        import fcntl

        folder = self.loc.path(name, parts.MANIFEST_DIR)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, ".compact.lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def adopt(self, name: str) -> tuple[list[str], list[Problem]]:
        """List a table's unlisted parts in its manifest (for tables written before
        manifests existed): each must be named like ours (part-<part>.parquet, in its
        partition folder) and readable with the table's schema. Returns (adopted files,
        files refused with why). Explicit on purpose: readers never adopt by themselves."""
        schema = _schema_of(name)
        listing = parts.list_entries(self.loc, name)
        adopted, refused = [], []
        for problem in self._unlisted(name, listing, grace_s=0.0):
            rel = problem.file[len(name) + 1:]
            folder, base = posixpath.split(rel)
            match = _PART_FILE.fullmatch(base)
            entry_id = posixpath.join(folder, match.group(1)) if match else ""
            why = None
            if not match or not _partition_folder_ok(name, folder):
                why = "not named like a part of this table (part-<part>.parquet in its partition folder)"
            elif entry_id in listing.entries:
                why = f"part {match.group(1)!r} is already listed with another file"
            else:
                data = bytes(self.loc.read_bytes(name, rel))
                try:
                    piece = _conform(name, schema, pq.read_table(pa.BufferReader(data)), folder)
                except (pa.ArrowException, TableSchemaError) as exc:
                    why = f"not readable with the table's schema: {exc}"
            if why:
                refused.append(Problem(name, problem.file, "unlisted", f"not adopted: {why}"))
                continue
            entry = parts.Entry.new(entry_id, rel, data, piece.num_rows, parts=(match.group(1),))
            parts.publish(self.loc, name, entry)
            listing.entries[entry_id] = entry
            adopted.append(problem.file)
        parts.ensure_generation(self.loc, name)  # adopted: no longer a table from before manifests
        return adopted, refused


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


def _partition_folders(name: str, filters: Any) -> set[str] | None:
    """The partition folders a dict filter on the partition column selects (None: all)."""
    column = PARTITIONS.get(name)
    if not column or not isinstance(filters, Mapping) or column not in filters:
        return None
    value = filters[column]
    values = list(value) if isinstance(value, (list, tuple, set)) else [value]
    return {f"{column}={quote(str(v), safe='')}" for v in values}


def _partition_folder_ok(name: str, folder: str) -> bool:
    column = PARTITIONS.get(name)
    if column is None:
        return folder == ""
    return "/" not in folder and folder.startswith(f"{column}=") and len(folder) > len(column) + 1


def _conform(name: str, schema: pa.Schema, table: pa.Table, folder: str) -> pa.Table:
    """A part's rows with the table's full schema: the partition column from the folder,
    missing nullable columns (parts older than the column) as nulls, types cast."""
    column = PARTITIONS.get(name)
    n = table.num_rows
    arrays = []
    for f in schema:
        if f.name == column:
            if not _partition_folder_ok(name, folder):
                raise TableSchemaError(f"table {name!r}: part outside a {column}=<value> folder")
            arrays.append(pa.array([unquote(folder.split("=", 1)[1])] * n, f.type))
        elif f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                if not _castable(col.type, f.type):
                    raise TableSchemaError(f"table {name!r}: column {f.name!r} expects {f.type}, got {col.type}")
                col = col.cast(f.type)
            arrays.append(col)
        elif f.nullable:
            arrays.append(pa.nulls(n, f.type))
        else:
            raise TableSchemaError(f"table {name!r}: part has no column {f.name!r}")
    return pa.Table.from_arrays(arrays, schema=schema)


def _latest_rows(table: pa.Table, key: str, order: tuple[str, ...]) -> pa.Table:
    """One row per key: the one with the latest first non-null `order` column."""
    if table.num_rows < 2:
        return table
    when = pc.coalesce(*[table.column(c) for c in order]).to_pylist()
    best: dict[Any, int] = {}
    for i, k in enumerate(table.column(key).to_pylist()):
        j = best.get(k)
        if j is None or (when[i], i) >= (when[j], j):
            best[k] = i
    return table.take(sorted(best.values()))


def _log_problems(root: str, problems: list[Problem]) -> None:
    """Each problem logged once per process (reads repeat; the log should not)."""
    for p in problems:
        if (root, p.file, p.kind) not in _reported:
            _reported.add((root, p.file, p.kind))
            log.warning("table %s: %s left out of reads: %s", p.table, p, root)
