"""One storage root, local or fsspec, and the few file operations the stores need.

The stores (cache, tables) speak only to a `Location`, so a local folder, file://,
memory:// and s3:// go through the same code. The one place the two worlds differ is
publishing a file atomically:

- local disk: write a temporary name in the same folder, fsync, rename over the final
  name, fsync the folder. A reader sees the old state or the whole new file.
- object stores (s3, gcs, memory): rename is a copy, not atomic, but a single put is:
  the object appears whole or not at all. So the file is written with one put.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["Location", "TEMP_PREFIX"]

#: Names starting with this are writes in progress; every listing skips them.
TEMP_PREFIX = ".tmp-"
_READ_BLOCK = 1 << 22


@dataclass
class Location:
    """A root folder on a filesystem. Paths given to methods are relative to it."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = os.fspath(self.url)
        self.fs, root = fsspec.core.url_to_fs(url, **self.storage_options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self.url = url

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        """Absolute path (in the filesystem's own terms) of a path under the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def full_url(self, *parts: str) -> str:
        """A URL for a path under the root that another library can open (zarr, DuckDB)."""
        p = self.path(*parts)
        return p if self.is_local else self.fs.unstrip_protocol(p)

    def __str__(self) -> str:
        return self.url

    # ------------------------------------------------------------------ reading
    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def read_bytes(self, *parts: str) -> bytes:
        return self.fs.cat_file(self.path(*parts))

    def list_names(self, *parts: str, temp: bool = False) -> list[str]:
        """Names directly under a folder, sorted; [] if it does not exist.

        Writes in progress (TEMP_PREFIX names) are skipped, or with `temp`, the only
        names listed."""
        p = self.path(*parts)
        if self.is_local:
            try:
                names = os.listdir(p)
            except (FileNotFoundError, NotADirectoryError):
                return []
        else:
            self.fs.invalidate_cache(p)  # object-store listings are cached by fsspec
            try:
                names = [posixpath.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False)]
            except FileNotFoundError:
                return []
        return sorted(n for n in names if n.startswith(TEMP_PREFIX) == temp)

    def file_sizes(self, *parts: str) -> dict[str, int]:
        """{relative path: size} of every file below a folder (recursive)."""
        p = self.path(*parts)
        if not self.is_local:
            self.fs.invalidate_cache(p)
        try:
            found = self.fs.find(p, detail=True)
        except FileNotFoundError:
            return {}
        return {posixpath.relpath(name, p): int(info["size"]) for name, info in found.items()}

    def age_s(self, *parts: str) -> float | None:
        """Seconds since a file was last modified (None if unknown or gone)."""
        try:
            info = self.fs.info(self.path(*parts))
        except FileNotFoundError:
            return None
        made = info.get("mtime", info.get("LastModified", info.get("created")))
        if isinstance(made, datetime):
            made = made.timestamp()
        return None if made is None else time.time() - float(made)

    def sha256(self, *parts: str) -> str:
        """sha256 hex of a file, streamed."""
        digest = hashlib.sha256()
        with self.fs.open(self.path(*parts), "rb") as f:
            while block := f.read(_READ_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    # ------------------------------------------------------------------ writing
    def write_file(self, rel: str, data: bytes | memoryview | list, *, atomic: bool) -> None:
        """Write one file (`data` may be a list of buffers, written one after the other).
        `atomic`: readers see the old state or all of it, never a part.

        Local files are always fsynced before returning: a manifest entry published
        after them must never point at data still in the page cache.
        """
        p = self.path(rel)
        parts = data if isinstance(data, list) else [data]
        if not self.is_local:
            self.fs.pipe_file(p, b"".join(parts))  # one put: atomic on object stores
            return
        folder = os.path.dirname(p)
        os.makedirs(folder, exist_ok=True)
        # The temporary name starts with TEMP_PREFIX and ends with a random suffix, so
        # no listing or glob (*.parquet, *.json) ever picks up a half-written file.
        target = os.path.join(folder, f"{TEMP_PREFIX}{os.path.basename(p)}.{uuid.uuid4().hex}") if atomic else p
        with open(target, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        if atomic:
            os.replace(target, p)
            fsync_dir(folder)

    def write_new(self, rel: str, data: bytes) -> bool:
        """Atomically create `rel` unless it exists; return False (no-op) if it did.

        Used for idempotent writes named by content: the same name always carries the
        same content, so losing a race to another writer changes nothing.
        """
        if self.exists(rel):
            return False
        self.write_file(rel, data, atomic=True)
        return True

    def sync_tree(self, *parts: str) -> None:
        """fsync every folder below (and including) a local folder: makes new names durable."""
        if not self.is_local:
            return
        top = self.path(*parts)
        for folder, _, _ in os.walk(top):
            fsync_dir(folder)
        fsync_dir(os.path.dirname(top))

    def remove(self, *parts: str, recursive: bool = False) -> None:
        """Delete a file or (recursive) folder; missing is fine."""
        p = self.path(*parts)
        try:
            self.fs.rm(p, recursive=recursive)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ zarr
    def zarr_store(self, *parts: str, read_only: bool = True):
        """A zarr v3 store for a folder under the root (LocalStore on disk, else FsspecStore)."""
        import zarr.storage

        if self.is_local:
            return zarr.storage.LocalStore(self.path(*parts), read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.full_url(*parts), storage_options=self.storage_options or None, read_only=read_only
        )


def fsync_dir(folder: str) -> None:
    """Make a folder's entries (new or renamed names) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
