"""Reads that cost what they return, float16 reads, streaming, mixed segment formats,
and the key index: persisted, checked, shared per process, rebuilt when damaged."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from storage_helpers import as_stored, flip_byte, fs_and_path, put_v1, segment_ids, vectors

import storage.cache as cache_mod
from storage.cache import EmbeddingCache, forget_open_namespaces
from storage.fingerprint import text_key
from storage.keyindex import KeyIndex, key_digests
from storage.segments import Segment

IDENTITY = {"model": "tiny-clip", "tower": "text", "embed_code_version": "1"}
DIM = 16


def keys_for(n: int, start: int = 0) -> list[str]:
    return [text_key(f"caption {i}") for i in range(start, start + n)]


def fresh(root):
    forget_open_namespaces()
    return EmbeddingCache(root).namespace(IDENTITY, dim=DIM)


@pytest.fixture
def filled(root, monkeypatch):
    """400 keys in 4 segments, with the index persisted (small save threshold)."""
    monkeypatch.setattr(cache_mod, "INDEX_SAVE_ROWS", 50)
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys, v = keys_for(400), vectors(400, DIM)
    for start in range(0, 400, 100):
        ns.put(keys[start : start + 100], v[start : start + 100])
    return ns, keys, v


def test_random_order_get_is_the_put_data_in_float16_or_float32(root, filled):
    _, keys, v = filled
    ns = fresh(root)
    order = np.random.default_rng(5).permutation(400)
    asked = [keys[i] for i in order]
    got16 = ns.get(asked, dtype=None)
    assert got16.dtype == np.float16
    np.testing.assert_array_equal(got16, v[order].astype(np.float16))
    got32 = ns.get(asked)
    assert got32.dtype == np.float32
    np.testing.assert_array_equal(got32, as_stored(v[order]))


def test_a_get_reads_only_the_rows_asked(root, filled):
    _, keys, v = filled
    ns = fresh(root)
    before = ns.bytes_read
    ns.get([keys[7], keys[150], keys[399]])
    assert ns.bytes_read - before == 3 * (DIM * 2 + 4)  # three rows and their checksums


def test_iter_get_streams_blocks_in_the_order_asked(root, filled):
    _, keys, v = filled
    ns = fresh(root)
    blocks = list(ns.iter_get(keys[::-1], batch_rows=64, dtype=None))
    assert [len(b) for b in blocks] == [64] * 6 + [16]
    np.testing.assert_array_equal(np.concatenate(blocks), v[::-1].astype(np.float16))
    with pytest.raises(ValueError, match="batch_rows"):
        next(ns.iter_get(keys, batch_rows=0))


def test_old_and_new_segments_read_together_and_compact_migrates(root):
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    keys, v = keys_for(60), vectors(60, DIM)
    put_v1(ns, keys[:30], v[:30])  # a cache written before segment format 2
    assert ns.missing(keys) == keys[30:]
    assert ns.put(keys, v) == 30  # the old keys are known, only the new ones are written
    order = np.random.default_rng(2).permutation(60)
    np.testing.assert_array_equal(fresh(root).get([keys[i] for i in order]), as_stored(v[order]))
    report = fresh(root).compact()
    assert (report.segments_before, report.segments_after, report.rows_after) == (2, 1, 60)
    ns = fresh(root)
    ns.count()
    assert [type(s) for s in ns._segments.values()] == [Segment]  # format 2 now
    np.testing.assert_array_equal(ns.get(keys), as_stored(v))
    assert ns.verify().ok


def test_the_persisted_index_is_used_instead_of_the_segments(root, filled, monkeypatch):
    _, keys, v = filled
    fs, path = fs_and_path(root, "namespaces", filled[0].id, "index.bin")
    assert fs.exists(path)
    loaded = []
    monkeypatch.setattr(Segment, "digests", lambda self: loaded.append(self.segment_id) or 1 / 0)
    ns = fresh(root)
    assert ns.count() == 400 and ns.missing(keys + ["new"]) == ["new"]
    np.testing.assert_array_equal(ns.get(keys[:5]), as_stored(v[:5]))
    assert loaded == []  # no segment's digests were read


@pytest.mark.parametrize("where", ["magic", "header", "digests", "positions"])
def test_a_damaged_index_file_is_rebuilt_from_the_segments(root, filled, where, caplog):
    ns, keys, v = filled
    size = fs_and_path(root, "namespaces", ns.id, "index.bin")[0].size(
        fs_and_path(root, "namespaces", ns.id, "index.bin")[1])
    offset = {"magic": 2, "header": 27, "digests": size - 400 * 24 + 5, "positions": size - 3}[where]
    flip_byte(root, f"namespaces/{ns.id}/index.bin", offset)
    reader = fresh(root)
    assert reader.missing(keys) == []
    np.testing.assert_array_equal(reader.get(keys[::-1]), as_stored(v[::-1]))
    assert "rebuilding the index" in caplog.text
    fs, path = fs_and_path(root, "namespaces", ns.id, "index.bin")
    KeyIndex.load(fs.cat_file(path))  # rewritten whole: it loads again


def test_an_index_file_that_checks_out_but_points_at_wrong_rows_never_serves_them(root, filled, caplog):
    ns, keys, v = filled
    fs, path = fs_and_path(root, "namespaces", ns.id, "index.bin")
    index, entries = KeyIndex.load(fs.cat_file(path))
    wrong = KeyIndex(index.digests.copy(), index.pos[::-1].copy())  # every key -> another row
    fs.pipe_file(path, wrong.dump(entries))
    reader = fresh(root)
    np.testing.assert_array_equal(reader.get(keys), as_stored(v))
    assert "index file pointed at a wrong row" in caplog.text


def test_an_index_file_of_segments_since_compacted_is_not_used(root, filled):
    ns, keys, v = filled
    stale = fs_and_path(root, "namespaces", ns.id, "index.bin")
    old_index = stale[0].cat_file(stale[1])
    fresh(root).compact()
    stale[0].pipe_file(stale[1], old_index)  # as a slow writer would leave it
    reader = fresh(root)
    assert reader.segments() == 1 and reader.count() == 400
    np.testing.assert_array_equal(reader.get(keys[::-3]), as_stored(v[::-3]))


def test_one_open_namespace_per_process_sees_every_writer(root):
    a = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    b = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    assert a is b
    keys, v = keys_for(200), vectors(200, DIM)
    errors = []

    def writer(part):
        try:
            own = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
            for start in range(part * 50, part * 50 + 50, 10):
                own.put(keys[start : start + 10], v[start : start + 10])
                own.get(keys[part * 50 : start + 10])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert a.count() == 200 and len(segment_ids(root, a.id)) == 20
    np.testing.assert_array_equal(fresh(root).get(keys), as_stored(v))


def test_a_refresh_between_publish_and_append_loads_the_segment_once(root, monkeypatch):
    """Another thread's refresh may load a put's segment before the put appends it."""
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    ns.put(keys_for(5), vectors(5, DIM))
    publish = ns._publish

    def publish_then_refresh(*args):
        entry = publish(*args)
        ns.refresh()  # what a concurrent get does
        return entry

    monkeypatch.setattr(ns, "_publish", publish_then_refresh)
    ns.put(keys_for(5, 5), vectors(5, DIM, seed=1))
    assert ns._order == sorted(set(ns._order)) and ns.segments() == 2 and ns._total == 10
    np.testing.assert_array_equal(ns.get(keys_for(5, 5)), as_stored(vectors(5, DIM, seed=1)))


def test_a_listing_older_than_a_put_does_not_drop_its_segment(root, monkeypatch):
    """A refresh listed the manifest, then a put appended its segment, then the refresh
    took the lock: the old listing lacks the new segment, which is not gone."""
    ns = EmbeddingCache(root).namespace(IDENTITY, dim=DIM)
    ns.put(keys_for(5), vectors(5, DIM))
    stale = cache_mod.manifest.list_entries(ns.loc, ns.dir)
    ns.put(keys_for(5, 5), vectors(5, DIM, seed=1))
    real = cache_mod.manifest.list_entries
    calls = iter([stale])
    monkeypatch.setattr(cache_mod.manifest, "list_entries", lambda *a: next(calls, None) or real(*a))
    ns.refresh()
    # looked at before any other refresh could put it right (a get's lookup comes next)
    assert len(ns._order) == 2 and len(ns._index) == 10


def test_key_digests_are_fixed_width_and_distinct_for_structured_keys():
    keys = [f"{i:064x}" for i in range(1000)] + ["a", "b", "é"]
    d = key_digests(keys)
    assert d.dtype == np.dtype("S16") and len(set(d.tolist())) == len(keys)
    index = KeyIndex()
    index.add(d[:500], np.arange(500))
    index.add(d[250:], np.arange(1000, 1753))  # the first copy of a key wins
    assert len(index) == len(keys)
    np.testing.assert_array_equal(index.lookup(d[[0, 499, 500, 1002]]), [0, 499, 1250, 1752])
    assert index.lookup(key_digests(["absent"]))[0] == -1
    assert index.nbytes == 32 * len(keys)  # digest, position, and the high words lookups search


def test_digests_sharing_their_first_8_bytes_are_told_apart():
    """Lookups search the first 8 bytes; where several digests share them, all 16 decide."""
    prefix = b"\x07" * 8
    shared = np.array([prefix + bytes([i]) * 8 for i in (1, 3, 5)], dtype="S16")
    others = key_digests([f"k{i}" for i in range(50)])
    for keep in (True, False):
        index = KeyIndex()
        index.add(np.concatenate([others, shared]), np.arange(53))
        if keep:  # high words built, then kept up to date by add
            index.lookup(others[:1])
        index.add(np.array([prefix + b"\x04" * 8], dtype="S16"), np.array([99]))
        asked = np.array([prefix + bytes([i]) * 8 for i in (5, 3, 1, 4, 2, 6)], dtype="S16")
        np.testing.assert_array_equal(index.lookup(asked), [52, 51, 50, 99, -1, -1])
        np.testing.assert_array_equal(index.lookup(others[[3, 0]]), [3, 0])
