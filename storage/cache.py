"""The embedding cache: every vector computed once per (encoder identity, input).

Layout under the root (a local folder or any fsspec URL)::

    namespaces/<id>/namespace.json     identity, dim, dtype (written once, on creation)
    namespaces/<id>/manifest/<seg>.json one entry per published segment (manifest.py)
    namespaces/<id>/segments/<seg>/    Zarr vectors + Parquet keys + meta (segments.py)

A namespace is one encoder identity (`id = fingerprint(identity)`); inside it a vector
is found by its input's key (`text_key`, `file_key`). Segments are append-only: `put`
writes new ones and publishes each with one atomic manifest entry, so a killed writer
leaves at worst an unpublished folder that `compact` later deletes, and two writers
never touch the same file. A key written by both of two racing writers is stored twice;
reads take the first segment in id order, `count` counts distinct keys, and `compact`
keeps one copy.

Reading keeps an in-memory index key -> (segment, row), built from the segments' key
files and refreshed whenever the manifest listing changes (one directory listing per
call). Damaged data is never served; `DamagedSegmentError` names the segment:

- a damaged vector chunk fails the reads of that segment's keys (other keys are served);
- a damaged meta.json or keys.parquet fails every call that loads the namespace's
  index, because nobody can tell which keys that segment held.

`verify(quarantine=True)` unpublishes damaged segments; their keys become missing and
the next run recomputes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from storage import manifest
from storage.errors import DamagedSegmentError, NamespaceMismatchError
from storage.fingerprint import canonical_json, fingerprint
from storage.fs import TEMP_PREFIX, Location
from storage.segments import Segment, SegmentGone, write_segment

__all__ = [
    "EmbeddingCache",
    "Namespace",
    "NamespaceInfo",
    "VerifyReport",
    "BadSegment",
    "CompactReport",
    "DTYPES",
    "SEGMENT_MAX_ROWS",
]

DTYPES = ("float16", "float32")
NAMESPACE_FORMAT = 1
#: A put larger than this is split into several segments (bounds memory while encoding).
SEGMENT_MAX_ROWS = 65536
_READ_ATTEMPTS = 3


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
        self._open: dict[str, Namespace] = {}

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
                self._open.pop(ns_id, None)
        return removed

    def verify(self) -> list[VerifyReport]:
        """`Namespace.verify()` for every namespace."""
        return [self.open_namespace(info_id).verify() for info_id in self._namespace_ids()]

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

    def _namespace_from(self, stored: dict) -> Namespace:
        ns = self._open.get(stored["id"])
        if ns is None:
            ns = Namespace(self.loc, stored["id"], stored["identity"], int(stored["dim"]), stored["dtype"])
            self._open[ns.id] = ns
        return ns


class Namespace:
    """The vectors of one encoder identity, addressed by input key. Get it from
    `EmbeddingCache.namespace`.

    Safe across processes and machines; one object is not meant to be shared by
    threads (give each thread its own `EmbeddingCache`).
    """

    def __init__(self, loc: Location, ns_id: str, identity: dict, dim: int, dtype: str):
        self.loc = loc
        self.id = ns_id
        self.identity = identity
        self.dim = dim
        self.dtype = dtype
        self.dir = f"namespaces/{ns_id}"
        self._reset()

    def __repr__(self) -> str:
        return f"Namespace({self.id[:12]}, dim={self.dim}, dtype={self.dtype})"

    # ------------------------------------------------------------------ public
    def missing(self, keys: Sequence[str]) -> list[str]:
        """Keys not stored yet: first-seen order, no duplicates."""
        keys = self._check_keys(keys)
        self.refresh()
        index = self._index
        return [k for k in dict.fromkeys(keys) if k not in index]

    def contains(self, key: str) -> bool:
        self._check_keys([key])
        self.refresh()
        return key in self._index

    __contains__ = contains

    def count(self) -> int:
        """Number of distinct keys stored."""
        self.refresh()
        return len(self._index)

    def segments(self) -> int:
        """Number of published segments."""
        self.refresh()
        return len(self._order)

    def put(self, keys: Sequence[str], vectors: Any) -> int:
        """Store the vectors of keys not stored yet; return how many were new.

        Keys already in the cache, and repeats within the call (first one kept), are
        skipped. Vectors are checked before anything is written: shape [len(keys), dim],
        finite, and representable in the namespace dtype; a bad row raises ValueError
        naming the row and its key.
        """
        keys = self._check_keys(keys)
        vectors = self._check_vectors(keys, vectors)
        self.refresh()
        fresh: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in self._index and k not in fresh:
                fresh[k] = i
        if not fresh:
            return 0
        new_keys = list(fresh)
        if len(new_keys) != len(keys):
            vectors = vectors[np.fromiter(fresh.values(), np.int64, len(fresh))]
        for start in range(0, len(new_keys), SEGMENT_MAX_ROWS):
            stop = start + SEGMENT_MAX_ROWS
            self._write(new_keys[start:stop], vectors[start:stop])
        return len(new_keys)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """float32 [len(keys), dim], row i = vector of keys[i].

        KeyError if any key is missing (says how many, names the first few);
        DamagedSegmentError if a key's segment fails a check.
        """
        keys = self._check_keys(keys)
        out = np.empty((len(keys), self.dim), np.float32)
        if not keys:
            return out
        for attempt in range(_READ_ATTEMPTS):
            self.refresh()
            index = self._index
            where = np.fromiter((index.get(k, -1) for k in keys), np.int64, len(keys))
            absent = np.flatnonzero(where < 0)
            if len(absent):
                first = ", ".join(repr(keys[i]) for i in absent[:5])
                raise KeyError(
                    f"cache namespace {self.id[:12]}: {len(absent)} of {len(keys)} keys are not stored; "
                    f"first missing: {first}"
                )
            try:
                self._read(where, out)
                return out
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

    def verify(self, *, quarantine: bool = False) -> VerifyReport:
        """Check every byte of every published segment against its sha256s.

        With `quarantine`, damaged segments are unpublished and deleted: their keys
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
                self.loc.remove(self.dir, "segments", b.segment_id, recursive=True)
                report.quarantined.append(b.segment_id)
            self._reset()
        return report

    def compact(self, *, orphan_grace_s: float = 3600.0) -> CompactReport:
        """Rewrite the live rows into as few segments as possible, one copy per key.

        New segments are published before the old ones are unpublished, so readers
        always find every key (old and new copies are identical). Unpublished segment
        folders older than `orphan_grace_s` (crash leftovers) are deleted; younger ones
        may be a write in progress elsewhere and are kept.
        """
        self.refresh()
        old_ids = list(self._order)
        rows_before = self._total
        live = np.array(sorted(self._index.values()), dtype=np.int64)
        if len(old_ids) > 1 or len(live) < rows_before:
            for start in range(0, len(live), SEGMENT_MAX_ROWS):
                where = live[start : start + SEGMENT_MAX_ROWS]
                vectors = np.empty((len(where), self.dim), self.dtype)
                try:
                    self._read(where, vectors)
                except SegmentGone as gone:
                    raise DamagedSegmentError(self.id, gone.segment_id, gone.problem) from None
                # _publish, not _write: the positions in `live` must stay valid
                self._publish(self._keys_at(where), vectors)
            for seg_id in old_ids:
                manifest.unpublish(self.loc, self.dir, seg_id)
            for seg_id in old_ids:
                self.loc.remove(self.dir, "segments", seg_id, recursive=True)
            self._reset()
        orphans = self._orphans(orphan_grace_s)
        for seg_id in orphans:
            self.loc.remove(self.dir, "segments", seg_id, recursive=True)
        for name in self._stale_manifest_temps(orphan_grace_s):
            self.loc.remove(self.dir, "manifest", name)
        self.refresh()
        return CompactReport(self.id, len(old_ids), len(self._order), rows_before, self._total, orphans)

    def refresh(self) -> None:
        """Bring the in-memory index up to date with the manifest (one listing)."""
        listed = manifest.list_entries(self.loc, self.dir)
        if listed == self._order:
            return
        known = set(self._order)
        listed_set = set(listed)
        new = [s for s in listed if s not in known]
        if known - listed_set or (new and self._order and new[0] < self._order[-1]):
            # A segment went away, or one sorts before those loaded: rebuild (keeps
            # "first segment in id order wins" exact).
            keep = {s: self._segments[s] for s in self._order if s in listed_set}
            old_keys = self._keys
            self._reset()
            for seg_id in sorted([*keep, *new]):
                seg = keep.get(seg_id)
                if seg is None:
                    try:
                        seg = self._segment(seg_id)
                    except FileNotFoundError:
                        continue
                self._append(seg, old_keys[seg_id] if seg_id in old_keys else seg.keys())
            return
        for seg_id in new:
            try:
                seg = self._segment(seg_id)
            except FileNotFoundError:
                continue  # unpublished again since the listing
            self._append(seg, seg.keys())

    # ------------------------------------------------------------------ internals
    def _reset(self) -> None:
        self._order: list[str] = []  # published segment ids, sorted
        self._bases: list[int] = []  # global position of each segment's row 0
        self._segments: dict[str, Segment] = {}
        self._keys: dict[str, list[str]] = {}
        self._index: dict[str, int] = {}  # key -> global position of its first copy
        self._total = 0  # rows in all loaded segments, duplicates included

    def _segment(self, seg_id: str) -> Segment:
        entry = manifest.read_entry(self.loc, self.dir, seg_id)
        return Segment(self.loc, self.dir, self.id, entry, self.dim, self.dtype)

    def _append(self, seg: Segment, keys: list[str]) -> None:
        """Add a segment that sorts after all loaded ones; earlier copies of a key win."""
        base = self._total
        self._order.append(seg.segment_id)
        self._bases.append(base)
        self._segments[seg.segment_id] = seg
        self._keys[seg.segment_id] = keys
        setdefault = self._index.setdefault
        for row, key in enumerate(keys):
            setdefault(key, base + row)
        self._total += seg.rows

    def _publish(self, keys: list[str], vectors: np.ndarray) -> dict:
        """Write one segment and publish it; the in-memory index is left alone."""
        seg_id = manifest.new_segment_id()
        entry = write_segment(self.loc, f"{self.dir}/segments/{seg_id}", seg_id, keys, vectors)
        manifest.publish(self.loc, self.dir, entry)
        return entry

    def _write(self, keys: list[str], vectors: np.ndarray) -> None:
        """Publish a segment and add it to the index."""
        entry = self._publish(keys, vectors)
        if self._order and entry["segment_id"] < self._order[-1]:
            self.refresh()  # clocks disagree with another writer's: rebuild in id order
        else:
            self._append(Segment(self.loc, self.dir, self.id, entry, self.dim, self.dtype), keys)

    def _locate(self, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bases = np.asarray(self._bases, dtype=np.int64)
        seg_pos = np.searchsorted(bases, where, side="right") - 1
        return seg_pos, where - bases[seg_pos]

    def _keys_at(self, where: np.ndarray) -> list[str]:
        seg_pos, rows = self._locate(where)
        return [self._keys[self._order[s]][r] for s, r in zip(seg_pos.tolist(), rows.tolist(), strict=True)]

    def _read(self, where: np.ndarray, out: np.ndarray) -> None:
        """out[i] = vector at global position where[i]; one grouped read per segment."""
        seg_pos, rows = self._locate(where)
        order = np.argsort(seg_pos, kind="stable")
        cuts = np.flatnonzero(np.diff(seg_pos[order])) + 1
        for group in np.split(order, cuts):
            seg = self._segments[self._order[seg_pos[group[0]]]]
            seg.read_into(out, group, rows[group])

    def _orphans(self, grace_s: float) -> list[str]:
        published = set(manifest.list_entries(self.loc, self.dir))
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_s)
        out = []
        for name in self.loc.list_names(self.dir, "segments"):
            made = manifest.segment_time(name)
            if name not in published and made is not None and made < cutoff:
                out.append(name)
        return out

    def _stale_manifest_temps(self, grace_s: float) -> list[str]:
        """Temporary manifest files left by writers killed while publishing."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_s)
        out = []
        for name in self.loc.list_names(self.dir, "manifest", temp=True):
            made = manifest.segment_time(name[len(TEMP_PREFIX) :])
            if made is not None and made < cutoff:
                out.append(name)
        return out

    def _check_keys(self, keys: Sequence[str]) -> list[str]:
        if isinstance(keys, (str, bytes)):
            raise TypeError(f"keys must be a sequence of str, not a single {type(keys).__name__}")
        keys = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
        for i, k in enumerate(keys):
            if not isinstance(k, str) or not k:
                raise TypeError(f"cache keys must be non-empty str; keys[{i}] is {k!r}")
        return keys

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


def _nonfinite_rows(v: np.ndarray) -> np.ndarray:
    """Boolean per row: holds NaN or Inf. float16 by its exponent bits (np.isfinite is
    several times slower on float16 than this)."""
    if v.dtype == np.float16:
        return ((v.view(np.uint16) & 0x7C00) == 0x7C00).any(axis=1)
    return ~np.isfinite(v).all(axis=1)
