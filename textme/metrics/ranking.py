"""Graded ranking (NDCG@k) and GR-CLIP mixed-modality search.

NDCG@k: gain = relevance grade (linear, as scikit-learn's `ndcg_score`), discount
1 / log2(position + 1). The ideal DCG comes from all of the query's judged documents
(`ideal="all"`, the standard); `ideal="retrieved"` re-orders only the k retrieved
documents, which is what GR-CLIP's `retrieval_mixbench.py` computes (it passes the
top-k to `ndcg_score`), kept so that its numbers can be reproduced. Percentages.

Tied scores: ours (`ties="rank"`) take the ranking as given (ties broken by the lower
document index) and discount each position; scikit-learn's `ndcg_score`, which GR-CLIP
calls, averages the gains of tied scores over the positions they share
(`ties="average"`, computed by `ndcg_score` itself). GR-CLIP's numbers are
`ideal="retrieved", ties="average"`; ours the standard `ideal="all", ties="rank"`.
Exact ties are rare with real embeddings, so the two usually agree to many digits;
the ideal DCG is the difference that shows.

Mixed-modality search (GR-CLIP): a corpus of text-only, modal-only (e.g. image) and
mixed documents. A mixed document's vector is alpha * text + (1 - alpha) * modal; with
gap removal every part is first centred with its own modality's mean (query mean for
queries), and every vector is re-normalised before cosine ranking.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from textme.metrics._common import as_matrix, block_top_k, check_choice, l2_normalise

#: NDCG's ideal DCG: from all judged documents (standard) or the k retrieved (GR-CLIP).
IDEALS = ("all", "retrieved")
#: NDCG over tied scores: positions as ranked (ours) or gains averaged over ties (sklearn).
NDCG_TIES = ("rank", "average")

MODES = ("text", "modal", "mixed")
_MODE_ALIASES = {"image": "modal"}  # MixBench / GR-CLIP call the modal part "image"


def _relevance(relevance: Any, shape: tuple[int, int]) -> np.ndarray:
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.shape != shape:
        raise ValueError(f"relevance shape {list(rel.shape)} != expected {list(shape)}")
    if (rel < 0).any() or not np.isfinite(rel).all():
        raise ValueError("relevance grades must be finite and >= 0")
    return rel


def top_k(scores: Any, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first; ties keep column order."""
    s = as_matrix(scores, "scores")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    k = min(k, s.shape[1])
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _dcg(gains: np.ndarray) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    return gains @ discounts


def ndcg_from_ranking(
    ranking: Any,
    relevance: Any,
    k: int = 10,
    ideal: str = "all",
    *,
    scores: Any = None,
    ties: str = "rank",
) -> np.ndarray:
    """Per-query NDCG@k in [0, 1] for given rankings.

    ranking: int [nq, >=k] document indices, best first; relevance: graded [nq, nd].
    With ideal="all", a query with no relevant document gets NaN (it is left out of
    means); with ideal="retrieved", one whose top k are all irrelevant gets 0.
    ties="average" (scikit-learn's tie averaging over the retrieved documents, what
    GR-CLIP computes) needs their scores [nq, >=k] aligned with `ranking`, and
    ideal="retrieved": with ideal="all" a tie across the k-th place would reach
    documents a ranking does not hold (`ndcg_at_k` has every score and can).
    """
    check_choice(ideal, IDEALS, "ideal")
    check_choice(ties, NDCG_TIES, "ties")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.asarray(ranking)
    rel = np.asarray(relevance, dtype=np.float64)
    if order.ndim != 2 or rel.ndim != 2 or rel.shape[0] != order.shape[0]:
        raise ValueError(
            f"ranking {list(order.shape)} and relevance {list(rel.shape)} must be 2-D "
            "with one row per query"
        )
    rel = _relevance(rel, rel.shape)
    order = order[:, :k]
    if order.size and (order.min() < 0 or order.max() >= rel.shape[1]):
        raise ValueError(f"ranking holds document indices outside 0..{rel.shape[1] - 1}")
    gains = np.take_along_axis(rel, order, axis=1)
    dcg = _dcg(gains)
    best = np.sort(gains if ideal == "retrieved" else rel, axis=1)[:, ::-1][:, :k]
    idcg = _dcg(best)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dcg / idcg
    if ties == "average":
        if ideal != "retrieved":
            raise ValueError('ties="average" with a ranking needs ideal="retrieved" '
                             '(ndcg_at_k computes ideal="all" from every score)')
        if scores is None:
            raise ValueError('ties="average" needs the scores of the ranked documents')
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] != order.shape[0] or s.shape[1] < order.shape[1]:
            raise ValueError(f"scores {list(s.shape)} must be [{order.shape[0]}, >={order.shape[1]}]")
        for i in np.flatnonzero(idcg > 0):
            out[i] = _sklearn_ndcg(gains[i], s[i, : order.shape[1]], k)
    out[idcg == 0] = 0.0 if ideal == "retrieved" else np.nan
    return out


