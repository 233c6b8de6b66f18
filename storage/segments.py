"""One cache segment: an immutable batch of (key, vector) rows, written once, checked on read.

Layout of ``segments/<segment_id>/`` (segment format 2)::

    vectors.bin    rows x dim, the namespace dtype, little-endian, row-major, no header
    crc32c.npy     uint32 per row: crc32c of the row's bytes, seeded with its key's digest
    digests.npy    S16 per row: the 16-byte digest of the row's key (keyindex.py)
    keys.parquet   one column "key": keys[i] names row i (compact and tools read it)
    meta.json      format, rows, dim, dtype, size of each file, sha256 of the small ones

Why this layout (measured in benchmarks/bench_cache.py): a get of k keys reads k rows
and their k checksums, nothing else. Format 1 (segments_v1.py, still read) kept the
vectors in Zarr chunks of 128 rows, so 100k random keys out of 3M read every chunk,
the whole namespace. A row is the unit read and checked here, so its checksum is per
row: a flipped byte, a truncated file or a row that is not the asked key's (the seed is
the key's digest) is refused, never served. `verify` checks every row; the small files
are checked against meta.json's sha256 whenever they are loaded, and meta.json against
the manifest entry.

A segment folder is invisible until its manifest entry exists (see `manifest.py`), and
its id is unique, so it is written in place: no rename is needed to hide a half-written
segment, and no writer can collide with another.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import DamagedSegmentError, SegmentGone
from storage.fs import Location
from storage.segment_base import CheckedSegment, sha256_hex
from storage.keyindex import DIGEST
from storage.segments_v1 import SegmentV1

__all__ = ["SEGMENT_FORMAT", "write_segment", "open_segment", "Segment", "RowCheckFailed", "row_crcs"]

SEGMENT_FORMAT = 2
#: Rows read, checked and placed at a time: small enough (1 MiB at 1024-d float16) that
#: the checksum and the placing read the block from CPU cache, not from memory again.
READ_BLOCK_ROWS = 512
#: On object stores, rows closer than this are fetched in one range request (a request
#: costs about what reading this many rows does).
REMOTE_GAP_ROWS = 64


class RowCheckFailed(Exception):
    """A row's crc32c did not match: a damaged row, or an index that pointed elsewhere.
    The namespace rebuilds its index and retries once before calling it damage."""

    def __init__(self, segment_id: str, row: int):
        self.segment_id = segment_id
        self.row = row
        super().__init__(f"segment {segment_id}: vectors.bin row {row} does not match its crc32c")


def _seeds(digests: np.ndarray) -> np.ndarray:
    """The crc32c seed of each row: the first 4 bytes of its key's digest."""
    return np.ascontiguousarray(digests).view("<u4")[::4]


