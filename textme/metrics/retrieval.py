"""Text -> X retrieval: R@1/5/10, median and mean rank.

Direction reported: text queries ranking items (images, audio clips, ...), the paper's
"Text->X". Both protocols are one function:

- one caption per item: query i's item is item i (`query_item=None`);
- several captions per item (Flickr30k's five, Clotho's five): each caption is a
  query, `query_item[q]` is its item, every caption counts once, and a caption is
  correct at k when its item ranks in the top k of all items. This is the official
  multi-sentence protocol (`get_recall_metrics_multi_sentence`).

All scores are percentages; ranks are 1-based; ties count against the query. Items
are ranked in blocks (bounded memory, see `textme.metrics._common`).

Where the released code differs (TextME's `eval_utils.py`, kept one option away):

- median rank: ours is the textbook median (`median="average"`, the mean of the two
  middle ranks of an even count); the official MedianR is `torch.median`, the lower
  of the two (`median="lower"`). Mean rank and R@k are the same.
- exact ties: ours count against the query; the official ranks are positions in
  `torch.argsort`, whose order among exactly equal scores is unspecified. Real
  embeddings almost never tie exactly; a collapsed model scores 0 with us.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from textme.metrics._common import as_matrix, group_ranks, l2_normalise, median_rank, recall_at_k


def query_item_from_counts(captions_per_item: Sequence[int]) -> np.ndarray:
    """Item index of each caption when captions are grouped by item, in item order.

    [5, 5, 4] -> [0,0,0,0,0, 1,1,1,1,1, 2,2,2,2] (int64 [sum(counts)]).
    """
    counts = np.asarray(captions_per_item, dtype=np.int64)
    if counts.ndim != 1 or (counts < 1).any():
        bad = int(np.flatnonzero(counts < 1)[0]) if counts.ndim == 1 else -1
        raise ValueError(f"captions_per_item: every item needs >= 1 caption (item {bad})")
    return np.repeat(np.arange(counts.size), counts)


def _check_targets(query_item: Any, n_queries: int, n_items: int) -> np.ndarray:
    if query_item is None:
        if n_queries != n_items:
            raise ValueError(
                f"one caption per item needs as many queries as items, got {n_queries} "
                f"queries and {n_items} items; pass query_item for several captions per item"
            )
        return np.arange(n_queries)
    targets = np.asarray(query_item)
    if targets.shape != (n_queries,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"query_item: expected int [{n_queries}], got {targets.dtype} {list(targets.shape)}"
        )
    bad = np.flatnonzero((targets < 0) | (targets >= n_items))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"query_item[{i}] = {int(targets[i])} is not an item index (0..{n_items - 1})"
        )
    return targets


def retrieval_ranks(
    query_emb: Any, item_emb: Any, query_item: Any = None, *, block: int | tuple[int, int] | None = None
) -> np.ndarray:
    """1-based rank of each query's item among all items, by cosine similarity.

    query_emb [nq, d], item_emb [ni, d]; query_item [nq] ints or None (query i <-> item i).
    Ranked in blocks of queries x items (`block`: None for the defaults, an int or a
    (queries, items) pair), so the full [nq, ni] matrix is never held.
    """
    q = l2_normalise(as_matrix(query_emb, "query_emb"), "query_emb")
    items = l2_normalise(as_matrix(item_emb, "item_emb", dim=q.shape[1]), "item_emb")
    targets = _check_targets(query_item, q.shape[0], items.shape[0])
    return group_ranks(q, items, targets, np.arange(items.shape[0]), block=block)


def retrieval_metrics(
    query_emb: Any,
    item_emb: Any,
    query_item: Any = None,
    ks: tuple[int, ...] = (1, 5, 10),
    *,
    median: str = "average",
    block: int | tuple[int, int] | None = None,
) -> dict[str, float]:
    """Text -> X retrieval metrics.

    query_emb: caption embeddings [nq, d]; item_emb: item embeddings [ni, d] (both in
    the same space, e.g. after projection); query_item: item index of each caption
    [nq], or None for one caption per item (then nq == ni, caption i <-> item i).
    median: "average" (ours, the default: the textbook median) or "lower" (the official
    `torch.median`: the lower middle rank of an even count). Returns {"R@1", "R@5",
    "R@10" (percent), "median_rank", "mean_rank", "n_queries", "n_items"}.
    """
    ranks = retrieval_ranks(query_emb, item_emb, query_item, block=block)
    n_items = len(item_emb)
    return {
        **recall_at_k(ranks, ks),
        "median_rank": median_rank(ranks, median),
        "mean_rank": float(np.mean(ranks)),
        "n_queries": int(ranks.size),
        "n_items": int(n_items),
    }
