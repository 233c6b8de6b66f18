"""Evaluation metrics on embeddings (numpy in, numbers out; no I/O).

Conventions: scores are percentages (0-100) as the papers report them; ranks are
1-based; ties count against the query (a collapsed model does not score well by
accident); inputs are numpy arrays or torch tensors, rows L2-normalised here.
"""

from textme.metrics._common import ppr, recall_at_k, target_ranks
from textme.metrics.classification import (
    average_precision,
    class_embeddings,
    labels_to_relevance,
    mean_average_precision,
    zero_shot_accuracy,
)
from textme.metrics.ranking import (
    MODES,
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

__all__ = [
    "ppr",
    "recall_at_k",
    "target_ranks",
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
