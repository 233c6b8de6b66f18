"""Fixtures for the storage tests: the same tests run on a local folder, a file:// URL
and (in-process only) a memory:// URL."""

from __future__ import annotations

import uuid

import fsspec
import pytest


def _memory_root():
    name = f"storage-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture(params=["local", "file", "memory"])
def root(request, tmp_path):
    """A storage root: a plain folder path, a file:// URL, or a memory:// URL."""
    if request.param == "local":
        yield str(tmp_path / "store")
    elif request.param == "file":
        yield f"file://{tmp_path / 'store'}"
    else:
        yield from _memory_root()


@pytest.fixture(params=["local", "file"])
def disk_root(request, tmp_path):
    """A root several processes can share (memory:// lives inside one process)."""
    path = tmp_path / "store"
    yield str(path) if request.param == "local" else f"file://{path}"
