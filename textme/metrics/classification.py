"""Zero-shot classification and mAP.

Class embeddings follow the official protocol: every class name is put into each
prompt template, the template embeddings are averaged and the mean re-normalised.
Scores are percentages; ties count against the sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from textme.metrics._common import CHUNK, as_matrix, l2_normalise, target_ranks


def class_embeddings(template_embeddings: Any) -> np.ndarray:
    """One embedding per class from its prompt-template embeddings.

    template_embeddings: [C, T, d] (T templates per class), or a sequence of C arrays
    [T_c, d]. Each template row is L2-normalised, the class mean taken and normalised.
    Returns float32 [C, d].
    """
    groups = list(template_embeddings)  # rows of a [C, T, d] array, or the C arrays
    if not groups:
        raise ValueError("class_embeddings: no classes given")
    out = []
    for c, group in enumerate(groups):
        rows = as_matrix(group, f"template_embeddings[{c}]")
        if rows.shape[0] == 0:
            raise ValueError(f"template_embeddings[{c}]: class has no template embeddings")
        if out and rows.shape[1] != out[0].shape[0]:
            raise ValueError(f"template_embeddings[{c}]: dim {rows.shape[1]} != {out[0].shape[0]}")
        out.append(l2_normalise(rows, f"template_embeddings[{c}]").mean(axis=0))
    return l2_normalise(np.stack(out), "class mean").astype(np.float32)


def zero_shot_accuracy(
    item_emb: Any, class_emb: Any, labels: Any, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy of items [n, d] against class embeddings [C, d].

    labels: true class index of each item [n]. An item is correct at k when its class
    is among the k most similar (cosine). Returns {"top1", "top5", ... (percent), "n"}.
    """
    items = l2_normalise(as_matrix(item_emb, "item_emb"), "item_emb")
    classes = l2_normalise(as_matrix(class_emb, "class_emb", dim=items.shape[1]), "class_emb")
    y = np.asarray(labels)
    if y.shape != (items.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected int [{items.shape[0]}], got {y.dtype} {list(y.shape)}")
    bad = np.flatnonzero((y < 0) | (y >= classes.shape[0]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"labels[{i}] = {int(y[i])} is not a class index (0..{classes.shape[0] - 1})"
        )
    if items.shape[0] == 0:
        raise ValueError("zero_shot_accuracy: no items")
    ranks = np.concatenate([
        target_ranks(items[s : s + CHUNK] @ classes.T, y[s : s + CHUNK])
        for s in range(0, items.shape[0], CHUNK)
    ])
    return {**{f"top{k}": float(np.mean(ranks <= k) * 100.0) for k in ks}, "n": int(ranks.size)}


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one ranking, scores [n], relevant bool [n] (at least one True), in [0, 1].

    Tied scores form one cut-off, as scikit-learn's `average_precision_score` does.
    """
    order = np.argsort(-scores, kind="stable")
    s, r = scores[order], relevant[order].astype(np.float64)
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie group
    tp = np.cumsum(r)[last]
    precision = tp / (last + 1)
    recall = tp / r.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: Any, relevance: Any) -> float:
    """mAP in percent over queries that have at least one relevant column.

    scores: [nq, nc] (e.g. item-to-class similarities for multi-label classification,
    or query-to-item for retrieval); relevance: [nq, nc] bool / 0-1.
    """
    s = as_matrix(scores, "scores")
    rel = np.asarray(relevance).astype(bool)
    if rel.shape != s.shape:
        raise ValueError(f"relevance shape {list(rel.shape)} != scores shape {list(s.shape)}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    rows = np.flatnonzero(rel.any(axis=1))
    if rows.size == 0:
        raise ValueError("mean_average_precision: no query has a relevant column")
    return float(np.mean([average_precision(s[i], rel[i]) for i in rows]) * 100.0)


def labels_to_relevance(labels: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """Multi-label lists ([[0, 3], [2], ...]) -> bool [n, n_classes]."""
    out = np.zeros((len(labels), n_classes), dtype=bool)
    for i, row in enumerate(labels):
        for c in row:
            if not 0 <= int(c) < n_classes:
                raise ValueError(f"labels[{i}] has class {c}, outside 0..{n_classes - 1}")
            out[i, int(c)] = True
    return out
