"""A table's own manifest: which Parquet parts it wrote, with their sha256 and rows.

Layout under a table's folder (``<root>/<table>/``)::

    part-<part>[.<token>].parquet                  unpartitioned tables
    <column>=<value>/part-<part>[.<token>].parquet  hive-partitioned tables
    _manifest/[<column>=<value>/]<part>.json        one entry per part file
    _manifest/_generation                           changes before anything is deleted

An entry (its id is its path under ``_manifest/`` without ``.json``)::

    {"file": "task=retrieval/part-run1.3f2a9c1b.parquet", "rows": 12, "bytes": 3456,
     "sha256": "...", "written_at": "2026-01-25T10:30:15.123456+00:00",
     "parts": ["run1"],                # the part names whose rows it holds
     "replaces": []}                   # entry ids it supersedes (compaction)

Readers use only listed parts whose bytes match the entry, so a file dropped into the
table by hand, a half-published write of a crashed process, or a truncated or flipped
part never reaches a query: each is reported instead (`Problem`).

Why one file per part rather than one manifest file: threads and processes append to
the same table at once (embed_log, training, offsets, results), and each creates its own
entry, so nobody rewrites a shared file and no entry is lost (the same pattern as the
embedding cache's manifest, storage/manifest.py). An entry is published after its part
file is durable, with one atomic creation (rename on disk, one put on object stores).

Compaction merges several parts into one: the new entry lists the merged entries in
``replaces``, which hides them from that moment, so one atomic creation swaps old parts
for new. The merged files are deleted only after ``_generation`` has changed; a reader
that listed entries while the generation changed lists again, so it sees the old parts
or the new one, never both and never neither.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from storage.fs import Location

__all__ = ["Entry", "Problem", "Listing", "Stale", "MANIFEST_DIR", "list_entries", "publish", "retire",
           "bump_generation", "ensure_generation", "read_generation", "part_files", "check", "summarize"]

MANIFEST_DIR = "_manifest"
_GENERATION = "_generation"
_SUFFIX = ".json"
_LIST_ATTEMPTS = 20


class Stale(Exception):
    """The table's generation changed while it was being read: list again."""


@dataclass(frozen=True)
class Entry:
    """One published part file of a table."""

    id: str                       # "[<column>=<value>/]<part>"
    file: str                     # path relative to the table folder
    rows: int
    bytes: int
    sha256: str
    parts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    written_at: str = ""

    @property
    def folder(self) -> str:
        """The hive partition folder ("" for an unpartitioned table)."""
        return posixpath.dirname(self.id)

    @property
    def part(self) -> str:
        return posixpath.basename(self.id)

    def to_json(self) -> bytes:
        return json.dumps({"file": self.file, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256,
                           "parts": list(self.parts), "replaces": list(self.replaces),
                           "written_at": self.written_at}, sort_keys=True).encode()

    @classmethod
    def new(cls, entry_id: str, file: str, data: bytes | memoryview, rows: int, *,
            parts: tuple[str, ...], replaces: tuple[str, ...] = ()) -> "Entry":
        return cls(id=entry_id, file=file, rows=rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   parts=parts, replaces=replaces, written_at=datetime.now(timezone.utc).isoformat())


@dataclass(frozen=True)
class Problem:
    """A part a reader did not use, and why. `file` is relative to the tables root."""

    table: str
    file: str
    kind: str      # "damaged", "missing", "unlisted" or "bad entry"
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind} ({self.detail})"


def summarize(problems: list[Problem]) -> list[str]:
    """One line per damaged, missing or bad part; unlisted files one line per table."""
    lines = [f"table {p.table}: {p} left out" for p in problems if p.kind != "unlisted"]
    unlisted: dict[str, list[Problem]] = {}
    for p in problems:
        if p.kind == "unlisted":
            unlisted.setdefault(p.table, []).append(p)
    for table, found in unlisted.items():
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        lines.append(f"table {table}: {len(found)} Parquet files not in its manifest left out ({found[0].file}"
                     f"{more}): written by hand or by a killed writer; if they predate table manifests, "
                     "`textme tables adopt CONFIG` lists them")
    return lines


@dataclass
class Listing:
    """Every readable entry of a table at one generation."""

    table: str
    generation: str
    entries: dict[str, Entry] = field(default_factory=dict)
    bad: list[Problem] = field(default_factory=list)

    @property
    def hidden_ids(self) -> set[str]:
        return {r for e in self.entries.values() for r in e.replaces}

    @property
    def visible(self) -> list[Entry]:
        hidden = self.hidden_ids
        return [e for i, e in sorted(self.entries.items()) if i not in hidden]

    @property
    def hidden(self) -> list[Entry]:
        hidden = self.hidden_ids
        return [e for i, e in sorted(self.entries.items()) if i in hidden]

    def holder(self, folder: str, part: str) -> Entry | None:
        """The entry holding part `part` of `folder`: its own entry while visible, else
        the (compacted) entry that took its rows; None if the part was never written."""
        own = self.entries.get(posixpath.join(folder, part))
        if own is not None and own.id not in self.hidden_ids:
            return own
        for e in self.visible:
            if e.folder == folder and part in e.parts:
                return e
        return own  # hidden, and no visible holder: its rows went into a compaction since removed

    def referenced_files(self) -> set[str]:
        return {e.file for e in self.entries.values()}


