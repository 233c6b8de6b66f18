"""fill_cache: chunked commits, progress lines, and only missing keys encoded."""

from __future__ import annotations

import logging

from demo.encoders import ToyPivot
from storage.cache import EmbeddingCache
from storage.fingerprint import text_key
from tasks.embed import fill_cache


def test_chunks_commit_log_progress_and_skip_cached(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEXTME_EMBED_CHUNK", "4")
    enc = ToyPivot(dim=8)
    ns = EmbeddingCache(str(tmp_path / "cache")).namespace(enc.identity("text"), dim=enc.dim)
    texts = [f"a scene with {i} red cubes" for i in range(10)]
    keys = [text_key(t) for t in texts]

    with caplog.at_level(logging.INFO, logger="textme.tasks"):
        assert fill_cache(ns, enc, "text", keys, texts, "toy/text") == (10, 10)
    assert ns.segments() == 3  # 4 + 4 + 2: one committed segment per chunk
    progress = [r.getMessage() for r in caplog.records if "committed" in r.getMessage()]
    assert [m.split(" committed")[0] for m in progress] == ["embed toy/text: 4/10", "embed toy/text: 8/10",
                                                           "embed toy/text: 10/10"]
    assert all("items/s" in m for m in progress)

    # a repeated key and two new texts: only the two are encoded
    more = texts[:3] + ["a scene with a blue sphere", "a scene with a green cone", texts[0]]
    assert fill_cache(ns, enc, "text", [text_key(t) for t in more], more) == (5, 2)
    got = ns.get([text_key(t) for t in more])
    expected = enc.encode("text", more)
    assert abs(got - expected).max() < 2e-3  # float16 storage


def test_parallel_fills_of_one_namespace_compute_each_vector_once(tmp_path):
    # Two evaluations in parallel threads asking for overlapping texts: every vector is
    # encoded and counted once, so embed_log's n_computed adds up across stages.
    import threading
    import time

    class SlowPivot(ToyPivot):
        encoded: list[str] = []

        def encode(self, tower, inputs, **kw):
            self.encoded.extend(inputs)
            time.sleep(0.2)  # both threads are inside a fill at the same time
            return super().encode(tower, inputs, **kw)

    enc = SlowPivot(dim=8)
    cache = EmbeddingCache(str(tmp_path / "cache"))
    ns_id = cache.namespace(enc.identity("text"), dim=enc.dim).id
    a = [f"scene {i}" for i in range(0, 12)]
    b = [f"scene {i}" for i in range(6, 18)]
    computed = []

    def fill(texts):
        ns = EmbeddingCache(str(tmp_path / "cache")).open_namespace(ns_id)  # one cache object per thread
        computed.append(fill_cache(ns, enc, "text", [text_key(t) for t in texts], texts)[1])

    threads = [threading.Thread(target=fill, args=(texts,)) for texts in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(computed) == 18 and sorted(computed) == [6, 12]
    assert sorted(SlowPivot.encoded) == sorted(set(a) | set(b))


class _FailingPivot(ToyPivot):
    """Fails on its `fail_at`-th encode call (1-based), after the chunks before it."""

    def __init__(self, fail_at: int, **kw):
        super().__init__(**kw)
        self.fail_at, self.calls = fail_at, 0

    def encode(self, tower, inputs, **kw):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("device lost")
        return super().encode(tower, inputs, **kw)


def _chunk_log(tmp_path, assets, ns, stage="embed_texts-test"):
    from tasks.config import load_config
    from tasks.embed import ChunkLog
    from tests.pipeline.helpers import write_mini_config

    cfg = load_config(write_mini_config(tmp_path / "cfg", assets))
    return cfg, ChunkLog(cfg, stage, "pivot", "text", ns.id, run_id="run-1")


def _logged(cfg):
    from storage.tables import TableStore
    from tasks.workspace import Workspace

    return TableStore(Workspace.of(cfg).tables).read("embed_log").to_pylist()


def test_a_stage_failing_midway_has_logged_every_committed_chunk(tmp_path, monkeypatch, assets):
    import pytest

    monkeypatch.setenv("TEXTME_EMBED_CHUNK", "4")
    enc = _FailingPivot(fail_at=3, dim=8)
    ns = EmbeddingCache(str(tmp_path / "cache")).namespace(enc.identity("text"), dim=enc.dim)
    cfg, log = _chunk_log(tmp_path, assets, ns)
    texts = [f"a scene with {i} red cubes" for i in range(10)]
    with pytest.raises(RuntimeError, match="device lost"):
        fill_cache(ns, enc, "text", [text_key(t) for t in texts], texts, log=log)
    # the chunk encoded while the failing one was being encoded still committed
    assert ns.count() == 8
    rows = _logged(cfg)
    assert sum(r["n_computed"] for r in rows) == ns.count() == 8
    # a row for what was cached (none: no device), then one per committed chunk
    assert sorted((r["n_requested"], r["device"]) for r in rows) == [(0, None), (4, "cpu"), (4, "cpu")]

    # the retry (same run, same stage) computes the rest; the rows add up to the whole
    enc.fail_at = 0
    assert fill_cache(ns, enc, "text", [text_key(t) for t in texts], texts, log=log) == (10, 2)
    rows = _logged(cfg)
    assert sum(r["n_computed"] for r in rows) == 10
    assert sum(r["n_requested"] for r in rows) == 10  # the retry's cached row is the first attempt's


def test_a_failed_commit_is_raised_and_what_committed_before_stays(tmp_path, monkeypatch, assets):
    import pytest

    monkeypatch.setenv("TEXTME_EMBED_CHUNK", "4")
    enc = ToyPivot(dim=8)
    ns = EmbeddingCache(str(tmp_path / "cache")).namespace(enc.identity("text"), dim=enc.dim)
    cfg, log = _chunk_log(tmp_path, assets, ns)
    real_put, puts = ns.put, []

    def put(keys, vectors):
        puts.append(len(keys))
        if len(puts) == 2:
            raise OSError("disk full")
        return real_put(keys, vectors)

    monkeypatch.setattr(ns, "put", put)
    texts = [f"a scene with {i} red cubes" for i in range(12)]
    with pytest.raises(OSError, match="disk full"):
        fill_cache(ns, enc, "text", [text_key(t) for t in texts], texts, log=log)
    assert len(puts) == 2  # the failed commit stopped the fill: no third chunk was committed
    assert ns.count() == 4 and sum(r["n_computed"] for r in _logged(cfg)) == 4
