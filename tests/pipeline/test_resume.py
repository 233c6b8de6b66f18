"""A run killed mid-way resumes to the same results, and its embed_log rows already
count what it committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.config import load_config
from tests.pipeline.helpers import REPO, rows, run_pipeline, write_mini_config

# Everything a results row says about what produced the number, except when and by
# which run (and the config fingerprint, which includes the workdir's path).
COMPARED = ("value", "n_queries", "stand_in", "captions_fp", "source_identity_fp", "target_identity_fp",
            "offset_fp", "projection_fp", "code_version")


def results(config: Path, run_id: str) -> dict:
    got = rows(load_config(config), "results", run_id)
    table = {(r["eval_name"], r["variant"], r["metric"], r["source_encoder"], r["target_encoder"]):
             tuple(r[c] for c in COMPARED) for r in got}
    assert len(table) == len(got) > 0
    return table


def computed(config: Path, run_id: str) -> int:
    return sum(r["n_computed"] for r in rows(load_config(config), "embed_log", run_id))


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(prefect_api, assets, tmp_path, subprocess_env):
    import tests.pipeline.slow_toy  # noqa: F401  registers "slow-toy" here too

    killed = write_mini_config(tmp_path / "killed", assets, encoder_kind="slow-toy")
    baseline = write_mini_config(tmp_path / "baseline", assets, encoder_kind="slow-toy")
    env = {**subprocess_env, "TEXTME_TEST_ENCODE_DELAY": "0.3", "TEXTME_EMBED_CHUNK": "16"}
    code = "import sys, tests.pipeline.slow_toy; from flows.pipeline import pipeline; pipeline(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = Path(load_config(killed).cache)
    try:
        deadline = time.monotonic() + 240
        while len(list(cache.glob("namespaces/*/manifest/*.json"))) < 4:  # a few chunks committed
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk was committed in time"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    from storage.cache import EmbeddingCache
    from storage.tables import TableStore

    cfg = load_config(killed)
    stored = sum(info.count for info in EmbeddingCache(cfg.cache).namespaces())
    assert stored > 0  # it got somewhere...
    tables = TableStore(Path(cfg.workdir) / "tables")
    assert tables.read("results").num_rows == 0  # ...but not to the end
    # embed_log rows are written per committed chunk: the killed run's count what it stored
    # (short of at most the one chunk per namespace the kill may have caught between its
    # commit and its row)
    logged = sum(r["n_computed"] for r in tables.read("embed_log").to_pylist())
    n_namespaces = len(EmbeddingCache(cfg.cache).namespaces())
    assert 0 <= stored - logged <= 16 * n_namespaces and logged > 0

    resumed_id = run_pipeline(killed)
    baseline_id = run_pipeline(baseline)
    assert results(killed, resumed_id) == results(baseline, baseline_id)
    # the re-run computed only what the killed run had not committed
    assert computed(killed, resumed_id) == computed(baseline, baseline_id) - stored
