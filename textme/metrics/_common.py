"""Shared helpers: array checks, normalisation, block-wise ranking, PPR.

Block-wise ranking: a gallery (items, classes, documents) is never scored against all
queries in one [n_queries, n_gallery] matrix. Queries are taken `QUERY_BLOCK` at a
time and the gallery `GALLERY_BLOCK` rows at a time, so one block of similarities is
alive at once whatever the gallery's size: 1024 x 8192 by default, about 100 MiB
(the float64 product, its float32 copy and a bool mask). A rank is a count, so it adds
up over gallery blocks; a top-k is merged block by block.

Either gives exactly what one product of the whole gives (`similarities(queries,
gallery)` then ranking): similarities are accumulated in float64 and rounded to
float32 (`similarities`), so a score does not depend on how BLAS splits the product
(a float32 product does, in its last bit, which moves a near-tied rank by one); the
target's own score is read from the block it lies in, and ties follow the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

#: Queries and gallery columns scored per block (see the module docstring).
QUERY_BLOCK = 1024
GALLERY_BLOCK = 8192

#: How exact ties are ranked. "against": every column scoring >= the target counts
#: (a collapsed model that scores everything equal ranks last, not first; ours, the
#: default). "first": a tie goes to the lower column index, as torch.argmax does (the
#: official zero-shot code takes argmax).
TIES = ("against", "first")

#: How the median of an even number of ranks is taken. "average": the mean of the two
#: middle values (numpy, the textbook median; ours, the default). "lower": the lower of
#: the two (what torch.median returns, so the official MedianR).
MEDIANS = ("average", "lower")


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


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T as float32 [len(a), len(b)], accumulated in float64.

    The product of two float32 numbers is exact in float64, so the sum no longer
    depends (beyond 1e-16) on the order BLAS adds it in, which changes with the shape
    of the matrices; rounding to float32 at the end gives every block of a blocked
    computation the values of one product of the whole, and keeps exact ties exact.
    """
    return (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.float32)


def check_choice(value: str, known: tuple[str, ...], name: str) -> str:
    if value not in known:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, known))}; got {value!r}")
    return value


def block_sizes(block: int | tuple[int, int] | None) -> tuple[int, int]:
    """(query block, gallery block) from None (the defaults), one int (both) or a pair."""
    if block is None:
        return QUERY_BLOCK, GALLERY_BLOCK
    qb, gb = (block, block) if isinstance(block, int) else block
    if int(qb) < 1 or int(gb) < 1:
        raise ValueError(f"block sizes must be >= 1, got {block}")
    return int(qb), int(gb)


