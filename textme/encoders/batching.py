"""Batch loop shared by the adapters: an order, a progress bar, and out-of-memory backoff.

A batch holds at most `batch_size` items. When the caller gives per-item `costs` (token
counts, inputs sorted longest first), a batch also ends where the items get shorter than
3/4 of its longest (so padding stays under a quarter of each row) and, with `max_cost`,
before it exceeds `max_cost` padded units (items x the largest cost): long texts then
come in small batches and short captions in full ones, so memory stays bounded and the
device stays busy.

On a CUDA out-of-memory error both limits are halved and the same items are tried again;
the smaller limits are kept for the rest of the call (the longest inputs come first when
the caller sorts by length, so once they fit the rest fits too). A batch of one that
still does not fit re-raises the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

SPLIT_RATIO = 0.75  # with per-item costs: a batch ends where items get this much shorter


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError)


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting items, so its rate reads in items/s; a no-op when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="items", disable=not enabled, dynamic_ncols=True)


def run_in_batches(
    n: int,
    encode: Callable[[list[int]], np.ndarray],
    *,
    batch_size: int,
    order: Sequence[int] | None = None,
    costs: Sequence[int] | None = None,
    max_cost: int | None = None,
    progress: bool = False,
    desc: str = "encoding",
) -> tuple[np.ndarray, int]:
    """Call `encode(indices)` on consecutive slices of `order`; rows land at their indices.

    Returns (float32 array [n, d] in input order, the batch size in use at the end).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_cost is not None and (costs is None or max_cost < 1):
        raise ValueError("max_cost needs per-item costs and must be >= 1")
    order = list(range(n)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(n)):
        raise ValueError("order must be a permutation of range(n)")
    out: np.ndarray | None = None
    pos, size, budget = 0, batch_size, max_cost
    with progress_bar(n, desc, progress) as bar:
        while pos < n:
            idx = next_batch(order, pos, size, costs, budget)
            oom = False
            try:
                vecs = np.asarray(encode(idx), dtype=np.float32)
            except Exception as err:
                if not is_out_of_memory(err) or len(idx) == 1:
                    raise
                oom = True  # free memory outside the except block: the traceback holds tensors
            if oom:
                _free_cuda_cache()
                size = max(1, min(size, len(idx)) // 2)
                budget = None if budget is None else max(1, budget // 2)
                log.warning("%s: out of memory, batch size halved to %d", desc, size)
                continue
            if vecs.ndim != 2 or vecs.shape[0] != len(idx):
                raise RuntimeError(f"{desc}: batch of {len(idx)} gave shape {list(vecs.shape)}")
            if out is None:
                out = np.empty((n, vecs.shape[1]), np.float32)
            out[idx] = vecs
            pos += len(idx)
            bar.update(len(idx))
    assert out is not None or n == 0
    return (out if out is not None else np.zeros((0, 0), np.float32)), size


def next_batch(order: list[int], pos: int, size: int, costs: Sequence[int] | None,
                budget: int | None) -> list[int]:
    """The next slice of `order`: at least one item, at most `size` items and `budget`
    padded units, and (with costs, sorted longest first) no item shorter than
    `SPLIT_RATIO` x the batch's longest, so that no row is more than a quarter padding."""
    idx = order[pos : pos + size]
    if costs is None:
        return idx
    longest, take = 0, 0
    for i in idx:
        cost = int(costs[i])
        if take and cost < SPLIT_RATIO * longest:
            break
        longest = max(longest, cost)
        if take and budget is not None and (take + 1) * longest > budget:
            break
        take += 1
    return idx[:take]
