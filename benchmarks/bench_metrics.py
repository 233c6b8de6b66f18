"""Ranking a large gallery: block-wise (textme.metrics) vs one [queries, gallery] matrix.

Both rank the same unit vectors in the same run: retrieval ranks (counting) and a
top-k (mixed-modality search). The script checks that the answers are identical, then
prints the median time and the peak traced memory (tracemalloc sees numpy's buffers)
of each, and their ratios. The one-piece baseline holds queries x gallery float32
similarities at once; the block-wise form at most QUERY_BLOCK x GALLERY_BLOCK.

    .venv/bin/python benchmarks/bench_metrics.py                       # 2000 x 200k, d 64
    .venv/bin/python benchmarks/bench_metrics.py --queries 5000 --gallery 1000000
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

from textme.metrics import block_top_k, retrieval_ranks, similarities, target_ranks, top_k
from textme.metrics._common import l2_normalise


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _measure(fn, repeats: int):
    """(median seconds, peak traced bytes of one call, last result)."""
    tracemalloc.start()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--gallery", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    q, g = _unit(rng, args.queries, args.dim), _unit(rng, args.gallery, args.dim)
    targets = rng.integers(0, args.gallery, size=args.queries)

    # retrieval_ranks normalises its inputs: the baseline ranks the same normalised rows
    qn, gn = l2_normalise(q, "q"), l2_normalise(g, "g")
    cases = {
        "ranks": (lambda: retrieval_ranks(q, g, targets), lambda: target_ranks(similarities(qn, gn), targets)),
        f"top-{args.k}": (lambda: block_top_k(q, g, args.k)[0], lambda: top_k(similarities(q, g), args.k)),
    }
    print(f"{args.queries} queries x {args.gallery} gallery rows, dim {args.dim}")
    print(f"{'':8} {'block-wise':>22} {'one matrix':>22} {'time ratio':>11} {'memory ratio':>13}")
    for name, (blocked, whole) in cases.items():
        tb, mb, rb = _measure(blocked, args.repeats)
        tw, mw, rw = _measure(whole, args.repeats)
        assert np.array_equal(rb, rw), f"{name}: block-wise and one-matrix answers differ"
        print(f"{name:8} {tb:9.2f} s {mb / 2**20:8.0f} MiB {tw:9.2f} s {mw / 2**20:8.0f} MiB "
              f"{tb / tw:10.2f}x {mb / mw:12.3f}x")


if __name__ == "__main__":
    main()
