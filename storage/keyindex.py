"""A namespace's key index: which global row holds each key, in 24 bytes a key (32 in
memory once looked up).

Keys are never kept as Python strings. Each key becomes a fixed-width 16-byte digest
(blake2b-128 of its UTF-8 bytes: collision-free in practice for any number of keys a
cache will hold, whatever the keys look like), and the index is two numpy arrays:
the digests sorted (dtype ``S16``) and, aligned with them, the global position of the
key's row (int64: segment base + row). A lookup sorts its query digests and runs one
`np.searchsorted` over the digests' first 8 bytes as uint64 (kept beside them after
the first lookup), so `missing()` over 10k keys costs milliseconds at any size.

The index is derived data: it can always be rebuilt from the segments' own digest
files, and a persisted copy (`dump` / `load`) is only a shortcut that is checked
(sha256 over its payload, the segment list it covers) before it is used. A row served
through the index is checked again against the key: every row's crc32c is seeded with
its key's digest (segments.py), so even a wrong index entry cannot serve another
key's vector.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence

import numpy as np

__all__ = ["DIGEST", "key_digests", "KeyIndex", "IndexFileError"]

DIGEST = np.dtype("S16")
_MAGIC = b"TEXTME-KEYINDEX-1\n"


class IndexFileError(ValueError):
    """A persisted index file is damaged or does not match the segments (rebuild it)."""


def key_digests(keys: Sequence[str]) -> np.ndarray:
    """The 16-byte digest of each key, as an ``S16`` array in the order given."""
    blake2b = hashlib.blake2b
    joined = b"".join([blake2b(k, digest_size=16).digest() for k in map(str.encode, keys)])
    return np.frombuffer(joined, DIGEST).copy() if keys else np.empty(0, DIGEST)


def _high_words(digests: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each digest as a uint64 that sorts like the bytes."""
    return np.ascontiguousarray(digests).view(">u8")[::2].astype(np.uint64)


def _sort_order(digests: np.ndarray) -> np.ndarray:
    """Stable argsort of S16 digests (ties keep their order: earlier segment first).

    Sorting the first 8 bytes as a big-endian uint64 gives the same order as the bytes
    and is about 3x faster than sorting S16; the rare ties on those 8 bytes between
    different digests are put right by a full sort."""
    if len(digests) == 0:
        return np.empty(0, np.int64)
    order = np.argsort(_high_words(digests), kind="stable")
    s = digests[order]
    if not (s[1:] >= s[:-1]).all():
        order = np.argsort(digests, kind="stable")
    return order


