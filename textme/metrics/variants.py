"""Named sets of metric options: our definitions, or the released code's.

`paper` is the textbook definition of every metric (our defaults). `official` is what
the released code computes, so its published numbers can be matched exactly:

| metric | paper (ours, default) | official (released code) |
|---|---|---|
| median rank | mean of the two middle ranks (`median="average"`) | `torch.median`: the lower one (`median="lower"`) |
| zero-shot | class index must match (`match="index"`), ties against (`ties="against"`) | class *name* must match (`match="name"`), argmax's first index wins a tie (`ties="first"`) |
| NDCG@k | ideal from all judged documents, positions as ranked (`ideal="all"`, `ties="rank"`) | GR-CLIP: `sklearn.metrics.ndcg_score` on the top k (`ideal="retrieved"`, `ties="average"`) |

    from textme.metrics import metric_options, retrieval_metrics
    retrieval_metrics(q, items, **metric_options("official", "retrieval"))
"""

from __future__ import annotations

#: Names of the option sets, ours first.
METRIC_VARIANTS = ("paper", "official")

_OPTIONS: dict[str, dict[str, dict[str, str]]] = {
    "paper": {
        "retrieval": {"median": "average"},
        "classification": {"match": "index", "ties": "against"},
        "ndcg": {"ideal": "all", "ties": "rank"},
    },
    "official": {
        "retrieval": {"median": "lower"},
        "classification": {"match": "name", "ties": "first"},
        "ndcg": {"ideal": "retrieved", "ties": "average"},
    },
}

#: The metric functions each kind's options are for.
KINDS = {
    "retrieval": "retrieval_metrics",
    "classification": "zero_shot_accuracy",
    "ndcg": "ndcg_at_k, ndcg_from_ranking, mixed_modality_search",
}


def metric_options(variant: str, kind: str) -> dict[str, str]:
    """Keyword options for the metric functions of `kind` ("retrieval",
    "classification", "ndcg") under `variant` ("paper" or "official")."""
    if variant not in _OPTIONS:
        raise ValueError(f"metric variant {variant!r}: expected one of {', '.join(METRIC_VARIANTS)}")
    if kind not in KINDS:
        raise ValueError(f"metric kind {kind!r}: expected one of {', '.join(KINDS)}")
    return dict(_OPTIONS[variant][kind])