def _sklearn_ndcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    """One query's NDCG@k by scikit-learn's `ndcg_score` (tie averaging), called as
    GR-CLIP calls it (`ndcg_score([rel], [scores], k=k)`)."""
    from sklearn.metrics import ndcg_score

    if y_true.size < 2:  # one document: nothing can tie, and sklearn refuses a single one
        return 1.0 if y_true.size and y_true[0] > 0 else 0.0
    return float(ndcg_score(y_true[None, :], y_score[None, :], k=k))


def ndcg_at_k(scores: Any, relevance: Any, k: int = 10, ideal: str = "all", *, ties: str = "rank") -> float:
    """Mean NDCG@k in percent. scores: [nq, nd] (higher is better); relevance: graded
    [nq, nd] >= 0. Queries without any relevant document are left out (ideal="all").

    ideal / ties: see the module docstring. ties="average" is scikit-learn's
    `ndcg_score`: on the top k with ideal="retrieved" (GR-CLIP), on every document's
    score with ideal="all" (the plain `ndcg_score(relevance, scores, k=k)` per query).
    """
    check_choice(ties, NDCG_TIES, "ties")
    s = as_matrix(scores, "scores")
    ranking = top_k(s, k)
    if ties == "average" and ideal == "all":
        check_choice(ideal, IDEALS, "ideal")
        rel = _relevance(relevance, s.shape)
        per_query = np.array([_sklearn_ndcg(rel[i], s[i].astype(np.float64), k) if rel[i].any() else np.nan
                              for i in range(s.shape[0])])
    else:
        top_scores = np.take_along_axis(s, ranking, axis=1)
        per_query = ndcg_from_ranking(ranking, relevance, k, ideal, scores=top_scores, ties=ties)
    if np.all(np.isnan(per_query)):
        raise ValueError("ndcg_at_k: no query has a relevant document")
    return float(np.nanmean(per_query) * 100.0)


def relevance_matrix(
    qrels: Mapping[Any, Mapping[Any, float]], query_ids: Sequence[Any], doc_ids: Sequence[Any]
) -> np.ndarray:
    """Dense graded relevance [len(query_ids), len(doc_ids)] from {query: {doc: grade}};
    judged documents that are not in `doc_ids` are ignored."""
    col = {d: j for j, d in enumerate(doc_ids)}
    if len(col) != len(doc_ids):
        raise ValueError("relevance_matrix: doc_ids contains duplicates")
    rel = np.zeros((len(query_ids), len(doc_ids)), dtype=np.float32)
    for i, q in enumerate(query_ids):
        for d, grade in qrels.get(q, {}).items():
            if d in col:
                rel[i, col[d]] = grade
    return rel


def assign_modes(n_docs: int, seed: int = 42) -> list[str]:
    """1:1:1 text / modal / mixed modes, shuffled as GR-CLIP's script does
    (`random.seed(seed)`, then `random.sample`), so the same seed gives its corpus."""
    rng = random.Random(seed)
    perm = rng.sample(range(n_docs), n_docs)
    modes = [""] * n_docs
    for i, doc in enumerate(perm):
        modes[doc] = MODES[i % 3]
    return modes


def _modes(doc_modes: Sequence[str], n: int) -> np.ndarray:
    if len(doc_modes) != n:
        raise ValueError(f"doc_modes has {len(doc_modes)} entries for {n} documents")
    modes = np.array([_MODE_ALIASES.get(m, m) for m in doc_modes], dtype=object)
    bad = [i for i, m in enumerate(modes) if m not in MODES]
    if bad:
        raise ValueError(
            f"doc_modes[{bad[0]}] = {doc_modes[bad[0]]!r}; known: {MODES} (or 'image')"
        )
    return modes


def _centre(x: np.ndarray, mean: Any, name: str) -> np.ndarray:
    if mean is None:
        return x
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    if m.shape[0] != x.shape[1]:
        raise ValueError(f"{name}: dimension {m.shape[0]} does not match embeddings' {x.shape[1]}")
    return x - m