def _entry_rel(table: str, entry_id: str) -> str:
    return f"{table}/{MANIFEST_DIR}/{entry_id}{_SUFFIX}"


def read_generation(loc: Location, table: str) -> str:
    try:
        return bytes(loc.read_bytes(table, MANIFEST_DIR, _GENERATION)).decode()
    except FileNotFoundError:
        return ""


def ensure_generation(loc: Location, table: str) -> None:
    """Write the generation file if the table has none. Writers call it before their
    first part, so a table of parts with no generation file was written by code older
    than table manifests (not by a writer killed between its part and its entry)."""
    if not read_generation(loc, table):
        bump_generation(loc, table)


def bump_generation(loc: Location, table: str) -> None:
    """Announce a deletion to readers (call before deleting any entry or part)."""
    loc.write_file(f"{table}/{MANIFEST_DIR}/{_GENERATION}", uuid.uuid4().hex.encode(), atomic=True)


def _parse(table: str, entry_id: str, raw: bytes) -> Entry:
    d = json.loads(raw)
    return Entry(id=entry_id, file=str(d["file"]), rows=int(d["rows"]), bytes=int(d["bytes"]),
                 sha256=str(d["sha256"]), parts=tuple(d.get("parts") or ()),
                 replaces=tuple(d.get("replaces") or ()), written_at=str(d.get("written_at", "")))


def list_entries(loc: Location, table: str) -> Listing:
    """All entries of a table, listed at one generation (listed again if it changed)."""
    for _ in range(_LIST_ATTEMPTS):
        generation = read_generation(loc, table)
        listing = Listing(table, generation)
        try:
            for rel in sorted(loc.file_sizes(table, MANIFEST_DIR)):
                name = posixpath.basename(rel)
                if not rel.endswith(_SUFFIX) or name.startswith((".", "_")):
                    continue
                entry_id = rel[: -len(_SUFFIX)]
                try:
                    raw = loc.read_bytes(table, MANIFEST_DIR, rel)
                except FileNotFoundError:
                    raise Stale from None  # removed while listing: only after a generation change
                try:
                    listing.entries[entry_id] = _parse(table, entry_id, raw)
                except (ValueError, KeyError, TypeError) as exc:
                    listing.bad.append(Problem(table, _entry_rel(table, entry_id), "bad entry",
                                               f"unreadable manifest entry: {exc}"))
        except Stale:
            continue
        if read_generation(loc, table) == generation:
            return listing
    raise RuntimeError(f"table {table!r}: its manifest kept changing while being listed")


def publish(loc: Location, table: str, entry: Entry) -> None:
    """Make a durable part file visible: one atomic entry creation (or replacement)."""
    loc.write_file(_entry_rel(table, entry.id), entry.to_json(), atomic=True)


def retire(loc: Location, table: str, entries: list[Entry], *, keep_files: set[str] = frozenset()) -> None:
    """Delete superseded entries and their part files (after telling readers)."""
    if not entries:
        return
    bump_generation(loc, table)
    for e in entries:
        loc.remove(_entry_rel(table, e.id))
    for e in entries:
        if e.file not in keep_files:
            loc.remove(table, e.file)
    loc.sync_tree(table)


def part_files(loc: Location, table: str) -> dict[str, float | None]:
    """Every Parquet file in a table's folder (relative to it), listed or not, with
    when it was last written (None where the filesystem does not say)."""
    top = loc.path(table)
    if not loc.is_local:
        loc.fs.invalidate_cache(top)
    try:
        found = loc.fs.find(top, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for name, info in found.items():
        rel = posixpath.relpath(name, top)
        if rel.endswith(".parquet") and not rel.startswith(MANIFEST_DIR + "/") \
                and not posixpath.basename(rel).startswith("."):
            out[rel] = _modified(info)
    return dict(sorted(out.items()))


def _modified(info: dict) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return None


def check(loc: Location, table: str, entry: Entry) -> bytes | Problem:
    """The part's bytes if they match its entry, else the Problem (missing or damaged).

    A missing file may mean the table changed since it was listed: callers compare the
    generation (`read_generation`) with their listing's before reporting it."""
    where = f"{table}/{entry.file}"
    try:
        data = bytes(loc.read_bytes(table, entry.file))
    except FileNotFoundError:
        return Problem(table, where, "missing", f"listed in {MANIFEST_DIR}/{entry.id}{_SUFFIX}, not on disk")
    if len(data) != entry.bytes:
        return Problem(table, where, "damaged", f"{len(data)} bytes, its entry says {entry.bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        return Problem(table, where, "damaged", f"sha256 {digest[:12]}..., its entry says {entry.sha256[:12]}...")
    return data
