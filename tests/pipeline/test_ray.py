"""The Ray runner on CPU with two declared (logical) GPUs: sharded embedding on one actor
per GPU, and the whole pipeline on Ray giving the thread runner's results.

One Ray instance for the module (it takes 10-30 s to start)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.config import load_config
from tests.pipeline.helpers import rows, run_pipeline, write_mini_config

DELAY = 0.3  # seconds per encode call of the slow toy: shards on two actors overlap


@pytest.fixture(scope="module")
def ray_gpus(tmp_path_factory):
    ray = pytest.importorskip("ray")
    trace = tmp_path_factory.mktemp("trace") / "encode.jsonl"
    env = {"TEXTME_TEST_ENCODE_DELAY": str(DELAY), "TEXTME_TEST_ENCODE_TRACE": str(trace),
           "TEXTME_EMBED_CHUNK": "8", "OMP_NUM_THREADS": "1", "TEXTME_PROGRESS": "0",
           # Ray's workers start elsewhere: the repo on their path, so the setup hook imports
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH")]))}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "tests.pipeline.slow_toy.setup"})
    try:
        yield trace
    finally:
        ray.shutdown()


def _config(tmp_path: Path, assets: Path, name: str, **encoder_fields) -> Path:
    config = write_mini_config(tmp_path / name, assets, encoder_kind="slow-toy")
    data = yaml.safe_load(config.read_text())
    data["encoders"] = {"toy_image": {**data["encoders"]["toy_image"], **encoder_fields}}
    data["datasets"] = {"scenes_image": data["datasets"]["scenes_image"]}
    data["evaluation"] = []
    data["embedding"] = {"shard_rows": 16}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def _fill(cfg, texts, shards):
    from storage.fingerprint import text_key
    from tasks.embed import ChunkLog, fill_cache, open_namespace

    ns, enc = open_namespace(cfg, "toy_image", "text")
    keys = [text_key(t) for t in texts]
    log = ChunkLog(cfg, "embed_texts-ray-test", "toy_image", "text", ns.id, run_id="ray-test")
    assert fill_cache(ns, enc, "text", keys, texts, "toy_image/text", log=log, shards=shards) == (64, 64)
    return ns.get(keys)


def test_shards_run_on_one_actor_per_gpu_at_most_two_at_a_time(ray_gpus, tmp_path, assets, monkeypatch):
    import tests.pipeline.slow_toy  # noqa: F401  registers "slow-toy" in this process too
    from tasks.shards import LocalShards, RayShards, shard_runner

    monkeypatch.setenv("TEXTME_EMBED_CHUNK", "8")
    cfg = load_config(_config(tmp_path, assets, "ray", num_gpus=1))
    runner = shard_runner(cfg, "toy_image")
    assert isinstance(runner, RayShards) and runner.pool_size(4) == 2  # 2 GPUs / 1 GPU per actor
    texts = [f"a scene with {i} red cubes" for i in range(64)]  # 4 shards of 16, 2 chunks each
    got = _fill(cfg, texts, runner)

    calls = [json.loads(line) for line in ray_gpus.read_text().splitlines()]
    assert sum(c["n"] for c in calls) == 64
    assert {c["cuda"] for c in calls} == {"0", "1"}  # Ray pinned one GPU per actor
    assert len({c["pid"] for c in calls}) == 2  # one process (one loaded model) per actor, not per shard
    overlapping = [(a, b) for i, a in enumerate(calls) for b in calls[i + 1:]
                   if a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "the shards did not run in parallel"
    assert all(a["cuda"] != b["cuda"] for a, b in overlapping)  # never two at once on one GPU
    for c in calls:  # at most the declared number of GPUs busy at any moment
        assert sum(1 for d in calls if d["start"] <= c["start"] < d["end"]) <= 2

    # embed_log: a row per committed chunk, naming the GPU it ran on
    logged = [r for r in rows(cfg, "embed_log", "ray-test") if r["device"]]
    assert len(logged) == 8 and {r["device"] for r in logged} == {"gpu:0", "gpu:1"}
    per_device = {d: sum(r["n_computed"] for r in logged if r["device"] == d) for d in ("gpu:0", "gpu:1")}
    assert per_device == {f"gpu:{g}": sum(c["n"] for c in calls if c["cuda"] == g) for g in ("0", "1")}

    # the same vectors as encoding them here, one shard after another
    local_cfg = load_config(_config(tmp_path, assets, "local", num_gpus=1))
    monkeypatch.setenv("TEXTME_TEST_ENCODE_DELAY", "0")
    assert np.array_equal(_fill(local_cfg, texts, LocalShards(16)), got)


def test_pipeline_on_ray_gives_the_thread_runners_results(ray_gpus, prefect_api, assets, tmp_path, monkeypatch):
    from flows.pipeline import pipeline
    from flows.runners import make_runner
    from tests.pipeline.test_resume import results

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threaded = write_mini_config(tmp_path / "thread", assets)
    on_ray = write_mini_config(tmp_path / "ray", assets)
    thread_id = run_pipeline(threaded)
    state = pipeline.with_options(task_runner=make_runner("ray"))(str(on_ray), return_state=True)
    assert state.is_completed(), state
    ray_id = str(state.state_details.flow_run_id)
    assert results(on_ray, ray_id) == results(threaded, thread_id)
    logged = [r for r in rows(load_config(on_ray), "embed_log", ray_id) if r["n_computed"]]
    # the embed stages ran on the GPU actors; evaluations embed their few inputs in their own task
    assert {r["device"] for r in logged if r["stage"].startswith("embed")} == {"gpu:0", "gpu:1"}
    assert {r["device"] for r in logged if r["stage"].startswith("evaluate")} == {"cpu"}