def row_crcs(rows: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """crc32c of each row's bytes, seeded with its key digest (uint32 per row)."""
    rows = np.ascontiguousarray(rows)
    if len(rows) != len(digests):
        raise ValueError(f"{len(rows)} rows but {len(digests)} digests")
    return np.fromiter(map(google_crc32c.extend, _seeds(digests).tolist(), rows), np.uint32, len(rows))


def _npy(arr: np.ndarray) -> memoryview:
    sink = io.BytesIO()
    np.save(sink, arr, allow_pickle=False)
    return sink.getbuffer()


def _encode_keys(keys: list[str]) -> memoryview:
    sink = io.BytesIO()
    # Keys are hex digests: they do not compress enough to pay for zstd on every put.
    pq.write_table(pa.table({"key": pa.array(keys, pa.string())}), sink, compression="none")
    return sink.getbuffer()


def write_segment(
    loc: Location, seg_dir: str, segment_id: str, keys: list[str], digests: np.ndarray, vectors: np.ndarray
) -> dict:
    """Write a segment's files (fsynced) and return its manifest entry; does not publish."""
    vectors = np.ascontiguousarray(vectors)
    small = {
        "crc32c.npy": _npy(row_crcs(vectors, digests)),
        "digests.npy": _npy(np.ascontiguousarray(digests, DIGEST)),
        "keys.parquet": _encode_keys(keys),
    }
    payload = memoryview(vectors.reshape(-1).view(np.uint8))
    loc.write_file(f"{seg_dir}/vectors.bin", payload, atomic=False)
    for rel, data in small.items():
        loc.write_file(f"{seg_dir}/{rel}", data, atomic=False)
    files = {rel: {"size": data.nbytes, "sha256": sha256_hex(data)} for rel, data in small.items()}
    files["vectors.bin"] = {"size": payload.nbytes}  # checked row by row against crc32c.npy
    meta = {
        "format": SEGMENT_FORMAT,
        "segment_id": segment_id,
        "rows": len(keys),
        "dim": int(vectors.shape[1]),
        "dtype": vectors.dtype.name,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "files": dict(sorted(files.items())),
    }
    meta_bytes = json.dumps(meta, indent=1, sort_keys=True).encode()
    loc.write_file(f"{seg_dir}/meta.json", meta_bytes, atomic=False)
    loc.sync_tree(seg_dir)
    return {"segment_id": segment_id, "rows": len(keys), "meta_sha256": sha256_hex(meta_bytes), "format": SEGMENT_FORMAT}


def open_segment(loc: Location, ns_dir: str, namespace: str, entry: dict, dim: int, dtype: str):
    """A reader for a published segment of either format (entries before format 2 have none)."""
    cls = Segment if entry.get("format", 1) == SEGMENT_FORMAT else SegmentV1
    return cls(loc, ns_dir, namespace, entry, dim, dtype)


class Segment(CheckedSegment):
    """A published format-2 segment, opened for reading.

    Cheap checks run once per process (meta, sizes, small files); row checksums on
    every read. A failure raises `DamagedSegmentError` naming the segment and the file,
    and the segment stays refused for the rest of the process.
    """

    def __init__(self, loc: Location, ns_dir: str, namespace: str, entry: dict, dim: int, dtype: str):
        super().__init__(loc, ns_dir, namespace, entry, dim, dtype)
        self._row_bytes = dim * self._dtype.itemsize
        self._vectors: np.ndarray | None = None  # memory map (local files only)
        self._crcs: np.ndarray | None = None
        self.bytes_read = 0  # vector and checksum bytes fetched by reads

    def _load_npy(self, rel: str, dtype: np.dtype) -> np.ndarray:
        arr = np.load(io.BytesIO(self._read_checked(rel)), allow_pickle=False)
        if arr.shape != (self.rows,) or arr.dtype != dtype:
            raise self._damaged(f"{rel} holds {arr.dtype}{list(arr.shape)}, expected {dtype}[{self.rows}]")
        return arr

    def digests(self) -> np.ndarray:
        """The 16-byte digests of the keys, in row order (checksum-verified)."""
        return self._load_npy("digests.npy", DIGEST)

    def _open(self) -> None:
        """Check sizes once, load the row checksums, map the vectors (local disk)."""
        if self._crcs is not None:
            return
        meta = self._check_file_sizes()
        if meta["files"]["vectors.bin"]["size"] != self.rows * self._row_bytes:
            raise self._damaged(f"vectors.bin: meta.json size does not fit {self.rows} rows of {self._row_bytes} bytes")
        crcs = self._load_npy("crc32c.npy", np.dtype(np.uint32))
        if self.loc.is_local and self.rows:
            self._vectors = np.memmap(
                self.loc.path(self.dir, "vectors.bin"), self._dtype, "r", shape=(self.rows, self._dim)
            )
        self._crcs = crcs

    # ------------------------------------------------------------------ reading
    def read_into(self, out: np.ndarray, out_pos: np.ndarray, rows: np.ndarray, digests: np.ndarray) -> None:
        """out[out_pos[i]] = vector of row rows[i], whose key has digest digests[i].

        Rows are read in row order, a block at a time; each row is checked against its
        crc32c before it is placed.
        """
        self.meta()
        try:
            self._open()
        except FileNotFoundError:
            raise SegmentGone(self.segment_id, "a file vanished while opening") from None
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        fetched = None if self._vectors is not None else self._fetch_remote(sorted_rows)
        for start in range(0, len(order), READ_BLOCK_ROWS):
            pick = order[start : start + READ_BLOCK_ROWS]
            r = sorted_rows[start : start + READ_BLOCK_ROWS]
            values = self._vectors[r] if fetched is None else fetched[start : start + READ_BLOCK_ROWS]
            bad = np.flatnonzero(row_crcs(values, digests[pick]) != self._crcs[r])
            if len(bad):
                raise RowCheckFailed(self.segment_id, int(r[bad[0]]))
            out[out_pos[pick]] = values
        self.bytes_read += len(rows) * 4 + (len(rows) * self._row_bytes if fetched is None else 0)

    def _fetch_remote(self, r: np.ndarray) -> np.ndarray:
        """Vectors of sorted rows `r` (repeats allowed), in that order, by range requests
        (one per run of close rows; fsspec sends them concurrently)."""
        uniq, inverse = np.unique(r, return_inverse=True)
        cuts = np.flatnonzero(np.diff(uniq) > REMOTE_GAP_ROWS) + 1
        runs = np.split(uniq, cuts)
        starts = [int(run[0]) * self._row_bytes for run in runs]
        ends = [(int(run[-1]) + 1) * self._row_bytes for run in runs]
        path = self.loc.path(self.dir, "vectors.bin")
        self.bytes_read += sum(ends) - sum(starts)
        try:
            parts = self.loc.fs.cat_ranges([path] * len(runs), starts, ends)
        except FileNotFoundError:
            raise SegmentGone(self.segment_id, "vectors.bin vanished while reading") from None
        block_rows = []
        for run, part in zip(runs, parts, strict=True):
            if isinstance(part, Exception):
                raise SegmentGone(self.segment_id, f"vectors.bin read failed: {part}")
            span = np.frombuffer(part, self._dtype).reshape(-1, self._dim)
            block_rows.append(span[run - run[0]])
        return np.concatenate(block_rows)[inverse]

    # ------------------------------------------------------------------ verify
    def verify(self) -> list[str]:
        """Full check of every file and every row; the problems found, named by file."""
        try:
            meta = self.meta()
        except DamagedSegmentError as e:
            return [e.problem]
        problems = []
        sizes = self.loc.file_sizes(self.dir)
        for rel, info in sorted(meta["files"].items()):
            if rel not in sizes:
                problems.append(f"{rel} is missing")
            elif sizes[rel] != info["size"]:
                problems.append(f"{rel} is {sizes[rel]} bytes, meta.json says {info['size']}")
            elif "sha256" in info and self.loc.sha256(self.dir, rel) != info["sha256"]:
                problems.append(f"{rel}: sha256 does not match meta.json")
        extra = sorted(set(sizes) - set(meta["files"]) - {"meta.json"})
        problems += [f"{rel}: unexpected file" for rel in extra]
        if not problems:
            problems += self._verify_rows()
        if problems:
            self.damage = problems[0]
        return problems

    def _verify_rows(self) -> list[str]:
        try:
            self.keys()
            digests = self.digests()
            self._open()
            rows = np.arange(self.rows)
            out = np.empty((self.rows, self._dim), self._dtype) if self.rows <= READ_BLOCK_ROWS else None
            for start in range(0, self.rows, READ_BLOCK_ROWS):
                r = rows[start : start + READ_BLOCK_ROWS]
                target = out if out is not None else np.empty((len(r), self._dim), self._dtype)
                self.read_into(target, np.arange(len(r)), r, digests[r])
        except DamagedSegmentError as e:
            return [e.problem]
        except RowCheckFailed as e:
            return [f"vectors.bin row {e.row}: crc32c does not match crc32c.npy"]
        return []
