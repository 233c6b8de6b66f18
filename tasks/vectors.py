"""Cached vectors read back in bounded chunks (what training and offsets need).

`Namespace.get` returns float32 rows; asking for all of a large key list at once
would hold every row as float32 plus the copy the caller makes. These helpers ask for
`READ_CHUNK_ROWS` keys at a time, so the transient cost is one chunk, and `read_rows`
keeps the rows in the namespace's own dtype (float16 in the cache by default: every
value is kept exactly, at half the memory).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["READ_CHUNK_ROWS", "iter_rows", "read_rows"]

#: Keys asked of the cache per `get` (65536 x 1024-d float32 = 256 MiB transient).
READ_CHUNK_ROWS = 65536


def iter_rows(ns: Any, keys: Sequence[str], chunk: int = READ_CHUNK_ROWS) -> Iterator[np.ndarray]:
    """float32 rows of `keys`, in order, `chunk` keys per read."""
    for start in range(0, len(keys), chunk):
        yield ns.get(list(keys[start : start + chunk]))


def read_rows(ns: Any, keys: Sequence[str], chunk: int = READ_CHUNK_ROWS) -> np.ndarray:
    """[len(keys), dim] rows in the namespace's dtype, filled `chunk` keys at a time."""
    out = np.empty((len(keys), ns.dim), dtype=np.dtype(ns.dtype))
    start = 0
    for rows in iter_rows(ns, keys, chunk):
        out[start : start + len(rows)] = rows  # exact: the cache stores this dtype
        start += len(rows)
    return out
