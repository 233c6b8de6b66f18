"""Training memory and warm-start re-runs, on a pipeline-like cache (toy 64-d encoders).

    python benchmarks/bench_training.py                      # 50k captions
    python benchmarks/bench_training.py --captions 200000    # the issue's setting

Setup: a cache with a text namespace and a pivot namespace of N captions (64-d each,
float16 as the pipeline stores them) and a mu_text, the way the train stage finds them.

1. Peak RSS of one head's training, each path in a fresh process (ru_maxrss), on the
   same rows, one epoch (the peak does not grow with epochs):
   - before: what the stage did until now: `get` of every row as float32, the finite
     check over all of them, and a centred float32 copy, then the loop;
   - after: `tasks.vectors.read_rows` (bounded float16 chunks) and `train_projection`
     casting and centring each batch as it is drawn.
   Then six heads at once (what the thread runner starts), before: six threads each
   on the old path; after: six threads through the stage's memory budget, set to two
   heads' estimate (`tasks.train.head_memory_bytes`).
2. Ten captions edited: the head retrained from scratch (`--epochs`) against a warm
   start from the previous head (`--warm-epochs`), both reading their rows from the
   cache like the stage; the final losses say what the warm start gives up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DIM = 64


def build(root: Path, n: int) -> None:
    """Text and pivot namespaces of n paired toy captions, a mu_text, the key list."""
    from storage.cache import EmbeddingCache
    from textme import centroid

    rng = np.random.default_rng(0)
    keys = [hashlib.sha256(f"caption {i}".encode()).hexdigest() for i in range(n)]
    cache = EmbeddingCache(root / "cache")
    z = rng.standard_normal((n, 16)).astype(np.float32)
    mix_t, mix_p = rng.standard_normal((16, DIM)), rng.standard_normal((16, DIM))
    for name, mix, shift in (("text", mix_t, 0.8), ("pivot", mix_p, 0.0)):
        ns = cache.namespace({"toy": name, "dim": DIM}, dim=DIM)
        for start in range(0, n, 65536):
            v = z[start : start + 65536] @ mix + 0.3 * rng.standard_normal((len(z[start : start + 65536]), DIM))
            v = v / np.linalg.norm(v, axis=1, keepdims=True) + shift
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            ns.put(keys[start : start + 65536], v.astype(np.float32))
    text = cache.namespace({"toy": "text", "dim": DIM}, dim=DIM)
    mu = centroid(text.get(keys[: min(n, 5000)]))
    np.save(root / "mu.npy", mu)
    (root / "keys.json").write_text(json.dumps(keys))


def _open(root: Path):
    from storage.cache import EmbeddingCache

    cache = EmbeddingCache(root / "cache")
    keys = json.loads((root / "keys.json").read_text())
    text = cache.namespace({"toy": "text", "dim": DIM}, dim=DIM)
    pivot = cache.namespace({"toy": "pivot", "dim": DIM}, dim=DIM)
    return keys, text, pivot, np.load(root / "mu.npy")


def old_head(text, pivot, keys, mu, cfg) -> None:
    """The stage before this change: all rows as float32, checked and centred whole."""
    import torch

    from textme import train_projection

    x, y = text.get(keys), pivot.get(keys)
    for t in (torch.from_numpy(x), torch.from_numpy(y)):
        assert bool(torch.isfinite(t).all())
    centred = x - mu  # the centred float32 copy _training_inputs made
    del x
    train_projection(centred, y, offset=None, config=cfg)


def new_head(text, pivot, keys, mu, cfg) -> None:
    from tasks.vectors import read_rows
    from textme import train_projection

    train_projection(read_rows(text, keys), read_rows(pivot, keys), offset=mu, config=cfg)


def child(root: Path, mode: str, heads: int, epochs: int) -> None:
    """One measurement in this fresh process; prints JSON with peak RSS in MB."""
    import torch

    from textme import TrainConfig

    torch.set_num_threads(1)
    keys, text, pivot, mu = _open(root)
    cfg = TrainConfig(epochs=epochs, device="cpu")
    # Baseline: indexes loaded and torch warmed up by a tiny training, so the figures
    # after it are what the rows cost, not the libraries' first-use allocations.
    from textme import train_projection

    warm = np.random.default_rng(0).standard_normal((1024, DIM)).astype(np.float32)
    train_projection(warm, warm, offset=None, config=cfg)
    text.get(keys[:2]), pivot.get(keys[:2])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if heads == 1:
        (old_head if mode == "old" else new_head)(text, pivot, keys, mu, cfg)
    else:
        from storage.cache import EmbeddingCache
        from tasks.budget import MemoryBudget
        from tasks.train import head_memory_bytes

        budget = MemoryBudget()
        limit = 2 * head_memory_bytes(len(keys), text, pivot, cfg)

        def one() -> None:  # one cache handle per thread, as the stage's tasks have
            _, t, p, _ = _open(root)
            if mode == "old":
                old_head(t, p, keys, mu, cfg)
            else:
                with budget.reserve(head_memory_bytes(len(keys), t, p, cfg), limit):
                    new_head(t, p, keys, mu, cfg)

        threads = [threading.Thread(target=one) for _ in range(heads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        del EmbeddingCache
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mb": base, "peak_mb": peak}))


def measure(root: Path, mode: str, heads: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--heads", str(heads), "--dir", str(root)],
                         check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def rerun(root: Path, epochs: int, warm_epochs: int) -> dict[str, float]:
    """Edit 10 captions, then retrain: from scratch vs warm from the previous head."""
    import dataclasses

    import torch

    from tasks.vectors import read_rows
    from textme import TrainConfig, train_projection

    keys, text, pivot, mu = _open(root)
    cfg = TrainConfig(epochs=epochs, device="cpu")
    previous, _ = train_projection(read_rows(text, keys), read_rows(pivot, keys), offset=mu, config=cfg)
    rng = np.random.default_rng(1)
    edited = [hashlib.sha256(f"edited caption {i}".encode()).hexdigest() for i in range(10)]
    for ns in (text, pivot):
        v = rng.standard_normal((10, DIM)).astype(np.float32)
        ns.put(edited, v / np.linalg.norm(v, axis=1, keepdims=True))
    new_keys = sorted(edited + keys[10:])
    out = {}
    for name, run_cfg, init in (("scratch", cfg, None),
                                ("warm", dataclasses.replace(cfg, epochs=warm_epochs), previous)):
        t0 = time.perf_counter()
        _, history = train_projection(read_rows(text, new_keys), read_rows(pivot, new_keys), offset=mu,
                                      config=run_cfg, init=init)
        out[f"{name}_s"], out[f"{name}_loss"] = time.perf_counter() - t0, history[-1]["loss"]
    del torch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=50000)
    parser.add_argument("--epochs", type=int, default=50, help="epochs of a head from scratch (paper: 50)")
    parser.add_argument("--warm-epochs", type=int, default=5, help="training.warm_start_epochs")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--child", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--heads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.dir, args.child, args.heads, epochs=1)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build(root, args.captions)
        print(f"{args.captions} captions, {DIM}-d text and pivot, float16 cache: built in "
              f"{time.perf_counter() - t0:.1f}s")
        print(f"{'case':<26} {'before MB':>10} {'after MB':>10} {'after/before':>13}")
        for heads in (1, 6):
            old, new = measure(root, "old", heads), measure(root, "new", heads)
            d_old, d_new = old["peak_mb"] - old["base_mb"], new["peak_mb"] - new["base_mb"]
            print(f"{f'{heads} head(s), peak RSS':<26} {old['peak_mb']:>10.0f} {new['peak_mb']:>10.0f} "
                  f"{new['peak_mb'] / old['peak_mb']:>12.2f}x")
            print(f"{f'{heads} head(s), training only':<26} {d_old:>10.0f} {d_new:>10.0f} "
                  f"{d_new / d_old:>12.2f}x")
        r = rerun(root, args.epochs, args.warm_epochs)
        print(f"10 captions edited: from scratch ({args.epochs} epochs) {r['scratch_s']:.1f}s, final loss "
              f"{r['scratch_loss']:.4f}; warm start ({args.warm_epochs} epochs) {r['warm_s']:.1f}s, final loss "
              f"{r['warm_loss']:.4f}; speed-up {r['scratch_s'] / r['warm_s']:.1f}x")


if __name__ == "__main__":
    main()
