"""Approximate search over a large index: a faiss IVF-Flat index on inner product.

Optional: faiss comes with the `ann` extra (`pip install textme-pipeline[ann]`). An
encoder's index of at least `index.ann_min_items` items gets one, written to
`<workdir>/indexes/<index key>.faiss` (temporary name, then rename) by the index stage,
or by the first search that finds it missing (faiss installed after the index was
built). Smaller indexes, and every index without faiss, are searched exactly.

IVF-Flat: the vectors are clustered into `nlist` lists (about sqrt(n), k-means trained
on at most TRAIN_PER_LIST vectors a list), a query visits the `index.ann_nprobe` lists nearest to it and
scores their vectors exactly. The vectors are unit rows, so inner product is cosine, the
exact search's score. Recall against exact search and the speed-up:
benchmarks/bench_search.py, docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tasks.config import PipelineConfig
from tasks.workspace import Workspace

__all__ = ["faiss_available", "ann_wanted", "ann_path", "n_lists", "training_rows", "build_from_blocks", "build_ann",
           "load_ann", "ann_top_k"]

#: Vectors added to the faiss index per call (bounds the copy held besides faiss's own).
ADD_BLOCK = 65_536
#: k-means training vectors per IVF list (faiss warns below 39; 64 keeps a 1M-row build
#: to about a minute on two cores).
TRAIN_PER_LIST = 64


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def ann_wanted(cfg: PipelineConfig, n_items: int) -> bool:
    """True when an index of `n_items` is searched approximately (size and faiss)."""
    return n_items >= cfg.index.ann_min_items and faiss_available()


def ann_path(cfg: PipelineConfig, index_key: str) -> Path:
    return Workspace.of(cfg).root / "indexes" / f"{index_key}.faiss"


def n_lists(n: int) -> int:
    """IVF lists for n vectors: about sqrt(n), and at least 39 vectors a list (faiss's floor)."""
    return max(1, min(int(np.sqrt(n)), n // 39))


def training_rows(n: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of the k-means training sample (all rows when few)."""
    m = min(n, TRAIN_PER_LIST * n_lists(n))
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def train_ivf(sample: np.ndarray, dim: int, nlist: int) -> Any:
    """An empty, trained IVF-Flat inner-product index."""
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
    return ivf


def build_from_blocks(blocks: Iterable[np.ndarray], sample: np.ndarray, n: int, dim: int) -> Any:
    """Train on `sample`, then add the vectors block by block, in index order (label = row)."""
    ivf = train_ivf(sample, dim, n_lists(n))
    for block in blocks:
        ivf.add(np.ascontiguousarray(block, dtype=np.float32))
    return ivf


def build_ann(cfg: PipelineConfig, ns: Any, keys: Sequence[str], index_key: str) -> Path:
    """Build and persist the ANN index of a cache namespace's `keys` (in index order)."""
    import faiss

    n = len(keys)
    sample = ns.get([keys[i] for i in training_rows(n)])
    blocks = (ns.get(list(keys[s : s + ADD_BLOCK])) for s in range(0, n, ADD_BLOCK))
    ivf = build_from_blocks(blocks, sample, n, ns.dim)
    path = ann_path(cfg, index_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(ivf, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_ann(path: str | os.PathLike, nprobe: int) -> Any:
    import faiss

    ivf = faiss.read_index(str(path))
    ivf.nprobe = nprobe
    return ivf


def ann_top_k(ivf: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [nq, k'], scores float32 [nq, k']) best first; k' = min(k, n).
    Rows faiss could not fill (fewer than k vectors in the visited lists) are cut to
    the shortest filled length."""
    k = min(k, ivf.ntotal)
    scores, index = ivf.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    filled = int((index >= 0).sum(axis=1).min()) if index.size else 0
    return index[:, :filled].astype(np.int64), scores[:, :filled]
