"""Errors the storage layer raises on purpose (bad input raises ValueError/TypeError/KeyError)."""

from __future__ import annotations

__all__ = ["DamagedSegmentError", "NamespaceMismatchError", "SegmentGone", "TableSchemaError"]


class DamagedSegmentError(Exception):
    """A published cache segment failed a checksum, size or shape check; it is not served.

    Its keys stay unreadable until `Namespace.verify(quarantine=True)` unpublishes the
    segment; they are then missing, and the next run recomputes them.
    """

    def __init__(self, namespace: str, segment_id: str, problem: str):
        self.namespace = namespace
        self.segment_id = segment_id
        self.problem = problem
        super().__init__(
            f"cache namespace {namespace}: segment {segment_id} is damaged ({problem}); "
            "it is not served. Run verify(quarantine=True) on the namespace to drop it; "
            "its vectors are then recomputed as missing"
        )


class NamespaceMismatchError(ValueError):
    """A namespace was reopened with another dim or dtype than it was created with."""


class TableSchemaError(ValueError):
    """Rows do not match a table's schema (names the table, the column and the row)."""


class SegmentGone(Exception):
    """A segment's files vanished while reading (compacted away by another process?).

    Internal to the cache: it re-lists and retries, or raises DamagedSegmentError."""

    def __init__(self, segment_id: str, problem: str):
        self.segment_id = segment_id
        self.problem = problem
        super().__init__(f"segment {segment_id}: {problem}")
