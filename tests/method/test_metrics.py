"""Metrics on hand-built embeddings whose answers are known."""

import random

import numpy as np
import pytest
import torch

from textme.metrics import (
    median_rank,
    metric_options,
    target_ranks,
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


# --------------------------------------------------------------------------- official variants
# Each official variant is pinned twice: on a small crafted case where it differs from
# ours, and against the released code's formula (transcribed here as the oracle).


def _official_recall_metrics(sim: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """TextME eval_utils.get_recall_metrics (query i <-> item i)."""
    order = torch.argsort(sim, dim=-1, descending=True)
    ranks = torch.tensor([int(torch.where(order[i] == i)[0][0]) for i in range(sim.shape[0])])
    out = {f"R@{k}": float((ranks < k).sum().item() * 100 / len(ranks)) for k in ks}
    out["MedianR"] = float(torch.median(ranks.float() + 1).item())
    out["MeanR"] = float(torch.mean(ranks.float() + 1).item())
    return out


def test_median_rank_even_count_lower_vs_average():
    items = _angles([0, 90, 180, 270])
    queries = _angles([0, 30, 0, 270])  # ranks 1, 2, 4, 1 (see above)
    ours = retrieval_metrics(queries, items, ks=(1,))
    official = retrieval_metrics(queries, items, ks=(1,), median="lower")
    assert ours["median_rank"] == 1.5 and official["median_rank"] == 1.0
    assert official["median_rank"] == float(torch.median(torch.tensor([1.0, 2.0, 4.0, 1.0])))
    odd = np.array([3, 1, 2])
    assert median_rank(odd) == median_rank(odd, "lower") == 2.0
    assert median_rank(np.array([1, 2, 3, 4, 5, 6]), "lower") == 3.0
    with pytest.raises(ValueError, match="median must be one of"):
        retrieval_metrics(queries, items, median="upper")


def test_official_median_equals_official_formula(rng):
    q = unit_rows(rng.normal(size=(40, 8)))  # even count, no exact ties
    items = unit_rows(q + 0.8 * rng.normal(size=q.shape))
    ours = retrieval_metrics(q, items, ks=(1, 5, 10), median="lower")
    ref = _official_recall_metrics(torch.from_numpy(q @ items.T))
    for k in (1, 5, 10):
        assert ours[f"R@{k}"] == pytest.approx(ref[f"R@{k}"])
    assert ours["median_rank"] == ref["MedianR"] and ours["mean_rank"] == pytest.approx(ref["MeanR"])
    assert retrieval_metrics(q, items)["median_rank"] == float(np.median(retrieval_ranks(q, items)))


def _official_accuracy(sim: torch.Tensor, labels: list[str], class_names: list[str], ks=(1, 5)) -> dict:
    """TextME eval_utils.get_accuracy_metrics, the non-ImageNet branch (names compared)."""
    out = {}
    for k in ks:
        correct = 0
        for i in range(sim.shape[0]):
            if k == 1:
                correct += labels[i] == class_names[int(torch.argmax(sim[i]))]
            else:
                top = torch.topk(sim[i], k).indices.tolist()
                correct += labels[i] in [class_names[j] for j in top]
        out[f"top{k}"] = float(correct * 100 / len(labels))
    return out


def test_zero_shot_by_name_merges_duplicate_class_names():
    classes = _angles([0, 90, 10])  # class 2 is a second "cat", right beside class 0
    names = ["cat", "dog", "cat"]
    items = _angles([12, 85, 2])
    labels = [0, 1, 0]  # item 0 lies nearest the *other* cat
    by_index = zero_shot_accuracy(items, classes, labels, ks=(1, 2), class_names=names)
    by_name = zero_shot_accuracy(items, classes, labels, ks=(1, 2), class_names=names, match="name")
    assert by_index["top1"] == pytest.approx(200 / 3) and by_name["top1"] == 100.0
    assert by_index["top2"] == 100.0
    # labels may be names; by index a duplicated name is ambiguous
    assert zero_shot_accuracy(items, classes, ["cat", "dog", "cat"], ks=(1,), class_names=names,
                              match="name")["top1"] == 100.0
    with pytest.raises(ValueError, match="'cat' names classes \\[0, 2\\]: ambiguous"):
        zero_shot_accuracy(items, classes, ["cat", "dog", "cat"], class_names=names)
    with pytest.raises(ValueError, match='match="name" needs class_names'):
        zero_shot_accuracy(items, classes, labels, match="name")


def test_zero_shot_ties_first_index_vs_against():
    classes = _angles([0, 0, 90])  # classes 0 and 1 are the same vector: an exact tie
    items = _angles([0, 0])
    labels = [0, 1]
    against = zero_shot_accuracy(items, classes, labels, ks=(1, 2))
    first = zero_shot_accuracy(items, classes, labels, ks=(1, 2), ties="first")
    assert against["top1"] == 0.0 and against["top2"] == 100.0
    assert first["top1"] == 50.0  # argmax gives the tie to class 0: item 0 right, item 1 wrong
    ref = _official_accuracy(torch.from_numpy(items @ classes.T), ["a", "b"], ["a", "b", "c"], ks=(1,))
    assert first["top1"] == ref["top1"]


def test_official_zero_shot_equals_official_formula(rng):
    classes = unit_rows(rng.normal(size=(12, 8)))
    names = [f"c{i % 9}" for i in range(12)]  # c0, c1, c2 appear twice
    y = rng.integers(0, 12, size=200)
    items = unit_rows(classes[y] + 0.9 * rng.normal(size=(200, 8)))
    labels = [names[i] for i in y]
    ours = zero_shot_accuracy(items, classes, labels, ks=(1, 5), class_names=names,
                              **metric_options("official", "classification"))
    ref = _official_accuracy(torch.from_numpy(items @ classes.T), labels, names)
    assert ours["top1"] == pytest.approx(ref["top1"]) and ours["top5"] == pytest.approx(ref["top5"])
    by_index = zero_shot_accuracy(items, classes, y, ks=(1, 5))
    assert ours["top1"] > by_index["top1"]  # merged duplicates only ever help


def _gr_clip_ndcg(sims: torch.Tensor, rel: np.ndarray, k: int, top_idx: np.ndarray) -> float:
    """GR-CLIP retrieval_mixbench.compute_ndcg's scoring loop. Its top k come from
    torch.topk, which picks arbitrarily among scores tied at the k-th place; the test
    hands it the top k (ties to the lower index, ours) in place of that call."""
    from sklearn.metrics import ndcg_score

    out = []
    for i in range(sims.shape[0]):
        top = torch.from_numpy(top_idx[i])  # torch.topk(sims[i], k=k).indices
        out.append(ndcg_score([rel[i, top.numpy()].tolist()], [sims[i, top].numpy()], k=k))
    return float(np.mean(out))


def test_ndcg_tie_averaging_vs_ranked_positions():
    # docs 0 and 1 tie at the top; only doc 1 is relevant
    scores = np.array([[0.9, 0.9, 0.1]])
    relevance = np.array([[0, 1, 0]])
    ranked = ndcg_at_k(scores, relevance, k=2)  # doc 0 first (lower index): 1/log2(3)
    averaged = ndcg_at_k(scores, relevance, k=2, ties="average")  # both share (1 + 1/log2 3)/2
    assert ranked == pytest.approx(100 / np.log2(3))
    assert averaged == pytest.approx(100 * (1 + 1 / np.log2(3)) / 2)
    from sklearn.metrics import ndcg_score

    assert averaged == pytest.approx(100 * ndcg_score(relevance, scores, k=2))
    with pytest.raises(ValueError, match="needs the scores"):
        ndcg_from_ranking(np.array([[0, 1]]), relevance, k=2, ideal="retrieved", ties="average")
    with pytest.raises(ValueError, match='needs ideal="retrieved"'):
        ndcg_from_ranking(np.array([[0, 1]]), relevance, k=2, scores=scores, ties="average")


def test_official_ndcg_equals_gr_clip_formula(rng):
    # quantised scores: many exact ties, inside the top k and across its edge
    sims = np.round(rng.uniform(size=(30, 40)) * 8) / 8
    rel = (rng.uniform(size=(30, 40)) < 0.3).astype(float) * rng.integers(1, 3, size=(30, 40))
    rel[0] = 0  # a query without any relevant document: 0 for GR-CLIP
    ours = ndcg_at_k(sims, rel, k=10, **metric_options("official", "ndcg"))
    from textme.metrics import top_k

    ref = _gr_clip_ndcg(torch.from_numpy(sims), rel, 10, top_k(sims, 10))
    assert ours == pytest.approx(100 * ref)
    assert ours != pytest.approx(ndcg_at_k(sims, rel, k=10))  # paper's definition differs here
    # ideal="all" with tie averaging: sklearn on the whole row gives the same
    from sklearn.metrics import ndcg_score

    rows = [i for i in range(30) if rel[i].any()]
    full = np.mean([ndcg_score(rel[i : i + 1], sims[i : i + 1], k=10) for i in rows])
    assert ndcg_at_k(sims, rel, k=10, ties="average") == pytest.approx(100 * full)


def test_metric_options_name_every_variant():
    assert metric_options("paper", "retrieval") == {"median": "average"}
    assert metric_options("official", "ndcg") == {"ideal": "retrieved", "ties": "average"}
    with pytest.raises(ValueError, match="expected one of paper, official"):
        metric_options("released", "ndcg")


# --------------------------------------------------------------------------- block-wise ranking


def _tied_units(rng, n, d=16):
    """Unit rows with entries +-1/4 (d=16): every dot product is a multiple of 1/16 and
    exact in float32 whatever the summation order, so exact ties are plentiful."""
    return (rng.choice([-0.25, 0.25], size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("block", [(7, 5), (1, 1), (64, 3), 1000])
def test_blockwise_retrieval_equals_one_piece(rng, block):
    items = _tied_units(rng, 53)
    items[10] = items[3]  # duplicate items: tied targets
    query_item = rng.integers(0, 53, size=90)
    queries = _tied_units(rng, 90)
    queries[:20] = items[query_item[:20]]
    one_piece = target_ranks(queries @ items.T, query_item)
    assert np.array_equal(retrieval_ranks(queries, items, query_item, block=block), one_piece)
    assert np.array_equal(retrieval_ranks(queries, items, query_item), one_piece)


def test_blockwise_ranks_equal_one_product_on_real_valued_data(rng):
    # float32 products differ in their last bit with the matrices' shapes; the blocks
    # accumulate in float64 (`similarities`), so any block shape gives the same ranks
    from textme.metrics import similarities
    from textme.metrics._common import l2_normalise

    q = l2_normalise(rng.normal(size=(200, 32)).astype(np.float32), "q")
    g = l2_normalise(rng.normal(size=(3000, 32)).astype(np.float32), "g")
    targets = rng.integers(0, 3000, size=200)
    one_product = target_ranks(similarities(q, g), targets)
    for block in [(64, 700), (200, 2999)]:
        assert np.array_equal(retrieval_ranks(q, g, targets, block=block), one_product), block


def test_similarities_do_not_depend_on_block_shape(rng):
    # A float32 BLAS product of a (7 x 4999) block need not round like the same entries
    # of the whole product (OpenBLAS here: ~1000 of 6M entries differ in the last bit,
    # enough to move near-tied ranks); accumulated in float64 they are the same.
    from textme.metrics import similarities
    from textme.metrics._common import l2_normalise

    q = l2_normalise(rng.normal(size=(300, 32)).astype(np.float32), "q")
    g = l2_normalise(rng.normal(size=(20000, 32)).astype(np.float32), "g")
    whole = similarities(q, g)
    blocks = np.empty_like(whole)
    for i in range(0, 300, 7):
        for j in range(0, 20000, 4999):
            blocks[i : i + 7, j : j + 4999] = similarities(q[i : i + 7], g[j : j + 4999])
    assert np.array_equal(blocks, whole)


@pytest.mark.parametrize("ties", ["against", "first"])
@pytest.mark.parametrize("match", ["index", "name"])
def test_blockwise_zero_shot_equals_one_piece(rng, ties, match):
    classes = _tied_units(rng, 11)
    classes[4] = classes[1]
    names = ["a", "b", "c", "a", "d", "e", "b", "f", "g", "h", "i"]
    y = rng.integers(0, 11, size=70)
    items = _tied_units(rng, 70)
    whole = zero_shot_accuracy(items, classes, y, ks=(1, 3), class_names=names, match=match, ties=ties,
                               block=10_000)
    for block in [(3, 2), (1, 1), (16, 4)]:
        assert zero_shot_accuracy(items, classes, y, ks=(1, 3), class_names=names, match=match, ties=ties,
                                  block=block) == whole
    if match == "index":  # the one-piece reference
        sim = items @ classes.T
        assert whole["top1"] == pytest.approx(np.mean(target_ranks(sim, y, ties=ties) <= 1) * 100)


def test_block_top_k_equals_stable_argsort(rng):
    from textme.metrics import block_top_k, top_k

    g = _tied_units(rng, 97)
    q = _tied_units(rng, 33)
    sim = q @ g.T
    for k in (1, 5, 97, 200):
        want = top_k(sim, k)
        for block in [(4, 7), (33, 97), (1, 1), (8, 30)]:
            idx, scores = block_top_k(q, g, k, block=block)
            assert np.array_equal(idx, want), (k, block)
            assert np.array_equal(scores, np.take_along_axis(sim, want, axis=1))


def test_streamed_top_k_over_uneven_blocks_equals_block_top_k(rng):
    from textme.metrics import block_top_k, streamed_top_k

    g = _tied_units(rng, 97)  # exact ties across block borders: the lower row still wins
    q = _tied_units(rng, 9)
    cuts = [0, 1, 1, 30, 64, 97]  # one empty block
    blocks = [g[a:b] for a, b in zip(cuts, cuts[1:])]
    for k in (1, 5, 97, 200):
        want_idx, want_scores = block_top_k(q, g, k)
        idx, scores = streamed_top_k(q, iter(blocks), k, block=(4, 7))
        assert np.array_equal(idx, want_idx) and np.array_equal(scores, want_scores), k
    empty_idx, _ = streamed_top_k(q, iter([]), 3)
    assert empty_idx.shape == (9, 0)


def test_mixed_search_blockwise_equals_one_piece():
    queries, doc_text, doc_modal, modes, relevance, means = _gapped_corpus(n_topics=12)
    a = mixed_modality_search(queries, doc_text, doc_modal, modes, relevance=relevance, k=10, **means)
    b = mixed_modality_search(queries, doc_text, doc_modal, modes, relevance=relevance, k=10, block=(5, 7),
                              **means)
    assert np.array_equal(a.ranking, b.ranking) and a.ndcg == b.ndcg and a.mode_share == b.mode_share
