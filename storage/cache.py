"""The embedding cache: every vector computed once per (encoder identity, input).

Layout under the root (a local folder or any fsspec URL)::

    namespaces/<id>/namespace.json     identity, dim, dtype (written once, on creation)
    namespaces/<id>/manifest/<seg>.json one entry per published segment (manifest.py)
    namespaces/<id>/segments/<seg>/    vectors, row checksums, key digests, keys (segments.py)
    namespaces/<id>/index.bin          the key index, persisted (keyindex.py; derived data)

A namespace is one encoder identity (`id = fingerprint(identity)`); inside it a vector
is found by its input's key (`text_key`, `file_key`). Segments are append-only: `put`
writes new ones and publishes each with one atomic manifest entry, so a killed writer
leaves at worst an unpublished folder that `compact` / `remove_leftovers` later delete,
and two writers never touch the same file. A key written by both of two racing writers
is stored twice; reads take the first segment in id order, `count` counts distinct
keys, and `compact` keeps one copy.

Reading keeps a compact index key digest -> global row (24-32 bytes a key, keyindex.py),
loaded from index.bin when it checks out, else built from the segments' digest files,
and refreshed whenever the manifest listing changes (one directory listing per call).
A `get` of k keys reads those k rows, grouped by segment and in row order. Damaged
data is never served; `DamagedSegmentError` names the segment:

- a damaged row (or vector file) fails the reads of that segment's keys (other keys
  are served); a damaged index.bin is rebuilt from the segments;
- a damaged meta.json or digests file fails every call that has to load that segment
  into the index, because nobody can tell which keys it held.

`verify(quarantine=True)` unpublishes damaged segments; their keys become missing and
the next run recomputes them. Segments of format 1 (Zarr chunks, before this layout)
are still read; `compact` rewrites them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from storage import manifest
from storage.errors import DamagedSegmentError, NamespaceMismatchError, SegmentGone
from storage.fingerprint import canonical_json, fingerprint
from storage.fs import TEMP_PREFIX, Location
from storage.keyindex import IndexFileError, KeyIndex, key_digests
from storage.segments import RowCheckFailed, Segment, open_segment, write_segment
from storage.segments_v1 import SegmentV1

__all__ = [
    "EmbeddingCache",
    "Namespace",
    "NamespaceInfo",
    "VerifyReport",
    "BadSegment",
    "CompactReport",
    "DTYPES",
    "SEGMENT_MAX_ROWS",
    "forget_open_namespaces",
]

log = logging.getLogger(__name__)

DTYPES = ("float16", "float32")
NAMESPACE_FORMAT = 1
#: A put larger than this is split into several segments (bounds memory while encoding).
SEGMENT_MAX_ROWS = 65536
_READ_ATTEMPTS = 3
_EMPTY_KEY_DIGEST = key_digests([""])[0]
INDEX_FILE = "index.bin"
#: The index file is rewritten by a reader that had to merge this many rows it lacks,
#: and by a writer once that many (and a quarter of the namespace) are new.
INDEX_SAVE_ROWS = 262144

#: The namespaces open in this process, shared by every EmbeddingCache on the same root.
_OPEN: dict[tuple, Namespace] = {}
_OPEN_LOCK = threading.Lock()


def forget_open_namespaces() -> None:
    """Drop this process's open namespaces: the next open loads its index afresh, as a
    new process would (tests use it)."""
    with _OPEN_LOCK:
        _OPEN.clear()


@dataclass(frozen=True)
class NamespaceInfo:
    id: str
    identity: dict
    dim: int
    dtype: str
    count: int
    segments: int


@dataclass
class BadSegment:
    segment_id: str
    problems: list[str]


@dataclass
class VerifyReport:
    """What `verify` found in one namespace."""

    namespace: str
    segments: int = 0
    rows: int = 0
    bad: list[BadSegment] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)  # folders with no manifest entry
    quarantined: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def __str__(self) -> str:
        lines = [f"namespace {self.namespace}: {self.segments} segments, {self.rows} rows, {len(self.bad)} damaged"]
        for b in self.bad:
            lines.append(f"  segment {b.segment_id}: " + "; ".join(b.problems))
        if self.unpublished:
            lines.append(f"  {len(self.unpublished)} unpublished segment folders (interrupted writes)")
        if self.quarantined:
            lines.append(f"  quarantined: {', '.join(self.quarantined)}")
        return "\n".join(lines)


@dataclass
class CompactReport:
    namespace: str
    segments_before: int
    segments_after: int
    rows_before: int
    rows_after: int
    orphans_removed: list[str]


class EmbeddingCache:
    """A cache root: one `Namespace` per encoder identity.

    `root` is a local folder (created on first write) or an fsspec URL (file://,
    memory://, s3://...). `storage_options` go to fsspec (credentials, endpoints).
    """

    def __init__(self, root: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None):
        self.loc = Location(os.fspath(root), dict(storage_options or {}))

    def __repr__(self) -> str:
        return f"EmbeddingCache({self.loc.url!r})"

    def namespace(self, identity: Mapping[str, Any], dim: int, dtype: str = "float16") -> Namespace:
        """The namespace of an encoder identity, created on first use.

        Reopening it with another `dim` or `dtype` raises `NamespaceMismatchError`: the
        identity should have changed too.
        """
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        identity = dict(identity)
        ns_id = fingerprint(identity)
        stored = self._read_namespace_json(ns_id)
        if stored is None:
            doc = {
                "format": NAMESPACE_FORMAT,
                "id": ns_id,
                "identity": identity,
                "dim": int(dim),
                "dtype": dtype,
                "created_at": datetime.now(timezone.utc).isoformat(),
            }
            data = canonical_json(doc).encode()
            self.loc.write_new(f"namespaces/{ns_id}/namespace.json", data)
            stored = self._read_namespace_json(ns_id)  # another process may have won the race
        if (stored["dim"], stored["dtype"]) != (int(dim), dtype):
            raise NamespaceMismatchError(
                f"cache namespace {ns_id} (identity {canonical_json(identity)}) holds dim {stored['dim']} "
                f"{stored['dtype']}; asked for dim {dim} {dtype}. An encoder whose output changed must "
                "change its identity"
            )
        return self._namespace_from(stored)

    def open_namespace(self, ns_id: str) -> Namespace:
        """An existing namespace by id (KeyError listing the known ids if absent)."""
        stored = self._read_namespace_json(ns_id)
        if stored is None:
            known = [i.id for i in self.namespaces()]
            raise KeyError(f"no cache namespace {ns_id!r} in {self.loc.url}; known: {', '.join(known) or 'none'}")
        return self._namespace_from(stored)

    def namespaces(self) -> list[NamespaceInfo]:
        """Every namespace under the root, with its distinct key count."""
        out = []
        for ns_id in self.loc.list_names("namespaces"):
            stored = self._read_namespace_json(ns_id)
            if stored is None:
                continue  # being created or being removed
            ns = self._namespace_from(stored)
            out.append(NamespaceInfo(ns.id, ns.identity, ns.dim, ns.dtype, ns.count(), ns.segments()))
        return out

    def gc(self, keep_ids: Iterable[str], *, dry_run: bool = False) -> list[str]:
        """Delete every namespace whose id is not in `keep_ids`; return the removed ids.

        The caller lists the namespaces its configs still use. namespace.json goes first,
        so a namespace interrupted mid-removal is no longer listed or opened.
        """
        keep = set(keep_ids)
        removed = [ns_id for ns_id in self.loc.list_names("namespaces") if ns_id not in keep]
        if not dry_run:
            for ns_id in removed:
                self.loc.remove("namespaces", ns_id, "namespace.json")
                self.loc.remove("namespaces", ns_id, recursive=True)
                with _OPEN_LOCK:
                    _OPEN.pop(self._open_key(ns_id), None)
        return removed

    def verify(self, *, quarantine: bool = False) -> list[VerifyReport]:
        """`Namespace.verify()` for every namespace (with `quarantine`: damaged segments
        moved aside, so their keys are missing and the next run recomputes them)."""
        return [self.open_namespace(ns_id).verify(quarantine=quarantine) for ns_id in self._namespace_ids()]

    def remove_leftovers(self, grace_s: float = 3600.0, *, dry_run: bool = False) -> dict[str, list[str]]:
        """`Namespace.remove_leftovers` for every namespace: {namespace id: paths removed}
        (partial segment folders and temporary files older than `grace_s`)."""
        found = {}
        for ns_id in self._namespace_ids():
            removed = self.open_namespace(ns_id).remove_leftovers(grace_s, dry_run=dry_run)
            if removed:
                found[ns_id] = removed
        return found

    # ------------------------------------------------------------------ internals
    def _namespace_ids(self) -> list[str]:
        return [i for i in self.loc.list_names("namespaces") if self.loc.exists("namespaces", i, "namespace.json")]

    def _read_namespace_json(self, ns_id: str) -> dict | None:
        try:
            stored = json.loads(self.loc.read_bytes("namespaces", ns_id, "namespace.json"))
        except FileNotFoundError:
            return None
        if stored.get("id") != ns_id or fingerprint(stored.get("identity")) != ns_id:
            raise ValueError(f"{self.loc.url}/namespaces/{ns_id}/namespace.json does not match its id (corrupt?)")
        return stored

    def _open_key(self, ns_id: str) -> tuple:
        protocol = self.loc.fs.protocol
        return (protocol if isinstance(protocol, str) else protocol[0], self.loc.root,
                json.dumps(self.loc.storage_options, sort_keys=True, default=repr), ns_id)

    def _namespace_from(self, stored: dict) -> Namespace:
        key = self._open_key(stored["id"])
        with _OPEN_LOCK:
            ns = _OPEN.get(key)
            if ns is None:
                ns = Namespace(self.loc, stored["id"], stored["identity"], int(stored["dim"]), stored["dtype"])
                _OPEN[key] = ns
        return ns


class Namespace:
    """The vectors of one encoder identity, addressed by input key. Get it from
    `EmbeddingCache.namespace`.

    Safe across processes and machines. One object per (root, namespace) exists per
    process, shared by every `EmbeddingCache` on that root and by threads (a lock
    guards its index), so the index is loaded once per process, not once per task.
    """

    def __init__(self, loc: Location, ns_id: str, identity: dict, dim: int, dtype: str):
        self.loc = loc
        self.id = ns_id
        self.identity = identity
        self.dim = dim
        self.dtype = dtype
        self.dir = f"namespaces/{ns_id}"
        self._lock = threading.RLock()
        self._reset()

    def __repr__(self) -> str:
        return f"Namespace({self.id[:12]}, dim={self.dim}, dtype={self.dtype})"

    # ------------------------------------------------------------------ public
    def missing(self, keys: Sequence[str]) -> list[str]:
        """Keys not stored yet: first-seen order, no duplicates."""
        keys, digests = _checked_digests(keys)
        self.refresh()
        with self._lock:
            absent = self._index.lookup(digests) < 0
        return list(dict.fromkeys(k for k, a in zip(keys, absent.tolist(), strict=True) if a))

    def contains(self, key: str) -> bool:
        return not self.missing([key])

    __contains__ = contains

    def count(self) -> int:
        """Number of distinct keys stored."""
        self.refresh()
        return len(self._index)

    def segments(self) -> int:
        """Number of published segments."""
        self.refresh()
        return len(self._order)

    @property
    def bytes_read(self) -> int:
        """Vector and checksum bytes this process's gets have fetched from the namespace."""
        return sum(seg.bytes_read for seg in list(self._segments.values()))

    def put(self, keys: Sequence[str], vectors: Any) -> int:
        """Store the vectors of keys not stored yet; return how many were new.

        Keys already in the cache, and repeats within the call (first one kept), are
        skipped. Vectors are checked before anything is written: shape [len(keys), dim],
        finite, and representable in the namespace dtype; a bad row raises ValueError
        naming the row and its key.
        """
        keys, digests = _checked_digests(keys)
        vectors = self._check_vectors(keys, vectors)
        self.refresh()
        with self._lock:
            known = self._index.lookup(digests) >= 0
        _, first = np.unique(digests, return_index=True)
        fresh = np.sort(first[~known[first]])
        if not len(fresh):
            return 0
        if len(fresh) != len(keys):
            keys = [keys[i] for i in fresh.tolist()]
            vectors, digests = vectors[fresh], digests[fresh]
        entries = []
        for start in range(0, len(keys), SEGMENT_MAX_ROWS):
            stop = start + SEGMENT_MAX_ROWS
            entries.append(self._publish(keys[start:stop], digests[start:stop], vectors[start:stop]))
        with self._lock:
            if self._order and entries[0]["segment_id"] <= self._order[-1]:
                # another thread's refresh loaded these segments already, or clocks
                # disagree with another writer's: the listing puts it right, in id order
                self.refresh()
            else:
                self._append([self._open_segment(e) for e in entries], digests)
                self._maybe_save_index()
        return len(keys)

    def get(self, keys: Sequence[str], dtype: Any = np.float32) -> np.ndarray:
        """[len(keys), dim] in `dtype` (default float32; None: as stored, e.g. float16
        without upcasting), row i = vector of keys[i].

        Reads only the rows asked (grouped by segment, in row order). KeyError if any key
        is missing (says how many, names the first few); DamagedSegmentError if a key's
        segment fails a check.
        """
        keys, digests = _checked_digests(keys)
        return self._get_checked(keys, digests, dtype)

    def _get_checked(self, keys: list[str], digests: np.ndarray, dtype: Any) -> np.ndarray:
        """`get` of keys already checked, with their digests."""
        out = np.empty((len(keys), self.dim), self.dtype if dtype is None else dtype)
        if not keys:
            return out
        rebuilt = False
        for attempt in range(_READ_ATTEMPTS):
            self.refresh()
            with self._lock:
                where = self._index.lookup(digests)
                layout = (np.asarray(self._bases, np.int64), [self._segments[s] for s in self._order])
            absent = np.flatnonzero(where < 0)
            if len(absent):
                first = ", ".join(repr(keys[i]) for i in absent[:5])
                raise KeyError(
                    f"cache namespace {self.id[:12]}: {len(absent)} of {len(keys)} keys are not stored; "
                    f"first missing: {first}"
                )
            try:
                self._read(where, digests, out, layout)
                return out
            except RowCheckFailed as bad:
                # A row that does not match its key's checksum: first suspect a persisted
                # index (rebuild it from the segments themselves), then the row.
                if not rebuilt and self._index_from_file:
                    log.warning("cache namespace %s: index file pointed at a wrong row; rebuilding it", self.id[:12])
                    with self._lock:
                        self._rebuild(manifest.list_entries(self.loc, self.dir), use_file=False)
                        self._save_index()
                    rebuilt = True
                    continue
                problem = f"vectors.bin row {bad.row}: crc32c does not match crc32c.npy"
                seg = self._segments.get(bad.segment_id)
                if seg is not None:
                    seg.damage = problem
                raise DamagedSegmentError(self.id, bad.segment_id, problem) from None
            except SegmentGone as gone:
                # Compacted away by another process since our listing? Then re-list and
                # retry; if it is still published, its files are damaged.
                self.refresh()
                if gone.segment_id in self._segments or attempt == _READ_ATTEMPTS - 1:
                    seg = self._segments.get(gone.segment_id)
                    if seg is not None:
                        seg.damage = gone.problem
                    raise DamagedSegmentError(self.id, gone.segment_id, gone.problem) from None
        raise AssertionError("unreachable")

    def iter_get(
        self, keys: Sequence[str], batch_rows: int = 65536, dtype: Any = np.float32
    ) -> Iterator[np.ndarray]:
        """`get` in blocks of at most `batch_rows` keys, in the order given: a full read
        that holds one block in memory at a time."""
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        keys, digests = _checked_digests(keys)
        for start in range(0, len(keys), batch_rows):
            stop = start + batch_rows
            yield self._get_checked(keys[start:stop], digests[start:stop], dtype)

    def verify(self, *, quarantine: bool = False) -> VerifyReport:
        """Check every byte of every published segment against its checksums.

        With `quarantine`, damaged segments are unpublished and moved aside to
        ``quarantine/<segment>`` (kept for inspection; delete it when done): their keys
        become missing, so the next run recomputes them.
        """
        report = VerifyReport(self.id)
        published = manifest.list_entries(self.loc, self.dir)
        for seg_id in published:
            try:
                seg = self._segment(seg_id)
            except FileNotFoundError:
                continue  # removed since listing
            except (ValueError, KeyError) as e:
                report.bad.append(BadSegment(seg_id, [f"manifest entry unreadable: {e}"]))
                continue
            problems = seg.verify()  # a fresh handle: nothing cached from earlier reads
            report.segments += 1
            report.rows += seg.rows
            if problems:
                report.bad.append(BadSegment(seg_id, problems))
                if seg_id in self._segments:
                    self._segments[seg_id].damage = problems[0]  # refuse it from now on
        report.unpublished = [s for s in self.loc.list_names(self.dir, "segments") if s not in set(published)]
        if quarantine and report.bad:
            for b in report.bad:
                manifest.unpublish(self.loc, self.dir, b.segment_id)
                self._move_aside(b.segment_id)
                report.quarantined.append(b.segment_id)
            with self._lock:
                self._reset()
        return report

    def compact(self, *, orphan_grace_s: float = 3600.0) -> CompactReport:
        """Rewrite the live rows into as few segments as possible, one copy per key, in
        the current segment format (older formats are migrated by this).

        New segments are published before the old ones are unpublished, so readers
        always find every key (old and new copies are identical). Unpublished segment
        folders older than `orphan_grace_s` (crash leftovers) are deleted; younger ones
        may be a write in progress elsewhere and are kept.
        """
        self.refresh()
        with self._lock:
            old_ids = list(self._order)
            rows_before = self._total
            layout = (np.asarray(self._bases, np.int64), [self._segments[s] for s in self._order])
            live = np.sort(self._index.pos)
        legacy = any(not isinstance(seg, Segment) for seg in layout[1])
        if len(old_ids) > 1 or len(live) < rows_before or legacy:
            keys_of, digests_of = {}, {}
            for seg_id, seg in zip(old_ids, layout[1], strict=True):
                keys_of[seg_id], digests_of[seg_id] = seg.keys(), seg.digests()
            for start in range(0, len(live), SEGMENT_MAX_ROWS):
                where = live[start : start + SEGMENT_MAX_ROWS]
                seg_pos, rows = _locate(layout[0], where)
                keys = [keys_of[old_ids[s]][r] for s, r in zip(seg_pos.tolist(), rows.tolist(), strict=True)]
                digests = np.concatenate([digests_of[old_ids[s]][r : r + 1] for s, r in zip(seg_pos, rows)])
                vectors = np.empty((len(where), self.dim), self.dtype)
                try:
                    self._read(where, digests, vectors, layout)
                except (SegmentGone, RowCheckFailed) as bad:
                    raise DamagedSegmentError(self.id, bad.segment_id, str(bad)) from None
                self._publish(keys, digests, vectors)
            for seg_id in old_ids:
                manifest.unpublish(self.loc, self.dir, seg_id)
            for seg_id in old_ids:
                self.loc.remove(self.dir, "segments", seg_id, recursive=True)
            with self._lock:
                self._reset()
        removed = self.remove_leftovers(orphan_grace_s)
        orphans = [rel.split("/", 1)[1] for rel in removed if rel.startswith("segments/")]
        self.refresh()
        with self._lock:
            if self._uncovered:
                self._save_index()
        return CompactReport(self.id, len(old_ids), len(self._order), rows_before, self._total, orphans)

    def remove_leftovers(self, grace_s: float = 3600.0, *, dry_run: bool = False) -> list[str]:
        """Delete what killed writers left: unpublished segment folders and temporary
        files older than `grace_s` (younger ones may be a write in progress elsewhere).
        Returns the paths removed, relative to the namespace folder."""
        removed = [f"segments/{s}" for s in self._orphans(grace_s)]
        for folder in ("manifest", ""):
            removed += [f"{folder}/{n}".lstrip("/") for n in self._stale_temps(folder, grace_s)]
        if not dry_run:
            for rel in removed:
                self.loc.remove(self.dir, rel, recursive=rel.startswith("segments/"))
        return removed

    def refresh(self) -> None:
        """Bring the index up to date with the manifest (one listing)."""
        listed = manifest.list_entries(self.loc, self.dir)
        with self._lock:
            if listed == self._order:
                return
            # Decide on a listing taken under the lock: one taken before it may predate
            # a segment another thread's put appended meanwhile, which would look like
            # a segment gone and rebuild the index without it.
            listed = manifest.list_entries(self.loc, self.dir)
            if listed == self._order:
                return
            known = set(self._order)
            new = [s for s in listed if s not in known]
            if not self._order or known - set(listed) or (new and new[0] < self._order[-1]):
                # First load, a segment went away, or one sorts before those loaded:
                # rebuild (keeps "first segment in id order wins" exact).
                self._rebuild(listed, use_file=True)
            else:
                self._extend(new)
            if self._uncovered >= INDEX_SAVE_ROWS:
                self._save_index()  # a reader that had to merge this much saves the next one the work

    # ------------------------------------------------------------------ internals
    def _reset(self) -> None:
        self._order: list[str] = []  # published segment ids, sorted
        self._bases: list[int] = []  # global position of each segment's row 0
        self._segments: dict[str, Segment | SegmentV1] = {}
        self._index = KeyIndex()  # key digest -> global position of its first copy
        self._total = 0  # rows in all loaded segments, duplicates included
        self._uncovered = 0  # rows indexed that the index file does not cover
        self._index_from_file = False

    def _segment(self, seg_id: str):
        return self._open_segment(manifest.read_entry(self.loc, self.dir, seg_id))

    def _open_segment(self, entry: dict):
        return open_segment(self.loc, self.dir, self.id, entry, self.dim, self.dtype)

    def _rebuild(self, listed: list[str], *, use_file: bool) -> None:
        self._reset()
        if use_file:
            self._load_index_file(listed)
        self._extend(listed[len(self._order) :])

    def _load_index_file(self, listed: list[str]) -> None:
        """Start from the persisted index if it covers a prefix of the listed segments."""
        try:
            data = self.loc.read_bytes(self.dir, INDEX_FILE)
        except FileNotFoundError:
            return
        try:
            index, entries = KeyIndex.load(data)
            ids = [e["segment_id"] for e in entries]
            if ids != listed[: len(ids)]:
                return  # segments were removed or reordered since it was written
            rows = [int(e["rows"]) for e in entries]
            if len(index) and int(index.pos.max()) >= sum(rows):
                raise IndexFileError("index file points past its segments")
        except IndexFileError as e:
            log.warning("cache namespace %s: %s; rebuilding the index from the segments", self.id[:12], e)
            self._uncovered = 1  # make the rebuilt index be saved over the bad one
            return
        self._append([self._open_segment(e) for e in entries], None, index=index)
        self._uncovered = 0
        self._index_from_file = True

    def _extend(self, new_ids: list[str]) -> None:
        """Load segments that sort after all loaded ones (their digest files)."""
        segs, digests = [], []
        for seg_id in new_ids:
            try:
                seg = self._segment(seg_id)
            except FileNotFoundError:
                continue  # unpublished again since the listing
            digests.append(seg.digests())
            segs.append(seg)
        if segs:
            self._append(segs, np.concatenate(digests))

    def _append(self, segs: list, digests: np.ndarray | None, *, index: KeyIndex | None = None) -> None:
        """Add segments that sort after all loaded ones; earlier copies of a key win."""
        base = self._total
        for seg in segs:
            self._order.append(seg.segment_id)
            self._bases.append(self._total)
            self._segments[seg.segment_id] = seg
            self._total += seg.rows
        if index is not None:
            self._index = index
        else:
            self._index.add(digests, np.arange(base, self._total, dtype=np.int64))
            self._uncovered += self._total - base

    def _maybe_save_index(self) -> None:
        """After a put: rewrite the index once a quarter of it is new (bounds what the
        writes cost), so a reader never merges more than that."""
        if self._uncovered >= max(INDEX_SAVE_ROWS, self._total // 4):
            self._save_index()

    def _save_index(self) -> None:
        """Persist the index (atomic; a reader checks it before use). Best effort: a
        read-only cache still works, it only rebuilds the index on open."""
        entries = [self._segments[s]._entry for s in self._order]
        try:
            self.loc.write_file(f"{self.dir}/{INDEX_FILE}", self._index.dump_parts(entries), atomic=True)
        except OSError as e:
            log.info("cache namespace %s: index not saved (%s)", self.id[:12], e)
            return
        self._uncovered = 0

    def _publish(self, keys: list[str], digests: np.ndarray, vectors: np.ndarray) -> dict:
        """Write one segment and publish it; the in-memory index is left alone."""
        seg_id = manifest.new_segment_id()
        entry = write_segment(self.loc, f"{self.dir}/segments/{seg_id}", seg_id, keys, digests, vectors)
        manifest.publish(self.loc, self.dir, entry)
        return entry

    def _read(self, where: np.ndarray, digests: np.ndarray, out: np.ndarray, layout) -> None:
        """out[i] = vector at global position where[i]; one grouped read per segment."""
        bases, segs = layout
        seg_pos, rows = _locate(bases, where)
        order = np.argsort(where)  # by segment, then row: read_into finds its rows sorted
        cuts = np.flatnonzero(np.diff(seg_pos[order])) + 1
        for group in np.split(order, cuts):
            segs[seg_pos[group[0]]].read_into(out, group, rows[group], digests[group])

    def _move_aside(self, seg_id: str) -> None:
        src, dst = self.loc.path(self.dir, "segments", seg_id), self.loc.path(self.dir, "quarantine", seg_id)
        try:
            if self.loc.is_local:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
            self.loc.fs.mv(src, dst, recursive=True)
        except (OSError, ValueError) as e:
            log.warning("cache namespace %s: could not move segment %s aside (%s); deleting it", self.id[:12], seg_id, e)
            self.loc.remove(self.dir, "segments", seg_id, recursive=True)

    def _orphans(self, grace_s: float) -> list[str]:
        published = set(manifest.list_entries(self.loc, self.dir))
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_s)
        out = []
        for name in self.loc.list_names(self.dir, "segments"):
            made = manifest.segment_time(name)
            if name not in published and made is not None and made < cutoff:
                out.append(name)
        return out

    def _stale_temps(self, folder: str, grace_s: float) -> list[str]:
        """Temporary files (manifest entries, index, namespace.json) of killed writers."""
        parts = (self.dir, folder) if folder else (self.dir,)
        out = []
        for name in self.loc.list_names(*parts, temp=True):
            made = manifest.segment_time(name[len(TEMP_PREFIX) :])
            age = (datetime.now(timezone.utc) - made).total_seconds() if made else self.loc.age_s(*parts, name)
            if age is not None and age > grace_s:
                out.append(name)
        return out

    def _check_vectors(self, keys: list[str], vectors: Any) -> np.ndarray:
        arr = np.asarray(vectors)
        if arr.size == 0 and not keys:
            return np.empty((0, self.dim), self.dtype)
        where = f"cache namespace {self.id[:12]}"
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"{where}: expected vectors of shape [{len(keys)}, {self.dim}], got {list(arr.shape)}")
        if arr.shape[0] != len(keys):
            raise ValueError(f"{where}: {len(keys)} keys but {arr.shape[0]} vectors (shape {list(arr.shape)})")
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"{where}: vectors must be floating point, got {arr.dtype}")
        with np.errstate(over="ignore"):  # overflow becomes Inf, refused just below
            stored = arr.astype(self.dtype, copy=False)
        bad = np.flatnonzero(_nonfinite_rows(stored))
        if len(bad):
            i = int(bad[0])
            reason = "is too large for float16" if np.isfinite(arr[i]).all() else "has NaN or Inf"
            raise ValueError(
                f"{where}: vector row {i} (key {keys[i]!r}) {reason}; {len(bad)} bad rows in all; nothing was stored"
            )
        return stored