class KeyIndex:
    """Sorted unique digests -> global row position (the first copy of each key)."""

    def __init__(self, digests: np.ndarray | None = None, pos: np.ndarray | None = None):
        self.digests = np.empty(0, DIGEST) if digests is None else digests
        self.pos = np.empty(0, np.int64) if pos is None else pos
        self._hi: np.ndarray | None = None  # high words of `digests`, built by the first lookup

    def __len__(self) -> int:
        return len(self.digests)

    @property
    def nbytes(self) -> int:
        return self.digests.nbytes + self.pos.nbytes + (0 if self._hi is None else self._hi.nbytes)

    def lookup(self, digests: np.ndarray, *, keep_high_words: bool = True) -> np.ndarray:
        """Global position of each digest, -1 where absent (same order as asked).

        Searches the digests' first 8 bytes as native uint64, an array of 8 more bytes
        a key kept from the first lookup on (`keep_high_words`): `searchsorted` over S16
        compares byte strings, over uint64 machine words (a one-off timing, 100k queries
        into 3M keys: 48 ms before, about 15 ms for the whole lookup now; the benchmark
        figure is the whole get's, benchmarks/bench_cache.py). The full 16 bytes then
        decide; a query whose high word several indexed digests
        share (among 30M keys, any two share one with probability about 2.4e-5) is
        searched again on all 16."""
        out = np.full(len(digests), -1, np.int64)
        if len(self.digests) == 0 or len(digests) == 0:
            return out
        if self._hi is None and keep_high_words:
            self._hi = _high_words(self.digests)
        q_hi = _high_words(digests)
        order = np.argsort(q_hi)  # sorted needles make searchsorted walk forward
        q = digests[order]
        last = len(self.digests) - 1
        if self._hi is None:
            i = np.minimum(np.searchsorted(self.digests, q), last)
            hit = self.digests[i] == q
        else:
            q_hi = q_hi[order]
            i = np.minimum(np.searchsorted(self._hi, q_hi), last)
            hit = self.digests[i] == q
            shared = np.flatnonzero(~hit & (self._hi[i] == q_hi))
            if len(shared):
                i[shared] = np.minimum(np.searchsorted(self.digests, q[shared]), last)
                hit[shared] = self.digests[i[shared]] == q[shared]
        out[order[hit]] = self.pos[i[hit]]
        return out

    def add(self, digests: np.ndarray, pos: np.ndarray) -> None:
        """Merge rows that come after everything indexed; keys already known keep their
        earlier position, and within the batch the first copy wins."""
        if len(digests) == 0:
            return
        order = _sort_order(digests)
        d, p = digests[order], pos[order]
        first = np.ones(len(d), bool)
        first[1:] = d[1:] != d[:-1]
        d, p = d[first], p[first]
        if len(self.digests):
            # no high words built here: a merge at open would need them beside two
            # copies of the index (the 30M-key open must fit in 2 GB)
            known = self.lookup(d, keep_high_words=False) >= 0
            d, p = d[~known], p[~known]
            at = np.searchsorted(self.digests, d)
            self.digests = np.insert(self.digests, at, d)
            self.pos = np.insert(self.pos, at, p)
            if self._hi is not None:
                self._hi = np.insert(self._hi, at, _high_words(d))
        else:
            self.digests, self.pos, self._hi = d, p, None

    # ------------------------------------------------------------------ persistence
    def dump(self, segments: list[dict]) -> bytes:
        """The index as one file: a JSON header (the segments it covers, in order, and
        the payload's sha256), then the sorted digests and positions."""
        return b"".join(self.dump_parts(segments))

    def dump_parts(self, segments: list[dict]) -> list[memoryview | bytes]:
        """`dump` as its pieces, the arrays not copied (a 30M-key index is 720 MB)."""
        payload_d = memoryview(np.ascontiguousarray(self.digests)).cast("B")
        payload_p = memoryview(np.ascontiguousarray(self.pos, "<i8")).cast("B")
        digest = hashlib.sha256(payload_d)
        digest.update(payload_p)
        header = json.dumps(
            {"n": len(self.digests), "segments": segments, "sha256": digest.hexdigest()}, sort_keys=True
        ).encode()
        return [_MAGIC, struct.pack("<Q", len(header)), header, payload_d, payload_p]

    @classmethod
    def load(cls, data: bytes) -> tuple[KeyIndex, list[dict]]:
        """(index, the segments it covers); IndexFileError if anything does not check."""
        try:
            if not data.startswith(_MAGIC):
                raise IndexFileError("not an index file")
            at = len(_MAGIC)
            (hlen,) = struct.unpack_from("<Q", data, at)
            header = json.loads(data[at + 8 : at + 8 + hlen])
            n, start = int(header["n"]), at + 8 + hlen
            if len(data) != start + n * 24:
                raise IndexFileError(f"index file is {len(data)} bytes, its header says {start + n * 24}")
            view = memoryview(data)
            digest = hashlib.sha256(view[start : start + n * 16])
            digest.update(view[start + n * 16 :])
            if digest.hexdigest() != header["sha256"]:
                raise IndexFileError("index file: sha256 does not match its header")
            digests = np.frombuffer(data, DIGEST, n, start)
            pos = np.frombuffer(data, "<i8", n, start + n * 16).astype(np.int64, copy=False)
            return cls(digests, pos), list(header["segments"])
        except (ValueError, KeyError, TypeError, struct.error) as e:
            if isinstance(e, IndexFileError):
                raise
            raise IndexFileError(f"index file unreadable: {e}") from None
