"""`textme search` on a large index: faiss IVF-Flat (tasks/ann.py) vs exact block-wise top-k.

For each size, n unit vectors (clustered like embeddings: a mixture of `--clusters`
Gaussian centres plus noise, or `--uniform`) and `--queries` queries drawn the same way.
The exact baseline is what search does without faiss: the index read in blocks of
READ_BLOCK rows, ranked with textme.metrics.streamed_top_k. The ANN side is built with
the index stage's own code (tasks.ann: sqrt(n) lists, k-means on 64 vectors a list) and
searched at a few nprobe values. Printed per size and nprobe: recall@k of the ANN top-k
against the exact top-k (mean overlap), and the query time ratio ANN / exact, both in
the same run; and the ANN build time.

    .venv/bin/python benchmarks/bench_search.py                               # 100k, 300k, 1M x 256
    .venv/bin/python benchmarks/bench_search.py --sizes 100000 --dim 2560 --queries 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tasks.ann import ann_top_k, build_from_blocks, n_lists, training_rows
from tasks.search import READ_BLOCK
from textme.metrics import streamed_top_k


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(rng: np.random.Generator, n: int, nq: int, dim: int, clusters: int, uniform: bool):
    if uniform:
        return _unit(rng.normal(size=(n, dim))), _unit(rng.normal(size=(nq, dim)))
    centres = _unit(rng.normal(size=(clusters, dim)))
    spread = 1.0 / np.sqrt(dim)  # noise of about the centres' norm: clusters overlap, as real ones do

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for s in range(0, m, READ_BLOCK):
            e = min(m, s + READ_BLOCK)
            out[s:e] = _unit(centres[rng.integers(0, clusters, size=e - s)]
                             + spread * rng.normal(size=(e - s, dim)).astype(np.float32))
        return out

    return draw(n), draw(nq)


def exact(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    blocks = (gallery[s : s + READ_BLOCK] for s in range(0, gallery.shape[0], READ_BLOCK))
    start = time.perf_counter()
    idx, _ = streamed_top_k(queries, blocks, k)
    return idx, time.perf_counter() - start


def recall(approx: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(t)) / k for a, t in zip(approx, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--uniform", action="store_true", help="uniform random unit vectors (no structure)")
    args = ap.parse_args()
    import faiss

    print(f"dim {args.dim}, {args.queries} queries, k {args.k}, "
          f"{'uniform' if args.uniform else f'{args.clusters} clusters'}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")
    print(f"{'n':>9} {'lists':>6} {'build s':>8} {'exact ms/q':>11} {'nprobe':>7} {'ANN ms/q':>9} "
          f"{f'recall@{args.k}':>10} {'time ratio':>11}")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        gallery, queries = make_data(rng, n, args.queries, args.dim, args.clusters, args.uniform)
        truth, t_exact = exact(gallery, queries, args.k)
        start = time.perf_counter()
        blocks = (gallery[s : s + READ_BLOCK] for s in range(0, n, READ_BLOCK))
        ivf = build_from_blocks(blocks, gallery[training_rows(n)], n, args.dim)
        t_build = time.perf_counter() - start
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            start = time.perf_counter()
            idx, _ = ann_top_k(ivf, queries, args.k)
            t_ann = time.perf_counter() - start
            print(f"{n:>9} {n_lists(n):>6} {t_build:>8.1f} {1000 * t_exact / args.queries:>11.2f} {nprobe:>7} "
                  f"{1000 * t_ann / args.queries:>9.3f} {recall(idx, truth):>10.3f} {t_ann / t_exact:>10.4f}x")


if __name__ == "__main__":
    main()
