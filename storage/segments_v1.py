"""Segments of the first format (Zarr v3, 128-row inner chunks): read, never written by put.

Caches written before segment format 2 hold these. They stay readable as they are, and
`Namespace.compact()` rewrites them in the current format (segments.py). A random get
from them reads whole 128-row chunks; that is why the format changed.
`write_segment_v1` remains so tests can build such segments.

Layout of ``segments/<segment_id>/``::

    vectors/zarr.json, vectors/c/<shard>/0   Zarr v3 array [rows, dim], sharded;
                                             crc32c on every inner chunk
    keys.parquet                             one column "key": keys[i] names row i
    meta.json                                rows, dim, dtype, size + sha256 of each file

A segment folder is invisible until its manifest entry exists (see `manifest.py`), and
its id is unique, so it is written in place: no rename is needed to hide a half-written
segment, and no writer can collide with another.

How damage is caught without hashing every read (measured in benchmarks/bench_cache.py):

- meta.json is pinned by the sha256 in the manifest entry; keys.parquet and
  vectors/zarr.json are small and sha256-checked whenever they are loaded;
- file sizes are compared with meta.json when a segment is first opened in a process;
- every inner chunk of vectors carries a crc32c (part of the Zarr format) that zarr
  checks on each read, so a flipped byte raises instead of being served, at the cost
  of one memory pass over the chunks read (a full sha256 pass is what `verify` does);
- the array's fill value is NaN, which `put` never stores: a chunk that is missing
  (deleted file, emptied shard index) reads as NaN and is refused, not served as zeros.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import DamagedSegmentError, SegmentGone
from storage.fs import Location
from storage.segment_base import CheckedSegment, sha256_hex
from storage.keyindex import key_digests

__all__ = ["chunk_layout", "write_segment_v1", "SegmentV1"]

SEGMENT_FORMAT = 1
#: Inner chunk (the unit a random read fetches and checks): about 256 KiB, i.e. 128
#: rows of 1024-d float16. Shard (one file): 64 inner chunks, 8192 rows, 16 MiB.
CHUNK_TARGET_BYTES = 256 * 1024
SHARD_CHUNKS = 64
#: Read a shard's whole span of rows when at least 1 in DENSE_FACTOR rows is wanted;
#: otherwise fetch only the inner chunks holding the wanted rows.
DENSE_FACTOR = 4


def chunk_layout(rows: int, dim: int, dtype: str) -> tuple[int, int]:
    """(inner chunk rows, shard rows) for an array of `rows` x `dim`."""
    itemsize = np.dtype(dtype).itemsize
    inner = max(1, min(rows, CHUNK_TARGET_BYTES // (dim * itemsize)))
    n_inner = -(-rows // inner)
    return inner, inner * min(SHARD_CHUNKS, n_inner)


def _encode_vectors(vectors: np.ndarray) -> dict[str, memoryview]:
    """The Zarr v3 files of an array, built in memory so each can be hashed as written."""
    rows, dim = vectors.shape
    inner, shard = chunk_layout(rows, dim, vectors.dtype.name)
    store: dict = {}
    import zarr  # only for the old format: the cache's import stays light
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    arr = zarr.create_array(
        zarr.storage.MemoryStore(store),
        shape=vectors.shape,
        dtype=vectors.dtype,
        chunks=(shard, dim),
        serializer=ShardingCodec(chunk_shape=(inner, dim), codecs=[BytesCodec(), Crc32cCodec()]),
        compressors=None,  # embeddings barely compress; reading speed matters more
        filters=None,
        fill_value=float("nan"),
        zarr_format=3,
        # No chunk of ours is all fill value; skipping that per-chunk scan makes the
        # encoding about 3x faster.
        config={"write_empty_chunks": True},
    )
    arr[:] = vectors
    # memoryviews of zarr's buffers: hashing and writing them needs no extra copy.
    return {f"vectors/{name}": memoryview(buf.as_numpy_array()) for name, buf in store.items()}


def _encode_keys(keys: list[str]) -> memoryview:
    sink = io.BytesIO()
    pq.write_table(pa.table({"key": pa.array(keys, pa.string())}), sink, compression="zstd")
    return sink.getbuffer()


def write_segment_v1(loc: Location, seg_dir: str, segment_id: str, keys: list[str], vectors: np.ndarray) -> dict:
    """Write a segment's files (fsynced) and return its manifest entry; does not publish."""
    files = _encode_vectors(vectors)
    files["keys.parquet"] = _encode_keys(keys)
    for rel, data in files.items():
        loc.write_file(f"{seg_dir}/{rel}", data, atomic=False)
    meta = {
        "format": SEGMENT_FORMAT,
        "segment_id": segment_id,
        "rows": len(keys),
        "dim": int(vectors.shape[1]),
        "dtype": vectors.dtype.name,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "files": {rel: {"size": data.nbytes, "sha256": sha256_hex(data)} for rel, data in sorted(files.items())},
    }
    meta_bytes = json.dumps(meta, indent=1, sort_keys=True).encode()
    loc.write_file(f"{seg_dir}/meta.json", meta_bytes, atomic=False)
    loc.sync_tree(seg_dir)
    return {"segment_id": segment_id, "rows": len(keys), "meta_sha256": sha256_hex(meta_bytes)}