def mixed_corpus_embeddings(
    doc_text: Any,
    doc_modal: Any,
    doc_modes: Sequence[str],
    *,
    alpha: float = 0.5,
    text_mean: Any = None,
    modal_mean: Any = None,
) -> np.ndarray:
    """Document vectors [nd, d] (unit rows) for a corpus of mixed modes.

    doc_text / doc_modal: [nd, d]; only the rows a document's mode uses are read
    (others may be zeros). text_mean / modal_mean: per-modality means to remove (GR-CLIP),
    or None to keep the raw vectors. A mixed document is alpha * text + (1 - alpha) *
    modal, and its mean alpha * text_mean + (1 - alpha) * modal_mean.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    text = as_matrix(doc_text, "doc_text")
    modal = as_matrix(doc_modal, "doc_modal", dim=text.shape[1])
    if modal.shape[0] != text.shape[0]:
        raise ValueError(f"doc_text has {text.shape[0]} rows, doc_modal {modal.shape[0]}")
    modes = _modes(doc_modes, text.shape[0])
    out = np.zeros_like(text)
    use_t, use_m = modes != "modal", modes != "text"  # rows that read each part
    t = text.copy()
    m = modal.copy()
    t[use_t] = _centre(l2_normalise(text[use_t], "doc_text"), text_mean, "text_mean")
    m[use_m] = _centre(l2_normalise(modal[use_m], "doc_modal"), modal_mean, "modal_mean")
    out[modes == "text"] = t[modes == "text"]
    out[modes == "modal"] = m[modes == "modal"]
    mixed = modes == "mixed"
    out[mixed] = alpha * t[mixed] + (1.0 - alpha) * m[mixed]
    return l2_normalise(out, "document vector").astype(np.float32)


@dataclass
class MixedSearchResult:
    """ranking: int [nq, k] document indices, best first; scores: float32 [nq, k];
    mode_share: percent of all top-k slots taken by each mode (the bias GR-CLIP
    removes shows up here); ndcg: mean NDCG@k in percent and per_query_ndcg [nq], when
    relevance was given."""

    ranking: np.ndarray
    scores: np.ndarray
    mode_share: dict[str, float]
    ndcg: float | None = None
    per_query_ndcg: np.ndarray | None = None


def mixed_modality_search(
    query_emb: Any,
    doc_text: Any,
    doc_modal: Any,
    doc_modes: Sequence[str],
    *,
    alpha: float = 0.5,
    query_mean: Any = None,
    text_mean: Any = None,
    modal_mean: Any = None,
    k: int = 10,
    relevance: Any = None,
    ideal: str = "all",
    ties: str = "rank",
    block: int | tuple[int, int] | None = None,
) -> MixedSearchResult:
    """Rank a mixed corpus for each query (GR-CLIP), optionally scoring NDCG@k.

    query_emb: [nq, d]; doc_text, doc_modal, doc_modes: see `mixed_corpus_embeddings`.
    query_mean / text_mean / modal_mean: the per-modality means to remove (all None:
    plain CLIP-style ranking; all given: GR-CLIP). relevance: graded [nq, nd] or None.
    ideal / ties: how NDCG is computed (module docstring; GR-CLIP: "retrieved" /
    "average"). The corpus is ranked in blocks with a running top-k (`block`, see
    `textme.metrics._common`): no [nq, nd] matrix is built.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    docs = mixed_corpus_embeddings(doc_text, doc_modal, doc_modes, alpha=alpha,
                                   text_mean=text_mean, modal_mean=modal_mean)
    q = l2_normalise(as_matrix(query_emb, "query_emb", dim=docs.shape[1]), "query_emb")
    q = l2_normalise(_centre(q, query_mean, "query_mean"), "centred query")
    ranking, scores = block_top_k(q, docs, k, block=block)
    k = ranking.shape[1]
    modes = _modes(doc_modes, docs.shape[0])
    taken = modes[ranking].ravel()
    share = {m: float(np.mean(taken == m) * 100.0) if taken.size else 0.0 for m in MODES}
    result = MixedSearchResult(ranking, scores, share)
    if relevance is not None:
        rel = _relevance(relevance, (q.shape[0], docs.shape[0]))
        per_query = ndcg_from_ranking(ranking, rel, k, ideal, scores=scores, ties=ties)
        result.per_query_ndcg = per_query
        if not np.all(np.isnan(per_query)):
            result.ndcg = float(np.nanmean(per_query) * 100.0)
    return result
