"""What every segment reader shares, whatever its format: where it is, and the checks
of meta.json (pinned by the manifest entry's sha256) and of the small files meta.json
pins in turn. A failed check marks the segment damaged for the rest of the process."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import DamagedSegmentError, SegmentGone
from storage.fs import Location

__all__ = ["CheckedSegment", "sha256_hex"]


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class CheckedSegment:
    """A published segment's location and its meta/small-file checks (subclassed per format)."""

    def __init__(self, loc: Location, ns_dir: str, namespace: str, entry: dict, dim: int, dtype: str):
        self.loc = loc
        self.namespace = namespace
        self.segment_id: str = entry["segment_id"]
        self.rows: int = int(entry["rows"])
        self.dir = f"{ns_dir}/segments/{self.segment_id}"
        self._entry = entry
        self._dim = dim
        self._dtype = np.dtype(dtype)
        self._meta: dict | None = None
        self.damage: str | None = None

    def _damaged(self, problem: str) -> DamagedSegmentError:
        self.damage = problem
        return DamagedSegmentError(self.namespace, self.segment_id, problem)

    def meta(self) -> dict:
        """meta.json, checked against the manifest entry's sha256 and the namespace."""
        if self.damage:
            raise DamagedSegmentError(self.namespace, self.segment_id, self.damage)
        if self._meta is None:
            try:
                data = self.loc.read_bytes(self.dir, "meta.json")
            except FileNotFoundError:
                raise self._damaged("meta.json is missing") from None
            if sha256_hex(data) != self._entry.get("meta_sha256"):
                raise self._damaged("meta.json: sha256 does not match the manifest entry")
            meta = json.loads(data)
            found = (meta.get("rows"), meta.get("dim"), meta.get("dtype"))
            if found != (self.rows, self._dim, self._dtype.name):
                raise self._damaged(
                    f"meta.json says rows={found[0]} dim={found[1]} dtype={found[2]}, expected "
                    f"rows={self.rows} dim={self._dim} dtype={self._dtype.name}"
                )
            self._meta = meta
        return self._meta

    def _read_checked(self, rel: str) -> bytes:
        """A small file's bytes, after comparing them with meta.json's sha256."""
        meta = self.meta()
        try:
            data = self.loc.read_bytes(self.dir, rel)
        except FileNotFoundError:
            raise self._damaged(f"{rel} is missing") from None
        if sha256_hex(data) != meta["files"].get(rel, {}).get("sha256"):
            raise self._damaged(f"{rel}: sha256 does not match meta.json")
        return data

    def _check_file_sizes(self) -> dict:
        """meta.json, after checking every file it lists is there with its recorded size."""
        meta = self.meta()
        sizes = self.loc.file_sizes(self.dir)
        if not sizes:
            raise SegmentGone(self.segment_id, "segment folder is gone")
        for rel, info in meta["files"].items():
            if rel not in sizes:
                raise self._damaged(f"{rel} is missing")
            if sizes[rel] != info["size"]:
                raise self._damaged(f"{rel} is {sizes[rel]} bytes, meta.json says {info['size']}")
        return meta

    def keys(self) -> list[str]:
        """The segment's keys in row order (checksum-verified)."""
        table = pq.read_table(pa.BufferReader(self._read_checked("keys.parquet")))
        keys = table.column("key").to_pylist()
        if len(keys) != self.rows:
            raise self._damaged(f"keys.parquet has {len(keys)} rows, expected {self.rows}")
        return keys
