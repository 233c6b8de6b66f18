"""Several processes on one cache: SIGKILLed writers and concurrent writers.

Runs on a local folder and a file:// URL (memory:// lives inside one process).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cache_writer as cw
import numpy as np
import pytest
from storage_helpers import as_stored, fs_and_path, segment_ids, segment_keys

from storage.cache import EmbeddingCache

WRITER = Path(cw.__file__)


def start_writer(root: str, start: int, stop: int, batch: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), root, str(start), str(stop), str(batch), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def all_keys(n: int) -> list[str]:
    return [cw.key(i) for i in range(n)]


def check_visible_state(root: str, n: int, batch: int) -> int:
    """Only whole segments (= whole batches) are visible, each vector right; returns keys visible."""
    ns = EmbeddingCache(root).namespace(cw.IDENTITY, dim=cw.DIM)
    report = ns.verify()
    assert report.ok, str(report)
    keys = all_keys(n)
    missing = set(ns.missing(keys))
    for lo in range(0, n, batch):
        visible = sum(k not in missing for k in keys[lo : lo + batch])
        assert visible in (0, min(batch, n - lo)), f"batch at {lo}: {visible} of its keys visible (a partial segment)"
    present = [i for i, k in enumerate(keys) if k not in missing]
    got = ns.get([keys[i] for i in present])
    np.testing.assert_array_equal(got, as_stored(cw.expected_vectors()[present]))
    assert ns.count() == len(present)
    return len(present)


def crash_leftovers(root: str) -> int:
    """Unpublished segment folders + temporary manifest files: proof a kill hit a put."""
    ns = EmbeddingCache(root).namespace(cw.IDENTITY, dim=cw.DIM)
    fs, manifest_dir = fs_and_path(root, "namespaces", ns.id, "manifest")
    temps = [p for p in fs.ls(manifest_dir, detail=False) if "/.tmp-" in p] if fs.exists(manifest_dir) else []
    return len(ns.verify().unpublished) + len(temps)


@pytest.mark.slow
def test_sigkilled_writer_leaves_only_whole_segments_and_resumes_exactly(disk_root, tmp_path):
    n, batch = 2400, 40
    rng = random.Random(20240601)
    kills, progress = 0, []
    # Each writer is killed after at most a couple of puts (counted, not timed: a fast
    # machine otherwise finishes all 60 batches before the kill lands), so the loop ends
    # on the kill count; the deadline only bounds a broken run.
    deadline = time.monotonic() + 240
    while kills < 15 and time.monotonic() < deadline:
        proc = start_writer(disk_root, 0, n, batch)
        if kills % 2:
            time.sleep(rng.uniform(0.0, 0.02))  # any moment, maybe before the first put
        else:
            for _ in range(rng.randint(1, 2)):
                if proc.stdout.readline().strip() != "put":
                    break
            time.sleep(rng.uniform(0.0, 0.01))  # most likely inside a put
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == 0:
            break  # finished before the kill landed
        kills += 1
        progress.append(check_visible_state(disk_root, n, batch))
    assert kills >= 8, f"only {kills} kills in the time allowed"
    assert progress == sorted(progress), "a kill made published vectors disappear"
    assert progress[-1] > 0 and progress[0] < n
    assert crash_leftovers(disk_root) > 0, "no kill landed inside a put; the test proved little"

    finish = start_writer(disk_root, 0, n, batch)
    out, _ = finish.communicate(timeout=120)
    assert finish.returncode == 0 and out.strip().endswith("done")

    reference = str(tmp_path / "uninterrupted")
    cw.write(reference, 0, n, batch, announce=lambda _: None)
    keys = all_keys(n)
    resumed = EmbeddingCache(disk_root).namespace(cw.IDENTITY, dim=cw.DIM)
    expected = EmbeddingCache(reference).namespace(cw.IDENTITY, dim=cw.DIM).get(keys)
    np.testing.assert_array_equal(resumed.get(keys), expected)
    np.testing.assert_array_equal(expected, as_stored(cw.expected_vectors()[:n]))

    # compact removes the crash leftovers; the data is unchanged.
    resumed.compact(orphan_grace_s=0)
    assert crash_leftovers(disk_root) == 0
    np.testing.assert_array_equal(EmbeddingCache(disk_root).namespace(cw.IDENTITY, dim=cw.DIM).get(keys), expected)


def test_two_writers_with_overlapping_keys_leave_a_consistent_cache(disk_root, tmp_path):
    go = tmp_path / "go"
    a = start_writer(disk_root, 0, 900, 25, "--wait-for", str(go))
    b = start_writer(disk_root, 300, 1200, 40, "--wait-for", str(go))
    go.touch()
    for proc in (a, b):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip().endswith("done")

    keys = all_keys(1200)
    ns = EmbeddingCache(disk_root).namespace(cw.IDENTITY, dim=cw.DIM)
    assert ns.verify().ok
    assert ns.count() == 1200 and ns.missing(keys) == []
    np.testing.assert_array_equal(ns.get(keys), as_stored(cw.expected_vectors()[:1200]))

    report = ns.compact()
    assert report.rows_after == 1200 and report.segments_after == 1
    (only,) = segment_ids(disk_root, ns.id)
    stored = segment_keys(disk_root, ns.id, only)
    assert sorted(stored) == keys  # every key exactly once
    np.testing.assert_array_equal(
        EmbeddingCache(disk_root).namespace(cw.IDENTITY, dim=cw.DIM).get(keys), as_stored(cw.expected_vectors()[:1200])
    )


def test_two_writers_racing_on_the_same_keys(disk_root, tmp_path):
    # Same keys, same moment, different batch sizes: both see keys missing and both
    # store them; reads stay consistent and count() counts each key once.
    go = tmp_path / "go"
    procs = [start_writer(disk_root, 0, 600, size, "--wait-for", str(go)) for size in (20, 30)]
    go.touch()
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    keys = all_keys(600)
    ns = EmbeddingCache(disk_root).namespace(cw.IDENTITY, dim=cw.DIM)
    total_rows = sum(len(segment_keys(disk_root, ns.id, s)) for s in segment_ids(disk_root, ns.id))
    assert total_rows >= 600
    assert ns.count() == 600
    np.testing.assert_array_equal(ns.get(keys), as_stored(cw.expected_vectors()[:600]))
    assert ns.compact().rows_after == 600
    assert fs_and_path(disk_root)[0].exists(fs_and_path(disk_root, "namespaces", ns.id)[1])
