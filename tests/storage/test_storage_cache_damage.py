"""Damaged segments: verify names them, get never serves them, quarantine recovers.

Policy under test: a key whose segment fails a check raises DamagedSegmentError (naming
the segment) on get; keys of healthy segments are still served; verify(quarantine=True)
unpublishes the damaged segment so its keys become missing and can be put again.
Each case runs on segments of the current format and of format 1 (Zarr chunks), which
caches written before format 2 still hold.
"""

from __future__ import annotations

import numpy as np
import pytest
from storage_helpers import as_stored, flip_byte, put_v1, remove_file, segment_ids, vectors

from storage.cache import EmbeddingCache, forget_open_namespaces
from storage.errors import DamagedSegmentError
from storage.fingerprint import text_key

IDENTITY = {"model": "tiny-clap", "tower": "modal", "embed_code_version": "1"}
DIM = 16


#: The files a case damages, per segment format.
FILES = {
    "current": {"vectors": "vectors.bin", "keys": "digests.npy"},
    "format 1": {"vectors": "vectors/c/0/0", "keys": "keys.parquet"},
}


@pytest.fixture(params=list(FILES))
def layout(request):
    return request.param


@pytest.fixture
def two_segments(root, layout):
    """A namespace with two segments: keys[:20] in the first, keys[20:] in the second."""
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys = [text_key(f"item {i}") for i in range(40)]
    v = vectors(40, DIM)
    for part in (slice(0, 20), slice(20, 40)):
        if layout == "current":
            ns.put(keys[part], v[part])
        else:
            put_v1(ns, keys[part], v[part])
    first, second = segment_ids(root, ns.id)
    return ns, keys, v, first, second


def fresh(root):
    """The namespace as a new process opens it (nothing loaded in this one)."""
    forget_open_namespaces()
    return EmbeddingCache(root).namespace(IDENTITY, dim=DIM)


def seg_file(ns, segment_id: str, rel: str) -> str:
    return f"namespaces/{ns.id}/segments/{segment_id}/{rel}"


def test_verify_passes_on_a_healthy_cache(root, two_segments):
    ns, *_ = two_segments
    report = ns.verify()
    assert report.ok and report.segments == 2 and report.rows == 40 and not report.unpublished
    assert [r.ok for r in EmbeddingCache(root).verify()] == [True]


def test_flipped_vector_byte_is_found_by_verify_and_never_served(root, two_segments, layout):
    ns, keys, v, first, second = two_segments
    np.testing.assert_array_equal(ns.get(keys), as_stored(v))  # opened and read once
    vec = FILES[layout]["vectors"]
    flip_byte(root, seg_file(ns, second, vec), 100)  # inside row 3's bytes

    report = fresh(root).verify()
    assert not report.ok
    assert [b.segment_id for b in report.bad] == [second]
    expected = {"current": f"{vec} row 3: crc32c does not match crc32c.npy",
                "format 1": f"{vec}: sha256 does not match meta.json"}[layout]
    assert report.bad[0].problems == [expected]
    assert second in str(report)

    for reader in (ns, fresh(root)):  # already open, and fresh
        with pytest.raises(DamagedSegmentError, match=second):
            reader.get([keys[0], keys[23]])
        np.testing.assert_array_equal(reader.get(keys[:20]), as_stored(v[:20]))  # healthy segment still served


def test_quarantine_makes_damaged_keys_missing_then_recomputable(root, two_segments, layout):
    ns, keys, v, first, second = two_segments
    flip_byte(root, seg_file(ns, second, FILES[layout]["vectors"]), -1)  # last row / shard index checksum
    with pytest.raises(DamagedSegmentError, match=second):
        ns.get(keys[20:])
    report = ns.verify(quarantine=True)
    assert report.quarantined == [second]
    assert segment_ids(root, ns.id) == [first]
    assert ns.missing(keys) == keys[20:]
    assert ns.put(keys[20:], v[20:]) == 20
    np.testing.assert_array_equal(fresh(root).get(keys), as_stored(v))
    assert ns.verify().ok


def test_damaged_keys_file_is_refused_on_load(root, two_segments, layout):
    ns, keys, _, first, _ = two_segments
    name = FILES[layout]["keys"]
    flip_byte(root, seg_file(ns, first, name), 40)
    reader = fresh(root)
    with pytest.raises(DamagedSegmentError, match=rf"{first}.*{name}"):
        reader.missing(keys)
    assert [b.segment_id for b in reader.verify().bad] == [first]


def test_missing_shard_file_is_an_error_not_zeros(root, two_segments, layout):
    ns, keys, _, first, _ = two_segments
    vec = FILES[layout]["vectors"]
    remove_file(root, seg_file(ns, first, vec))
    with pytest.raises(DamagedSegmentError, match=rf"{first}.*{vec} is missing"):
        fresh(root).get(keys[:3])
    # a reader that loaded the index before the file vanished
    with pytest.raises(DamagedSegmentError, match=first):
        ns.get(keys[:3])
    assert ns.verify().bad[0].problems == [f"{vec} is missing"]


def test_edited_meta_json_blocks_the_namespace_until_quarantined(root, two_segments):
    # Without a trustworthy meta/keys file nobody can tell which keys the segment held,
    # so every read of the namespace refuses, naming the segment, until it is dropped.
    ns, keys, v, first, second = two_segments
    flip_byte(root, seg_file(ns, second, "meta.json"), 5)
    reader = fresh(root)
    for call in (lambda: reader.get(keys[:1]), lambda: reader.missing(keys), reader.count):
        with pytest.raises(DamagedSegmentError, match=rf"{second}.*meta\.json"):
            call()
    assert reader.verify(quarantine=True).quarantined == [second]
    assert reader.missing(keys) == keys[20:]
    np.testing.assert_array_equal(reader.get(keys[:20]), as_stored(v[:20]))


def test_truncated_vector_file_is_refused(root, two_segments, layout):
    from storage_helpers import fs_and_path

    ns, keys, _, first, _ = two_segments
    fs, path = fs_and_path(root, seg_file(ns, first, FILES[layout]["vectors"]))
    fs.pipe_file(path, fs.cat_file(path)[:-10])
    with pytest.raises(DamagedSegmentError, match=rf"{first}.*bytes, meta.json says"):
        fresh(root).get(keys[:2])
