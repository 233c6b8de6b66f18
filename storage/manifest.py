"""A namespace's manifest: the set of published segments, one small file per segment.

``manifest/<segment_id>.json`` holds ``{"segment_id", "rows", "meta_sha256"}``. A
segment is visible exactly when its entry exists; publishing is one atomic file
creation (rename on local disk, a single put on object stores), so a reader sees a
segment wholly or not at all, and a crashed writer leaves nothing visible.

Why one file per segment rather than one manifest file: two processes adding segments
at once each create their own entry, and nobody rewrites a shared file, so there is no
lost update and no lock. Entries are immutable; `compact` and `verify(quarantine=True)`
only delete them.

Segment ids start with the UTC time of writing, then a random part: unique without
coordination, and sorting them gives write order. When two segments hold the same key
(two writers raced on it), the first segment in id order wins on read, on every
machine, and `compact` drops the other copy.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from storage.fs import Location

__all__ = ["new_segment_id", "segment_time", "list_entries", "read_entry", "publish", "unpublish"]

_SUFFIX = ".json"
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"


def new_segment_id() -> str:
    """A unique, time-ordered id, e.g. ``20260125T103015123456Z-3f2a9c1b0d4e5f60``."""
    return f"{datetime.now(timezone.utc).strftime(_TIME_FORMAT)}-{uuid.uuid4().hex[:16]}"


def segment_time(segment_id: str) -> datetime | None:
    """When a segment id was made (None if the name is not a segment id)."""
    try:
        return datetime.strptime(segment_id.split("-", 1)[0], _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def list_entries(loc: Location, ns_dir: str) -> list[str]:
    """Ids of the published segments, sorted (= read precedence)."""
    names = loc.list_names(ns_dir, "manifest")
    return sorted(n[: -len(_SUFFIX)] for n in names if n.endswith(_SUFFIX))


def read_entry(loc: Location, ns_dir: str, segment_id: str) -> dict:
    return json.loads(loc.read_bytes(ns_dir, "manifest", segment_id + _SUFFIX))


def publish(loc: Location, ns_dir: str, entry: dict) -> None:
    """Make a fully written, fsynced segment visible: one atomic file creation."""
    data = json.dumps(entry, sort_keys=True).encode()
    loc.write_file(f"{ns_dir}/manifest/{entry['segment_id']}{_SUFFIX}", data, atomic=True)


def unpublish(loc: Location, ns_dir: str, segment_id: str) -> None:
    """Hide a segment; durable before returning, as the caller deletes its files next."""
    loc.remove(ns_dir, "manifest", segment_id + _SUFFIX)
    loc.sync_tree(ns_dir, "manifest")
