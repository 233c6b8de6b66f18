"""Small helpers shared by the storage tests (reach into files behind the API's back)."""

from __future__ import annotations

import posixpath

import fsspec
import numpy as np


def fs_and_path(root: str, *parts: str):
    fs, path = fsspec.core.url_to_fs(root)
    return fs, posixpath.join(path, *parts)


def segment_ids(root: str, ns_id: str) -> list[str]:
    """Published segment ids of a namespace, sorted."""
    fs, path = fs_and_path(root, "namespaces", ns_id, "manifest")
    fs.invalidate_cache()
    names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
    return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))


def segment_keys(root: str, ns_id: str, segment_id: str) -> list[str]:
    import pyarrow.parquet as pq

    fs, path = fs_and_path(root, "namespaces", ns_id, "segments", segment_id, "keys.parquet")
    with fs.open(path, "rb") as f:
        return pq.read_table(f).column("key").to_pylist()


def flip_byte(root: str, rel: str, offset: int) -> None:
    """XOR one byte of a file under root (offset may be negative: from the end)."""
    fs, path = fs_and_path(root, rel)
    data = bytearray(fs.cat_file(path))
    data[offset] ^= 0x40
    fs.pipe_file(path, bytes(data))


def remove_file(root: str, rel: str) -> None:
    fs, path = fs_and_path(root, rel)
    fs.rm(path)


def as_stored(v: np.ndarray, dtype: str = "float16") -> np.ndarray:
    """What the cache returns for vectors put into a namespace of `dtype`."""
    return np.asarray(v).astype(dtype).astype(np.float32)


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def put_v1(ns, keys: list[str], v: np.ndarray) -> str:
    """Publish a segment of the first format (Zarr chunks), as caches written before
    segment format 2 hold them; returns its id."""
    from storage import manifest
    from storage.segments_v1 import write_segment_v1

    seg_id = manifest.new_segment_id()
    entry = write_segment_v1(ns.loc, f"{ns.dir}/segments/{seg_id}", seg_id, list(keys), np.asarray(v).astype(ns.dtype))
    manifest.publish(ns.loc, ns.dir, entry)
    return seg_id