class SegmentV1(CheckedSegment):
    """A published format-1 segment, opened for reading.

    Cheap checks run once per process (meta, sizes, small files); chunk checksums run
    on every read. Any failure raises `DamagedSegmentError` naming the segment, and the
    segment stays refused for the rest of the process.
    """

    def __init__(self, loc: Location, ns_dir: str, namespace: str, entry: dict, dim: int, dtype: str):
        super().__init__(loc, ns_dir, namespace, entry, dim, dtype)
        self._array = None
        self._shard_rows = 0
        self._inner_rows = 0
        self.bytes_read = 0  # vector bytes fetched: whole inner chunks

    def digests(self) -> np.ndarray:
        """Digests of the keys in row order (hashed from keys.parquet)."""
        return key_digests(self.keys())

    def _open_array(self):
        if self._array is not None:
            return self._array
        self._check_file_sizes()
        self._read_checked("vectors/zarr.json")
        import zarr

        arr = zarr.open_array(self.loc.zarr_store(self.dir, "vectors"), mode="r")
        if tuple(arr.shape) != (self.rows, self._dim) or arr.dtype != np.dtype(self._dtype):
            found = f"{arr.dtype}{list(arr.shape)}"
            raise self._damaged(f"vectors are {found}, expected {self._dtype}[{self.rows}, {self._dim}]")
        self._shard_rows = int((arr.shards or arr.chunks)[0])
        self._inner_rows = int(arr.chunks[0])
        self._array = arr
        return arr

    # ------------------------------------------------------------------ reading
    def read_into(self, out: np.ndarray, out_pos: np.ndarray, rows: np.ndarray, digests: np.ndarray) -> None:
        """out[out_pos[i]] = vector of row rows[i].

        Reads shard by shard in row order. While one shard's rows are converted (float16
        -> float32 costs about as much as reading them) and placed, a helper thread
        already reads the next shard.
        """
        # `digests` (of the keys asked) are not needed: rows come from keys.parquet here.
        arr = self._open_array()
        order = np.argsort(rows, kind="stable")
        rows_s, pos_s = rows[order], out_pos[order]
        cuts = (np.flatnonzero(np.diff(rows_s // self._shard_rows)) + 1).tolist()
        blocks = [(rows_s[a:b], pos_s[a:b]) for a, b in zip([0, *cuts], [*cuts, len(rows_s)], strict=True)]
        if len(blocks) == 1:
            self._place(out, blocks[0][1], self._fetch(arr, blocks[0][0]))
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._fetch, arr, blocks[0][0])
            for i, (_, p) in enumerate(blocks):
                values = pending.result()
                if i + 1 < len(blocks):
                    pending = pool.submit(self._fetch, arr, blocks[i + 1][0])
                self._place(out, p, values)

    def _fetch(self, arr, r: np.ndarray) -> np.ndarray:
        """Vectors of sorted rows `r` (all in one shard), in that order."""
        lo, hi = int(r[0]), int(r[-1]) + 1
        try:
            if hi - lo == len(r) and (np.diff(r) == 1).all():
                values = arr[lo:hi]
            elif len(r) * DENSE_FACTOR >= hi - lo:
                values = arr[lo:hi][r - lo]
            else:
                uniq, inverse = np.unique(r, return_inverse=True)
                values = arr.oindex[uniq][inverse]
        except FileNotFoundError:
            raise SegmentGone(self.segment_id, "a vector file vanished while reading") from None
        except ValueError as e:
            if "checksum" not in str(e):
                raise
            raise self._damaged(f"vector chunk checksum mismatch in rows {lo}..{hi - 1}") from None
        self._check_filled(values)
        chunks = len(np.unique(r // self._inner_rows))
        self.bytes_read += chunks * self._inner_rows * self._dim * np.dtype(self._dtype).itemsize
        return values

    @staticmethod
    def _place(out: np.ndarray, p: np.ndarray, values: np.ndarray) -> None:
        if p[-1] - p[0] == len(p) - 1 and (np.diff(p) == 1).all():
            out[int(p[0]) : int(p[-1]) + 1] = values  # a run of outputs: no scatter
        else:
            out[p] = values

    def _check_filled(self, values: np.ndarray) -> None:
        # put never stores NaN and the fill value is NaN: NaN here means a missing chunk.
        if values.size and np.isnan(values[:, 0]).any():
            raise SegmentGone(self.segment_id, "a vector chunk is missing (read as fill value)")

    # ------------------------------------------------------------------ verify
    def verify(self) -> list[str]:
        """Full check of every byte against meta.json; the problems found, named by file."""
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
            elif self.loc.sha256(self.dir, rel) != info["sha256"]:
                problems.append(f"{rel}: sha256 does not match meta.json")
        extra = sorted(set(sizes) - set(meta["files"]) - {"meta.json"})
        problems += [f"{rel}: unexpected file" for rel in extra]
        if not problems:
            try:
                self.keys()
                self._open_array()
            except DamagedSegmentError as e:
                problems.append(e.problem)
        if problems:
            self.damage = problems[0]
        return problems
