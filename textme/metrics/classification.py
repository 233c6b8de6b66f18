"""Zero-shot classification and mAP.

Class embeddings follow the official protocol: every class name is put into each
prompt template, the template embeddings are averaged and the mean re-normalised.
Scores are percentages; ties count against the sample. Items are ranked against the
classes in blocks (bounded memory, see `textme.metrics._common`).

Where the released code differs (TextME's `get_accuracy_metrics`, kept one option away):

- classes by index (ours, `match="index"`) or by name (official, `match="name"`): the
  official code counts a prediction correct when the predicted class's *name* equals
  the label's, so two classes with one name (ImageNet's two "crane"s) are merged.
  When every class name is distinct the two agree.
- exact ties: ours count against the sample (`ties="against"`); the official top-1 is
  `torch.argmax`, which gives a tie to the lower class index (`ties="first"`; its
  top-k uses `torch.topk`, whose order among equal scores is unspecified).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from textme.metrics._common import TIES, as_matrix, check_choice, group_ranks, l2_normalise

#: How an item's class is matched: by class index (ours) or by class name (official).
MATCHES = ("index", "name")


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


def _class_groups(
    labels: Any, n_items: int, n_classes: int, class_names: Sequence[str] | None, match: str
) -> tuple[np.ndarray, np.ndarray]:
    """(group of each item, group of each class): class indices (match="index") or ids
    of distinct class names (match="name"), so an item's relevant classes share its group."""
    y = np.asarray(labels)
    if y.shape != (n_items,):
        raise ValueError(f"labels: expected [{n_items}], got {y.dtype} {list(y.shape)}")
    names = None
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(names) != n_classes:
            raise ValueError(f"class_names has {len(names)} names for {n_classes} class embeddings")
    elif match == "name":
        raise ValueError('match="name" needs class_names')
    if y.dtype.kind in "US" or y.dtype == object:  # labels given as class names
        if names is None:
            raise ValueError("labels are names: pass class_names (or give class indices)")
        where: dict[str, list[int]] = {}
        for c, name in enumerate(names):
            where.setdefault(name, []).append(c)
        idx = np.empty(n_items, dtype=np.int64)
        for i, label in enumerate(y.tolist()):
            found = where.get(str(label))
            if found is None:
                raise ValueError(f"labels[{i}] = {label!r} is not a class name")
            if len(found) > 1 and match == "index":
                raise ValueError(f"labels[{i}] = {label!r} names classes {found}: ambiguous by "
                                 'index (give class indices, or match="name")')
            idx[i] = found[0]
        y = idx
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected class indices (int) or names, got {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"labels[{i}] = {int(y[i])} is not a class index (0..{n_classes - 1})")
    if match == "index":
        return y.astype(np.int64), np.arange(n_classes)
    _, name_id = np.unique(np.array(names, dtype=object), return_inverse=True)
    return name_id[y].astype(np.int64), name_id.astype(np.int64)


def zero_shot_accuracy(
    item_emb: Any,
    class_emb: Any,
    labels: Any,
    ks: tuple[int, ...] = (1, 5),
    *,
    class_names: Sequence[str] | None = None,
    match: str = "index",
    ties: str = "against",
    block: int | tuple[int, int] | None = None,
) -> dict[str, float]:
    """Top-k accuracy of items [n, d] against class embeddings [C, d].

    labels: the true class of each item [n], as class indices, or as names when
    class_names (one per class embedding) is given. An item is correct at k when its
    class is among the k most similar (cosine).

    match: "index" (ours, the default): the item's own class must rank in the top k.
    "name" (the official code, which compares names: `source_label == class_names[j]`):
    any class with the item's class *name* counts, so classes that share a name merge.
    ties: "against" (ours): a class scoring the same as the item's class ranks above
    it. "first": a tie goes to the lower class index (torch.argmax, the official top-1).
    Returns {"top1", "top5", ... (percent), "n"}.
    """
    check_choice(match, MATCHES, "match")
    check_choice(ties, TIES, "ties")
    items = l2_normalise(as_matrix(item_emb, "item_emb"), "item_emb")
    classes = l2_normalise(as_matrix(class_emb, "class_emb", dim=items.shape[1]), "class_emb")
    item_group, class_group = _class_groups(labels, items.shape[0], classes.shape[0], class_names, match)
    if items.shape[0] == 0:
        raise ValueError("zero_shot_accuracy: no items")
    ranks = group_ranks(items, classes, item_group, class_group, ties=ties, block=block)
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
