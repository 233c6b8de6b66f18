"""The embedding cache in one process: put/get/missing, bad input, namespaces, compact, gc.

Every test runs on a local folder, a file:// URL and a memory:// URL (`root` fixture).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from storage_helpers import as_stored, fs_and_path, put_v1, segment_ids, vectors

import storage.cache as cache_mod
from storage import manifest
from storage.cache import EmbeddingCache
from storage.errors import NamespaceMismatchError
from storage.fingerprint import fingerprint, text_key
from storage.keyindex import key_digests

IDENTITY = {"model": "tiny-clip", "tower": "text", "embed_code_version": "1"}
DIM = 16


def keys_for(n: int, start: int = 0) -> list[str]:
    return [text_key(f"caption {i}") for i in range(start, start + n)]


@pytest.fixture
def ns(root):
    return EmbeddingCache(root).namespace(IDENTITY, dim=DIM)


def test_put_then_get_in_the_order_asked(root, ns):
    keys, v = keys_for(50), vectors(50, DIM)
    assert ns.missing(keys) == keys
    assert ns.put(keys, v) == 50
    order = np.random.default_rng(1).permutation(50)
    got = ns.get([keys[i] for i in order])
    assert got.dtype == np.float32 and got.shape == (50, DIM)
    np.testing.assert_array_equal(got, as_stored(v[order]))
    # repeated keys in a request are fine
    np.testing.assert_array_equal(ns.get([keys[3], keys[3], keys[0]]), as_stored(v[[3, 3, 0]]))
    # and a new cache object (a new process would do the same) sees the same
    again = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    np.testing.assert_array_equal(again.get(keys), as_stored(v))


@pytest.mark.parametrize("layout", ["current", "format 1"])
def test_get_across_many_segments_and_shards(ns, monkeypatch, layout):
    import storage.segments as seg
    import storage.segments_v1 as seg_v1

    monkeypatch.setattr(seg, "READ_BLOCK_ROWS", 7)  # a get reads and checks 7 rows at a time
    monkeypatch.setattr(seg, "REMOTE_GAP_ROWS", 2)  # object stores: a range per close run
    monkeypatch.setattr(seg_v1, "CHUNK_TARGET_BYTES", 64)  # 2 rows per chunk at 16-d float16
    monkeypatch.setattr(seg_v1, "SHARD_CHUNKS", 10)  # 20-row shards
    keys, v = keys_for(300), vectors(300, DIM)
    for start in range(0, 300, 100):  # three segments of 100 rows (format 1: 5 shards each)
        if layout == "current":
            ns.put(keys[start : start + 100], v[start : start + 100])
        else:
            put_v1(ns, keys[start : start + 100], v[start : start + 100])
    rng = np.random.default_rng(2)
    picks = [
        rng.permutation(300),  # dense, shuffled
        np.arange(300)[::-1],  # dense, reversed
        np.arange(40, 260),  # contiguous run across segments
        np.array([19, 0, 19, 140, 121, 299]),  # sparse rows within shards, with a repeat
    ]
    for pick in picks:
        np.testing.assert_array_equal(ns.get([keys[i] for i in pick]), as_stored(v[pick]))


def test_float32_namespace_round_trips_exactly(root):
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM, dtype="float32")
    keys, v = keys_for(10), vectors(10, DIM)
    ns.put(keys, v)
    np.testing.assert_array_equal(ns.get(keys), v)


def test_missing_is_first_seen_order_without_duplicates(ns):
    keys, v = keys_for(6), vectors(6, DIM)
    ns.put(keys[2:4], v[2:4])
    asked = [keys[5], keys[0], keys[2], keys[5], keys[1], keys[0]]
    assert ns.missing(asked) == [keys[5], keys[0], keys[1]]
    assert ns.contains(keys[2]) and keys[3] in ns and keys[0] not in ns


def test_put_skips_present_keys_and_dedupes_within_a_call(ns):
    keys, v = keys_for(5), vectors(5, DIM)
    assert ns.put(keys[:3], v[:3]) == 3
    other = vectors(5, DIM, seed=9)
    # keys[0] is present (kept as is); keys[4] appears twice (first copy wins)
    assert ns.put([keys[0], keys[4], keys[3], keys[4]], other[[0, 1, 2, 3]]) == 2
    assert ns.count() == 5
    np.testing.assert_array_equal(ns.get([keys[0], keys[4], keys[3]]), as_stored(np.stack([v[0], other[1], other[2]])))
    assert ns.put(keys[:3], v[:3]) == 0


def test_empty_inputs(ns):
    empty = ns.get([])
    assert empty.shape == (0, DIM) and empty.dtype == np.float32
    assert ns.missing([]) == []
    assert ns.put([], np.empty((0, DIM))) == 0
    assert ns.put([], []) == 0
    assert ns.count() == 0 and ns.segments() == 0


def test_missing_key_error_says_how_many_and_names_the_first(ns):
    keys, v = keys_for(10), vectors(10, DIM)
    ns.put(keys[:4], v[:4])
    with pytest.raises(KeyError) as err:
        ns.get(keys)
    message = str(err.value)
    assert "6 of 10 keys" in message and keys[4] in message and keys[9] not in message  # first few only


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, DIM + 1), r"expected vectors of shape \[3, 16\], got \[3, 17\]"),
        ((3,), r"got \[3\]"),
        ((2, DIM), "3 keys but 2 vectors"),
    ],
)
def test_wrong_shape_is_refused_with_both_shapes(ns, shape, match):
    with pytest.raises(ValueError, match=match):
        ns.put(keys_for(3), np.zeros(shape, np.float32))
    assert ns.count() == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_row_is_refused_naming_row_and_key(ns, bad):
    keys, v = keys_for(4), vectors(4, DIM)
    v[2, 5] = bad
    with pytest.raises(ValueError, match=rf"row 2 \(key '{keys[2]}'\) has NaN or Inf"):
        ns.put(keys, v)
    assert ns.count() == 0 and ns.segments() == 0  # nothing written, not even the good rows


def test_float16_overflow_is_refused(ns):
    v = vectors(2, DIM)
    v[1, 0] = 1e6
    with pytest.raises(ValueError, match="row 1 .* too large for float16"):
        ns.put(keys_for(2), v)


def test_bad_keys_and_dtypes(ns):
    with pytest.raises(TypeError, match="single str"):
        ns.missing("abc")
    with pytest.raises(TypeError, match=r"keys\[1\]"):
        ns.put(["a", 3], np.zeros((2, DIM)))
    with pytest.raises(TypeError, match=r"keys\[2\] is ''"):  # found by its digest, not a second pass
        ns.get(["a", "b", ""])
    with pytest.raises(TypeError, match=r"keys\[0\] is b'a'"):
        ns.missing([b"a"])
    with pytest.raises(TypeError, match=r"keys\[1\] is None"):
        list(ns.iter_get(["a", None]))
    with pytest.raises(TypeError, match="floating point"):
        ns.put(["a"], np.zeros((1, DIM), np.int32))


def test_namespace_identity_dim_and_dtype(root):
    cache = EmbeddingCache(root)
    ns = cache.namespace(IDENTITY, dim=DIM)
    assert ns.id == fingerprint(IDENTITY)
    assert cache.namespace(dict(reversed(list(IDENTITY.items()))), dim=DIM).id == ns.id
    other = cache.namespace({**IDENTITY, "tower": "modal"}, dim=DIM)
    assert other.id != ns.id
    with pytest.raises(NamespaceMismatchError, match="holds dim 16 float16; asked for dim 32 float16"):
        EmbeddingCache(root).namespace(IDENTITY, dim=32)
    with pytest.raises(NamespaceMismatchError, match="asked for dim 16 float32"):
        EmbeddingCache(root).namespace(IDENTITY, dim=DIM, dtype="float32")
    with pytest.raises(ValueError, match="dtype"):
        cache.namespace(IDENTITY, dim=DIM, dtype="int8")
    with pytest.raises(TypeError, match=r"value\.bad"):
        cache.namespace({"bad": {1, 2}}, dim=DIM)


def test_namespaces_listing_and_open_by_id(root):
    cache = EmbeddingCache(root)
    a = cache.namespace(IDENTITY, dim=DIM)
    b = cache.namespace({**IDENTITY, "tower": "modal"}, dim=8, dtype="float32")
    a.put(keys_for(3), vectors(3, DIM))
    infos = {i.id: i for i in EmbeddingCache(root).namespaces()}
    assert set(infos) == {a.id, b.id}
    info_a = infos[a.id]
    assert (info_a.identity, info_a.dim, info_a.dtype, info_a.count) == (IDENTITY, DIM, "float16", 3)
    assert (infos[b.id].dim, infos[b.id].dtype, infos[b.id].count) == (8, "float32", 0)
    assert EmbeddingCache(root).open_namespace(a.id).count() == 3
    with pytest.raises(KeyError, match="no cache namespace"):
        cache.open_namespace("0" * 64)


def test_gc_removes_namespaces_not_kept(root):
    cache = EmbeddingCache(root)
    keep = cache.namespace(IDENTITY, dim=DIM)
    drop = cache.namespace({**IDENTITY, "model": "old"}, dim=DIM)
    keep.put(keys_for(2), vectors(2, DIM))
    drop.put(keys_for(2), vectors(2, DIM))
    assert cache.gc([keep.id], dry_run=True) == [drop.id]
    assert {i.id for i in cache.namespaces()} == {keep.id, drop.id}
    assert cache.gc([keep.id]) == [drop.id]
    assert [i.id for i in EmbeddingCache(root).namespaces()] == [keep.id]
    assert keep.count() == 2
    assert cache.gc([keep.id]) == []


def test_writes_by_another_cache_object_are_seen(root):
    a = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    b = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys, v = keys_for(8), vectors(8, DIM)
    assert b.count() == 0
    a.put(keys[:5], v[:5])
    assert b.missing(keys) == keys[5:]
    b.put(keys, v)
    assert a.count() == 8
    np.testing.assert_array_equal(a.get(keys), as_stored(v))


def test_duplicates_across_segments_resolve_to_first_segment_and_compact_keeps_one(root):
    a = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    b = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys = keys_for(6)
    first, second = vectors(6, DIM, seed=1), vectors(6, DIM, seed=2)
    # Both saw the keys missing before either wrote them (a race), so both store them:
    # b's segment is published directly, as put would after its missing() check.
    assert a.missing(keys) == b.missing(keys) == keys
    a.put(keys[:4], first[:4])
    b._publish(keys, key_digests(keys), second.astype(np.float16))
    fresh = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    assert fresh.count() == 6 and fresh.segments() == 2
    expected = np.concatenate([first[:4], second[4:]])  # the first segment (a's) wins
    np.testing.assert_array_equal(fresh.get(keys), as_stored(expected))
    report = fresh.compact()
    assert (report.segments_before, report.rows_before, report.segments_after, report.rows_after) == (2, 10, 1, 6)
    np.testing.assert_array_equal(EmbeddingCache(root).namespace(IDENTITY, dim=DIM).get(keys), as_stored(expected))


def test_compact_merges_segments_and_reader_with_stale_index_still_reads(root):
    writer = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys, v = keys_for(30), vectors(30, DIM)
    for start in range(0, 30, 10):
        writer.put(keys[start : start + 10], v[start : start + 10])
    reader = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    np.testing.assert_array_equal(reader.get(keys), as_stored(v))
    old = segment_ids(root, writer.id)
    report = EmbeddingCache(root).namespace(IDENTITY, dim=DIM).compact()
    assert report.segments_before == 3 and report.segments_after == 1
    assert not set(old) & set(segment_ids(root, writer.id))
    # reader's index points at deleted segments; get re-lists and reads the new one
    np.testing.assert_array_equal(reader.get(keys[::-1]), as_stored(v[::-1]))
    assert reader.compact().segments_after == 1  # nothing to do


def test_compact_removes_old_orphans_only(root):
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    ns.put(keys_for(3), vectors(3, DIM))
    fs, seg_root = fs_and_path(root, "namespaces", ns.id, "segments")
    old = "20000101T000000000000Z-0123456789abcdef"  # a crash leftover from long ago
    young = manifest.new_segment_id()  # may be another process writing right now
    for name in (old, young):
        fs.makedirs(f"{seg_root}/{name}", exist_ok=True)
        fs.pipe_file(f"{seg_root}/{name}/keys.parquet", b"partial")
    manifest_dir = f"{seg_root.rsplit('/', 1)[0]}/manifest"
    for name in (old, young):  # temporary manifest files of writers killed mid-publish
        fs.pipe_file(f"{manifest_dir}/.tmp-{name}.json.5e1f", b'{"segment_')
    report = ns.compact()
    assert report.orphans_removed == [old]
    assert ns.verify().unpublished == [young]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(manifest_dir, detail=False) if "/.tmp-" in p) == [
        f".tmp-{young}.json.5e1f"
    ]
    assert ns.count() == 3


def test_large_put_is_split_into_segments(ns, monkeypatch):
    monkeypatch.setattr(cache_mod, "SEGMENT_MAX_ROWS", 7)
    keys, v = keys_for(20), vectors(20, DIM)
    assert ns.put(keys, v) == 20
    assert ns.segments() == 3
    np.testing.assert_array_equal(ns.get(keys), as_stored(v))


def test_storage_never_imports_torch_or_upper_layers():
    code = (
        "import sys, storage.cache, storage.tables, storage.catalog, storage.fingerprint;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'textme', 'prefect', 'tasks', 'flows')];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_compact_into_several_segments_keeps_every_vector(root, monkeypatch):
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys, v = keys_for(23), vectors(23, DIM)
    for start in range(0, 23, 4):
        ns.put(keys[start : start + 4], v[start : start + 4])
    monkeypatch.setattr(cache_mod, "SEGMENT_MAX_ROWS", 7)
    report = ns.compact()
    assert (report.segments_before, report.segments_after, report.rows_after) == (6, 4, 23)
    fresh = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    assert fresh.segments() == 4
    np.testing.assert_array_equal(fresh.get(keys[::-1]), as_stored(v[::-1]))
