"""Metrics on hand-built embeddings whose answers are known."""

import random

import numpy as np
import pytest
import torch

from textme.metrics import (
    assign_modes,
    class_embeddings,
    labels_to_relevance,
    mean_average_precision,
    mixed_corpus_embeddings,
    mixed_modality_search,
    ndcg_at_k,
    ndcg_from_ranking,
    ppr,
    query_item_from_counts,
    relevance_matrix,
    retrieval_metrics,
    retrieval_ranks,
    zero_shot_accuracy,
)

from .helpers import unit_rows


def _angles(deg):
    rad = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_one_caption_per_item_known_ranks():
    items = _angles([0, 90, 180, 270])
    # query 0 sits on item 0; query 1 is nearest item 0 (rank 2 for item 1);
    # query 2 points at item 0, opposite its item 2 (rank 4); query 3 sits on item 3
    queries = _angles([0, 30, 0, 270])
    ranks = retrieval_ranks(queries, items)
    assert ranks.tolist() == [1, 2, 4, 1]
    m = retrieval_metrics(queries, items, ks=(1, 2))
    assert m["R@1"] == 50.0 and m["R@2"] == 75.0
    assert m["median_rank"] == 1.5 and m["mean_rank"] == 2.0
    assert (m["n_queries"], m["n_items"]) == (4, 4)


def test_multi_caption_each_caption_counts_and_finds_its_item():
    items = _angles([0, 120, 240])
    counts = [2, 3, 1]
    query_item = query_item_from_counts(counts)
    assert query_item.tolist() == [0, 0, 1, 1, 1, 2]
    # captions of item 1: one exact, one near item 0 (wrong), one near item 1
    queries = _angles([5, -5, 120, 10, 110, 240])
    m = retrieval_metrics(queries, items, query_item)
    assert m["R@1"] == pytest.approx(100 * 5 / 6)
    assert m["n_queries"] == 6 and m["n_items"] == 3
    with pytest.raises(ValueError, match="query_item"):
        retrieval_metrics(queries, items)  # 6 captions, 3 items, no mapping
    with pytest.raises(ValueError, match=r"query_item\[5\] = 3"):
        retrieval_metrics(queries, items, [0, 0, 1, 1, 1, 3])


def test_ties_count_against_the_query():
    items = np.ones((5, 3), dtype=np.float32)  # a collapsed model: all items identical
    ranks = retrieval_ranks(items, items)
    assert ranks.tolist() == [5] * 5
    assert retrieval_metrics(items, items)["R@1"] == 0.0


def test_retrieval_accepts_torch_and_scales():
    rng = np.random.default_rng(0)
    x = unit_rows(rng.normal(size=(1500, 16)))  # more than one block of queries
    assert retrieval_metrics(torch.from_numpy(x) * 3, x)["R@1"] == 100.0


def test_class_embeddings_average_normalised_templates():
    templates = np.array([
        [[2.0, 0.0], [0.0, 1.0]],   # class 0: unit (1,0) and (0,1) -> (1,1)/sqrt2
        [[-1.0, 0.0], [-5.0, 0.0]],  # class 1: -> (-1, 0)
    ], dtype=np.float32)
    out = class_embeddings(templates)
    np.testing.assert_allclose(out, [[2 ** -0.5, 2 ** -0.5], [-1.0, 0.0]], atol=1e-6)
    ragged = class_embeddings([templates[0], templates[1][:1]])
    np.testing.assert_allclose(ragged, out, atol=1e-6)


def test_zero_shot_top1_top5():
    classes = _angles(np.arange(0, 360, 30))  # 12 classes around the circle
    items = _angles([0, 40, 100, 180])
    labels = [0, 1, 5, 0]
    # item 0 exact; item 1 (40 deg) nearest class 1 (30); item 2 (100 deg) nearest 3,
    # class 5 (150) is 5th nearest; item 3 (180) is opposite class 0: rank 12
    m = zero_shot_accuracy(items, classes, labels)
    assert m["top1"] == 50.0 and m["top5"] == 75.0 and m["n"] == 4
    with pytest.raises(ValueError, match=r"labels\[1\] = 12"):
        zero_shot_accuracy(items, classes, [0, 12, 0, 0])


def test_average_precision_by_hand_and_with_ties():
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.1, 0.0]])
    relevance = np.array([[1, 0, 1, 0], [0, 1, 0, 0]])
    # row 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2; row 1: tie at the top, the hit
    # shares the cut-off with a miss -> precision 1/2
    expected = ((1 + 2 / 3) / 2 + 0.5) / 2 * 100
    assert mean_average_precision(scores, relevance) == pytest.approx(expected)
    rel = labels_to_relevance([[0, 2], [1]], 4)
    assert rel.tolist() == [[True, False, True, False], [False, True, False, False]]


def test_ndcg_graded_by_hand():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    relevance = np.array([[0, 2, 1, 3]])
    # top-3 order: docs 0, 1, 2 -> gains 0, 2, 1
    dcg = 0 / np.log2(2) + 2 / np.log2(3) + 1 / np.log2(4)
    ideal_all = 3 / np.log2(2) + 2 / np.log2(3) + 1 / np.log2(4)
    ideal_retrieved = 2 / np.log2(2) + 1 / np.log2(3) + 0 / np.log2(4)
    assert ndcg_at_k(scores, relevance, k=3) == pytest.approx(100 * dcg / ideal_all)
    retrieved = ndcg_at_k(scores, relevance, k=3, ideal="retrieved")
    assert retrieved == pytest.approx(100 * dcg / ideal_retrieved)
    perfect = np.array([[0.1, 0.8, 0.7, 0.9]])  # orders docs 3, 1, 2, 0: the ideal
    assert ndcg_at_k(perfect, relevance, k=4) == pytest.approx(100.0)
    assert ndcg_at_k(-perfect, relevance, k=4) < ndcg_at_k(scores, relevance, k=4)


