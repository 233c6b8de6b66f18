"""Pivot embedding over Ray: the sharded embed path on 1 worker and on N, same run.

The pivot stage's own code path (`tasks.embed.fill_cache` with `tasks.shards.RayShards`:
one actor per worker, each loading the tiny Qwen3 once and committing its shards to the
cache) embeds the same distinct captions into a fresh namespace twice: once on a local
Ray with 1 worker, once with N. It checks that both gave the same vectors, then prints
captions/s and the speed-up. Times include starting the actors (each imports torch
and loads the model), as a stage's do. On CPU a worker is a CPU (one thread each); with `--gpus N` a worker
is a GPU (the actors ask for `num_gpus=1`, Ray pins CUDA_VISIBLE_DEVICES per actor).

    .venv/bin/python benchmarks/bench_pivot_ray.py                  # 100k captions, 1 vs 2 CPU workers
    .venv/bin/python benchmarks/bench_pivot_ray.py --quick          # 5k captions
    .venv/bin/python benchmarks/bench_pivot_ray.py --gpus 8         # a GPU machine: 1 vs 8 GPUs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def embed_on_ray(workers: int, gpus: bool, model: Path, cache_root: Path, texts: list[str],
                 shard_rows: int) -> tuple[float, np.ndarray]:
    """Seconds to embed `texts` on a fresh local Ray of `workers` CPUs or GPUs, and the vectors."""
    import ray

    from storage.cache import EmbeddingCache
    from storage.fingerprint import text_key
    from tasks.embed import fill_cache
    from tasks.shards import RayShards
    from textme.encoders import get_encoder

    device = "cuda" if gpus else "cpu"
    options = {"path": str(model), "device": device, "dtype": "float32"}
    enc = get_encoder("qwen3-embedding", **options)
    ns = EmbeddingCache(str(cache_root / f"w{workers}")).namespace({"bench": "pivot-ray", "workers": workers},
                                                                   dim=enc.dim)
    keys = [text_key(t) for t in texts]
    env = {"OMP_NUM_THREADS": "1", "TEXTME_PROGRESS": "0", "PYTHONPATH": os.getcwd()}
    resources = {"num_gpus": workers, "num_cpus": max(2, os.cpu_count() or 2)} if gpus else \
        {"num_cpus": workers, "num_gpus": 0}
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}, **resources)
    try:
        runner = RayShards(shard_rows, "qwen3-embedding", options, 1.0 if gpus else 0.0, str(cache_root / f"w{workers}"))
        started = time.perf_counter()
        requested, computed = fill_cache(ns, enc, "text", keys, texts, "pivot/text", shards=runner)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    assert requested == computed == len(set(keys)), (requested, computed)
    return seconds, ns.get(keys)


def unique_texts(texts: list[str]) -> list[str]:
    """The captions with repeats numbered: the generator repeats short ones, and the
    pivot stage embeds each distinct text once, so repeats would not be work."""
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        k = seen.get(t, 0)
        seen[t] = k + 1
        out.append(t if k == 0 else f"{t} ({k})")
    return out


def main() -> None:
    from bench_pivot import make_texts  # the script folder is on sys.path
    from textme.encoders.tiny import build_tiny_qwen3

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 captions")
    parser.add_argument("--workers", type=int, default=2, help="CPU workers of the parallel run (default 2)")
    parser.add_argument("--gpus", type=int, default=0, help="compare 1 GPU with this many (a GPU machine)")
    parser.add_argument("--shard-rows", type=int, default=0, help="rows per shard (default: captions / 8)")
    args = parser.parse_args()
    n = 5_000 if args.quick else args.captions
    many = args.gpus or args.workers
    texts = unique_texts(make_texts(n))  # n distinct captions: n keys to embed
    shard_rows = args.shard_rows or max(1, len(texts) // 8)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_qwen3(Path(tmp) / "qwen3", hidden_size=64, num_layers=2)
        one, v_one = embed_on_ray(1, bool(args.gpus), model, Path(tmp), texts, shard_rows)
        par, v_par = embed_on_ray(many, bool(args.gpus), model, Path(tmp), texts, shard_rows)
    same = np.allclose(v_one, v_par, atol=1e-5)
    unit = "GPU" if args.gpus else "CPU worker"
    print(f"pivot over {len(texts)} captions (tiny Qwen3, hidden 64, 2 layers), shards of {shard_rows}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"  1 {unit}: {one:7.2f} s  {len(texts) / one:8.0f} captions/s")
    print(f"  {many} {unit}s: {par:7.2f} s  {len(texts) / par:8.0f} captions/s")
    print(f"  speed-up: {one / par:.2f}x   vectors equal: {same}")
    if not same:
        raise SystemExit("the parallel run gave other vectors")


if __name__ == "__main__":
    main()