def _checked_digests(keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(keys as a list, their digests); TypeError naming the first key that is not
    a non-empty str. The checks ride on the digest pass (a non-str fails to encode,
    an empty key has a known digest): a second pass over 100k keys cost more than
    the index lookup."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"keys must be a sequence of str, not a single {type(keys).__name__}")
    keys = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
    try:
        digests = key_digests(keys)
    except (TypeError, AttributeError):
        digests = None
    if digests is None or (len(digests) and (digests == _EMPTY_KEY_DIGEST).any()):
        for i, k in enumerate(keys):
            if not isinstance(k, str) or not k:
                raise TypeError(f"cache keys must be non-empty str; keys[{i}] is {k!r}")
    return keys, digests


def _locate(bases: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment position, row in it) of global positions."""
    seg_pos = np.searchsorted(bases, where, side="right") - 1
    return seg_pos, where - bases[seg_pos]


def _nonfinite_rows(v: np.ndarray) -> np.ndarray:
    """Boolean per row: holds NaN or Inf. float16 by its exponent bits (np.isfinite is
    several times slower on float16 than this)."""
    if v.dtype != np.float16:
        return ~np.isfinite(v).all(axis=1)
    bits = v.reshape(len(v), -1).view(np.uint16)
    out = np.empty(len(v), bool)
    step = max(1, (1 << 20) // max(1, bits.shape[1]))  # blocks that stay in cache
    buf = np.empty((min(step, len(v)), bits.shape[1]), np.uint16)
    for a in range(0, len(v), step):
        b = min(len(v), a + step)
        np.bitwise_and(bits[a:b], 0x7FFF, out=buf[: b - a])  # drop the sign: |x| bits
        out[a:b] = buf[: b - a].max(axis=1) >= 0x7C00  # exponent all ones: Inf or NaN
    return out