def test_ndcg_queries_without_relevant_documents():
    per = ndcg_from_ranking(np.array([[0, 1], [1, 0]]), np.array([[1, 0], [0, 0]]), k=2)
    assert per[0] == 1.0 and np.isnan(per[1])
    assert ndcg_at_k(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1, 0], [0, 0]]), k=2) == 100.0
    with pytest.raises(ValueError, match="no query"):
        ndcg_at_k(np.ones((1, 2)), np.zeros((1, 2)))


def test_relevance_matrix_from_qrels():
    qrels = {"q1": {"d2": 2, "dx": 1}, "q2": {"d1": 1}}
    rel = relevance_matrix(qrels, ["q1", "q2", "q3"], ["d1", "d2"])
    assert rel.tolist() == [[0, 2], [1, 0], [0, 0]]


def test_ppr():
    assert ppr(51.66, 77.70) == pytest.approx(66.49, abs=0.01)  # the paper's Flickr number
    with pytest.raises(ValueError):
        ppr(1.0, 0.0)


def test_assign_modes_matches_gr_clip_script():
    n = 10
    random.seed(42)  # what retrieval_mixbench.py does, with its own corpus list
    perm = random.sample(range(n), n)
    expected = [None] * n
    for i in range(n):
        expected[perm[i]] = ["text", "image", "mixed"][i % 3]
    expected = ["modal" if m == "image" else m for m in expected]
    assert assign_modes(n, seed=42) == expected
    assert sorted(assign_modes(9).count(m) for m in ("text", "modal", "mixed")) == [3, 3, 3]


def test_mixed_document_vector_is_alpha_fusion_of_centred_parts():
    t = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    m = np.array([[0.0, 1.0, 0.0]], dtype=np.float32)
    mu_t, mu_m = np.array([0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.5])
    out = mixed_corpus_embeddings(t, m, ["mixed"], alpha=0.25, text_mean=mu_t, modal_mean=mu_m)
    want = 0.25 * (t[0] - mu_t) + 0.75 * (m[0] - mu_m)
    np.testing.assert_allclose(out[0], want / np.linalg.norm(want), atol=1e-6)
    # a text-only document never reads its (empty) modal row, and "image" means modal
    modal_rows = np.vstack([np.zeros((1, 3)), m])
    out = mixed_corpus_embeddings(np.vstack([t, t]), modal_rows, ["text", "image"])
    np.testing.assert_allclose(out, np.vstack([t, m]), atol=1e-6)
    with pytest.raises(ValueError, match=r"doc_modes\[0\] = 'audio'"):
        mixed_corpus_embeddings(t, m, ["audio"])


def _gapped_corpus(seed=0, n_topics=30, per_topic=10, d=16, gap=4.0):
    """Text queries, one per topic; documents (text, modal or both) of the same topic
    are relevant. Both towers share the topic signal; each adds its own constant gap."""
    rng = np.random.default_rng(seed)
    c_text, c_modal = (gap * v / np.linalg.norm(v) for v in rng.normal(size=(2, d)))
    topics = rng.normal(size=(n_topics, d))
    topic_of_doc = np.repeat(np.arange(n_topics), per_topic)
    z = topics[topic_of_doc] + 0.5 * rng.normal(size=(topic_of_doc.size, d))
    doc_text = unit_rows(z + c_text + 0.3 * rng.normal(size=z.shape))
    doc_modal = unit_rows(z + c_modal + 0.3 * rng.normal(size=z.shape))
    queries = unit_rows(topics + c_text + 0.3 * rng.normal(size=topics.shape))
    modes = assign_modes(topic_of_doc.size, seed=seed)
    relevance = (topic_of_doc[None, :] == np.arange(n_topics)[:, None]).astype(float)
    means = dict(query_mean=queries.mean(0), text_mean=doc_text.mean(0),
                 modal_mean=doc_modal.mean(0))
    return queries, doc_text, doc_modal, modes, relevance, means


def test_gap_removal_fixes_mixed_modality_ranking():
    queries, doc_text, doc_modal, modes, relevance, means = _gapped_corpus()
    plain = mixed_modality_search(queries, doc_text, doc_modal, modes, relevance=relevance, k=10)
    fixed = mixed_modality_search(queries, doc_text, doc_modal, modes, relevance=relevance, k=10,
                                  **means)
    # without removal, modal-only documents all but vanish from the top 10 (the gap
    # puts every text document closer to a text query) and NDCG suffers
    assert plain.mode_share["modal"] < 10 and fixed.mode_share["modal"] > 25
    assert fixed.ndcg > plain.ndcg + 15, (plain.ndcg, fixed.ndcg)
    assert plain.ranking.shape == (30, 10) and plain.per_query_ndcg.shape == (30,)
    assert np.all(np.diff(fixed.scores, axis=1) <= 1e-6)  # best first


def test_mixed_search_without_relevance_and_bad_shapes():
    queries, doc_text, doc_modal, modes, _, _ = _gapped_corpus(n_topics=3)
    res = mixed_modality_search(queries, doc_text, doc_modal, modes, k=50)
    assert res.ranking.shape == (3, 30) and res.ndcg is None
    assert sum(res.mode_share.values()) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="30 entries for 29"):
        mixed_modality_search(queries, doc_text[:29], doc_modal[:29], modes)
