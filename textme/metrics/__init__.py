"""Evaluation metrics on embeddings (numpy in, numbers out; no I/O).

Conventions: scores are percentages (0-100) as the papers report them; ranks are
1-based; ties count against the query (a collapsed model does not score well by
accident); inputs are numpy arrays or torch tensors, rows L2-normalised here.
Galleries are ranked in blocks with bounded memory (`_common`), never as one
[queries, gallery] matrix. Where the released code defines a metric differently, its
definition is one option away (`variants`: `metric_options("official", kind)`).
"""

from textme.metrics._common import (
    GALLERY_BLOCK,
    MEDIANS,
    QUERY_BLOCK,
    TIES,
    block_top_k,
    group_ranks,
    median_rank,
    ppr,
    recall_at_k,
    similarities,
    streamed_top_k,
    target_ranks,
)
from textme.metrics.classification import (
    MATCHES,
    average_precision,
    class_embeddings,
    labels_to_relevance,
    mean_average_precision,
    zero_shot_accuracy,
)
from textme.metrics.ranking import (
    IDEALS,
    MODES,
    NDCG_TIES,
    MixedSearchResult,
    assign_modes,
    mixed_corpus_embeddings,
    mixed_modality_search,
    ndcg_at_k,
    ndcg_from_ranking,
    relevance_matrix,
    top_k,
)
from textme.metrics.retrieval import query_item_from_counts, retrieval_metrics, retrieval_ranks
from textme.metrics.variants import METRIC_VARIANTS, metric_options

__all__ = [
    "ppr",
    "recall_at_k",
    "target_ranks",
    "similarities",
    "group_ranks",
    "block_top_k",
    "streamed_top_k",
    "median_rank",
    "QUERY_BLOCK",
    "GALLERY_BLOCK",
    "TIES",
    "MEDIANS",
    "MATCHES",
    "IDEALS",
    "NDCG_TIES",
    "METRIC_VARIANTS",
    "metric_options",
    "retrieval_metrics",
    "retrieval_ranks",
    "query_item_from_counts",
    "class_embeddings",
    "zero_shot_accuracy",
    "average_precision",
    "mean_average_precision",
    "labels_to_relevance",
    "ndcg_at_k",
    "ndcg_from_ranking",
    "top_k",
    "relevance_matrix",
    "MODES",
    "MixedSearchResult",
    "assign_modes",
    "mixed_corpus_embeddings",
    "mixed_modality_search",
]
