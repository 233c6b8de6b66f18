"""Shared helpers: array checks, normalisation, ranks, PPR."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Queries handled per block when a [queries, items] similarity matrix would be large.
CHUNK = 1024


def as_matrix(x: Any, name: str, *, dim: int | None = None) -> np.ndarray:
    """float32 [n, d] from a numpy array or torch tensor; errors name `name` and shapes."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected [n, d], got shape {list(arr.shape)}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: dimension {arr.shape[1]} does not match {dim}")
    return arr


def l2_normalise(x: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit norm; a zero or non-finite row is an error naming its index."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise ValueError(f"{name}: row {int(bad[0])} is zero or not finite")
    return x / norms


def target_ranks(sim: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target column in a score matrix [nq, ni].

    Ties count against the query: rank = number of columns scoring >= the target,
    so a collapsed model that scores everything equal ranks last, not first.
    """
    if np.isnan(sim).any():
        raise ValueError("similarity matrix contains NaN")
    target_scores = sim[np.arange(sim.shape[0]), targets][:, None]
    return (sim >= target_scores).sum(axis=1)


def recall_at_k(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """{"R@k": percent of ranks <= k} for each k."""
    return {f"R@{k}": float(np.mean(ranks <= k) * 100.0) for k in ks}


def ppr(textme_score: float, native_score: float) -> float:
    """Performance Preservation Ratio, in percent: 100 * TextME score / the encoder's
    own (native, paired-trained) score on the same task and metric."""
    if not np.isfinite(native_score) or native_score <= 0:
        raise ValueError(f"ppr: native_score must be a positive number, got {native_score}")
    return float(100.0 * textme_score / native_score)
