"""`textme cache gc` removes what killed writers left; `textme cache verify --quarantine`
moves damaged segments aside. No pipeline run is needed: the cache is filled directly."""

from __future__ import annotations

import os
import time

import numpy as np
from typer.testing import CliRunner

from flows.cli import app
from storage import manifest
from storage.cache import EmbeddingCache, forget_open_namespaces
from tasks import keys as task_keys
from tasks.config import load_config
from tests.pipeline.helpers import write_mini_config

runner = CliRunner()
OLD = "20000101T000000000000Z-0123456789abcdef"  # a segment id from long ago


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def config_namespace(tmp_path, assets):
    """A mini config and, in its cache, the namespace its pivot text tower uses."""
    config = write_mini_config(tmp_path / "mini", assets)
    cfg = load_config(config)
    ns = EmbeddingCache(cfg.cache).namespace(task_keys.encoder_identity(cfg, "pivot", "text"), dim=4)
    ns.put(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    ns.put(["c"], np.eye(4, dtype=np.float32)[2:3])
    return config, ns


def test_gc_removes_partial_segments_and_stale_temporary_files(tmp_path, assets):
    config, ns = config_namespace(tmp_path, assets)
    ns_root = ns.loc.path(ns.dir)
    young = manifest.new_segment_id()  # may be a write in progress
    for seg_id in (OLD, young):
        os.makedirs(f"{ns_root}/segments/{seg_id}")
        with open(f"{ns_root}/segments/{seg_id}/vectors.bin", "wb") as f:
            f.write(b"partial")
    stale_tmp = f"{ns_root}/.tmp-index.bin.5e1f"
    with open(stale_tmp, "wb") as f:
        f.write(b"half an index")
    hour_ago = time.time() - 7200
    os.utime(stale_tmp, (hour_ago, hour_ago))
    with open(f"{ns_root}/manifest/.tmp-{OLD}.json.77aa", "wb") as f:
        f.write(b'{"segm')

    dry = invoke("cache", "gc", config, "--dry-run")
    assert dry.exit_code == 0
    assert f"would remove partial segment {ns.id[:16]}/segments/{OLD}" in dry.stdout
    assert os.path.isdir(f"{ns_root}/segments/{OLD}")

    done = invoke("cache", "gc", config)
    assert done.exit_code == 0, done.stdout
    assert f"removed partial segment {ns.id[:16]}/segments/{OLD}" in done.stdout
    assert f"removed stale temporary file {ns.id[:16]}/.tmp-index.bin.5e1f" in done.stdout
    assert f"removed stale temporary file {ns.id[:16]}/manifest/.tmp-{OLD}.json.77aa" in done.stdout
    assert sorted(os.listdir(f"{ns_root}/segments")) == sorted([*manifest.list_entries(ns.loc, ns.dir), young])
    assert not os.path.exists(stale_tmp)
    forget_open_namespaces()
    again = EmbeddingCache(ns.loc.url).open_namespace(ns.id)
    np.testing.assert_array_equal(again.get(["a", "b", "c"]), np.eye(4, dtype=np.float32)[:3])
    assert invoke("cache", "gc", config).stdout.strip() == "nothing to remove"


def test_verify_quarantine_moves_damaged_segments_aside_and_says_to_rerun(tmp_path, assets):
    config, ns = config_namespace(tmp_path, assets)
    first, second = manifest.list_entries(ns.loc, ns.dir)
    path = ns.loc.path(ns.dir, "segments", second, "vectors.bin")
    data = bytearray(open(path, "rb").read())
    data[3] ^= 0x10
    open(path, "wb").write(bytes(data))

    check = invoke("cache", "verify", config)
    assert check.exit_code == 1 and second in check.stderr

    fixed = invoke("cache", "verify", config, "--quarantine")
    assert fixed.exit_code == 0
    assert f"quarantined 1 damaged segment(s)" in fixed.stdout and f"textme run {config}" in fixed.stdout
    assert manifest.list_entries(ns.loc, ns.dir) == [first]
    assert os.path.exists(ns.loc.path(ns.dir, "quarantine", second, "vectors.bin"))
    assert ns.missing(["a", "b", "c"]) == ["c"]
    assert invoke("cache", "verify", config).exit_code == 0