def spans(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def target_ranks(sim: np.ndarray, targets: np.ndarray, ties: str = "against") -> np.ndarray:
    """1-based rank of each row's target column in a score matrix [nq, ni] held whole.

    ties="against": rank = number of columns scoring >= the target; "first": columns
    scoring more, plus tied columns with a lower index, plus one.
    """
    check_choice(ties, TIES, "ties")
    if np.isnan(sim).any():
        raise ValueError("similarity matrix contains NaN")
    targets = np.asarray(targets)
    best = sim[np.arange(sim.shape[0]), targets][:, None]
    if ties == "against":
        return (sim >= best).sum(axis=1)
    lower = np.arange(sim.shape[1])[None, :] < targets[:, None]
    return (sim > best).sum(axis=1) + ((sim == best) & lower).sum(axis=1) + 1


def group_ranks(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_group: np.ndarray,
    gallery_group: np.ndarray,
    *,
    ties: str = "against",
    block: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """1-based rank of each query's best-scoring relevant gallery column, in blocks.

    queries [nq, d] and gallery [ng, d] are unit rows (cosine = dot product). Column j
    is relevant to query i when gallery_group[j] == query_group[i]: one column per
    query for retrieval (group = item index) or zero-shot by index, several for
    zero-shot by class name. Of a query's relevant columns the best one counts (highest
    score, lowest index among equals); its rank follows `ties` (see `target_ranks`).
    Every query must have a relevant column.

    Memory: one [query block, gallery block] float32 block at a time (module docstring).
    With a gallery of more than one block the blocks holding relevant columns are
    scored twice (first to find each query's best score, then to count), so blocking
    costs at most twice the products and never more memory.
    """
    check_choice(ties, TIES, "ties")
    qb, gb = block_sizes(block)
    n_gallery = gallery.shape[0]
    cols = np.arange(n_gallery)
    ranks = np.empty(queries.shape[0], dtype=np.int64)
    for qs in spans(queries.shape[0], qb):
        q, qg = queries[qs], query_group[qs]
        best = np.full(q.shape[0], -np.inf, dtype=np.float32)
        best_col = np.full(q.shape[0], -1, dtype=np.int64)
        gallery_spans = list(spans(n_gallery, gb))
        held = None  # the one block's scores when the gallery is a single block
        for gs in gallery_spans:
            g_group = gallery_group[gs]
            if not np.isin(qg, g_group).any():
                continue
            sim = similarities(q, gallery[gs])
            held = sim if len(gallery_spans) == 1 else None
            member = qg[:, None] == g_group[None, :]
            masked = np.where(member, sim, -np.inf)
            top = masked.max(axis=1)
            better = top > best  # strictly: an earlier (lower-index) block keeps a tie
            best[better] = top[better]
            best_col[better] = gs.start + masked.argmax(axis=1)[better]
        if (best_col < 0).any():
            i = qs.start + int(np.flatnonzero(best_col < 0)[0])
            raise ValueError(f"query {i} has no relevant column in the gallery")
        count = np.zeros(q.shape[0], dtype=np.int64)
        for gs in gallery_spans:
            sim = held if held is not None else similarities(q, gallery[gs])
            if ties == "against":
                count += (sim >= best[:, None]).sum(axis=1)
            else:
                tied_lower = (sim == best[:, None]) & (cols[gs][None, :] < best_col[:, None])
                count += (sim > best[:, None]).sum(axis=1) + tied_lower.sum(axis=1)
        ranks[qs] = count if ties == "against" else count + 1
    return ranks


def _merge_top_k(scores: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (score high, then index low) of the candidates given."""
    order = np.lexsort((index, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(index, order, axis=1)


def _block_top_k(sim: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row of one block, ties to the lower index, in linear
    time: everything above the k-th largest value, then the lowest-index ties of it."""
    n = sim.shape[1]
    cols = np.arange(n)
    if k >= n:
        index = np.broadcast_to(cols, sim.shape)
        return _merge_top_k(sim, index + offset, n)
    kth = np.partition(sim, n - k, axis=1)[:, n - k][:, None]
    above = sim > kth
    tied = sim == kth
    need = k - above.sum(axis=1, keepdims=True)
    take = above | (tied & (np.cumsum(tied, axis=1) <= need))
    rows, picked = np.nonzero(take)  # row-major: exactly k per row, columns ascending
    picked = picked.reshape(sim.shape[0], k)
    chosen = np.take_along_axis(sim, picked, axis=1)
    return _merge_top_k(chosen, picked + offset, k)


def block_top_k(
    queries: np.ndarray, gallery: np.ndarray, k: int, *, block: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64 [nq, k], scores float32 [nq, k]) of each query's k best gallery
    rows by dot product, best first, ties to the lower gallery index: exactly
    `argsort(-similarities(queries, gallery), kind="stable")[:, :k]`, scored in blocks."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    qb, gb = block_sizes(block)
    k = min(k, gallery.shape[0])
    out_idx = np.empty((queries.shape[0], k), dtype=np.int64)
    out_scores = np.empty((queries.shape[0], k), dtype=np.float32)
    for qs in spans(queries.shape[0], qb):
        scores = index = None
        for gs in spans(gallery.shape[0], gb):
            sim = similarities(queries[qs], gallery[gs])
            if np.isnan(sim).any():
                raise ValueError("similarity matrix contains NaN")
            s, i = _block_top_k(sim, gs.start, k)
            if scores is None:
                scores, index = s, i
            else:
                scores, index = _merge_top_k(np.hstack([scores, s]), np.hstack([index, i]), k)
        out_idx[qs], out_scores[qs] = index, scores
    return out_idx, out_scores


def streamed_top_k(
    queries: np.ndarray, gallery_blocks: Iterable[np.ndarray], k: int, *, block: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`block_top_k` over a gallery given as consecutive row blocks (read from a store
    one block at a time, so the gallery is never whole in memory): the same indices and
    scores as `block_top_k(queries, np.vstack(blocks), k)`. Indices count rows across
    all blocks; an empty gallery gives [nq, 0]."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.empty((queries.shape[0], 0), dtype=np.float32)
    index = np.empty((queries.shape[0], 0), dtype=np.int64)
    offset = 0
    for gallery in gallery_blocks:
        if gallery.shape[0] == 0:
            continue
        i, s = block_top_k(queries, gallery, k, block=block)
        scores, index = _merge_top_k(np.hstack([scores, s]), np.hstack([index, i + offset]), k)
        offset += gallery.shape[0]
    return index, scores


def recall_at_k(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """{"R@k": percent of ranks <= k} for each k."""
    return {f"R@{k}": float(np.mean(ranks <= k) * 100.0) for k in ks}


def median_rank(ranks: np.ndarray, median: str = "average") -> float:
    """Median of the ranks: "average" (numpy's: the mean of the two middle values of an
    even count; ours) or "lower" (torch.median's: the lower of the two; official)."""
    check_choice(median, MEDIANS, "median")
    if ranks.size == 0:
        raise ValueError("median_rank: no ranks")
    if median == "average":
        return float(np.median(ranks))
    return float(np.sort(ranks)[(ranks.size - 1) // 2])


def ppr(textme_score: float, native_score: float) -> float:
    """Performance Preservation Ratio, in percent: 100 * TextME score / the encoder's
    own (native, paired-trained) score on the same task and metric."""
    if not np.isfinite(native_score) or native_score <= 0:
        raise ValueError(f"ppr: native_score must be a positive number, got {native_score}")
    return float(100.0 * textme_score / native_score)
