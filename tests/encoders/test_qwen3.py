"""The Qwen3-Embedding pivot, run through its real loading code on a tiny saved Qwen3Model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textme.encoders import EncoderInputError, get_encoder
from textme.encoders import qwen3 as qwen3_mod
from textme.encoders.qwen3 import (DEFAULT_INSTRUCTION, format_query, last_token_pool, left_pad,
                                   length_sorted_order)

TEXTS = [
    "A dog runs across the grass.",
    "A cat.",
    "Two people walk along the river at night while it rains, as birds sing near a barking dog.",
    "A red car waits at the station.",
    "A small bird sleeps under a wooden table in the kitchen.",
    "A horse.",
]


@pytest.fixture
def pivot(tiny_qwen3):
    return get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu")


def test_identity_is_json_and_needs_no_weights(pivot):
    text_id, query_id = pivot.identity("text"), pivot.identity("query")
    assert pivot._model is None  # identity() did not load the weights
    json.dumps(text_id)
    for key in ("adapter", "embed_code_version", "tower", "model", "sha256", "pooling", "padding",
                "max_length", "dtype", "normalisation"):
        assert key in text_id, key
    assert text_id["tower"] == "text" and query_id["tower"] == "query"
    assert "instruction" not in text_id
    assert query_id["instruction"] == DEFAULT_INSTRUCTION
    assert text_id["dtype"] == "float32" and text_id["pooling"] == "last_token"
    assert not {"device", "batch_size", "progress"} & set(text_id)


def test_identity_tracks_output_options_only(tiny_qwen3):
    base = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu").identity("query")
    same = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu", batch_size=3,
                       max_batch_tokens=100, attn="eager").identity("query")
    assert same == base
    for change in ({"max_length": 64}, {"instruction": "Find the caption"}, {"dim": 16}, {"dtype": "bfloat16"}):
        other = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu", **change)
        assert other.identity("query") != base, change


def test_output_shape_norm_and_dim_from_model(pivot):
    vecs = pivot.encode_text(TEXTS)
    assert vecs.dtype == np.float32 and vecs.shape == (len(TEXTS), 32) == (len(TEXTS), pivot.dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert np.abs(vecs[0] - vecs[1]).max() > 1e-3  # different texts, different vectors


def test_deterministic_across_instances(tiny_qwen3):
    a = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu").encode_text(TEXTS)
    b = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu").encode_text(TEXTS)
    np.testing.assert_array_equal(a, b)


def test_batch_order_independence(pivot):
    alone = np.concatenate([pivot.encode_text([t]) for t in TEXTS])
    together = pivot.encode_text(TEXTS, batch_size=len(TEXTS))
    perm = [3, 5, 0, 2, 1, 4]
    shuffled = pivot.encode_text([TEXTS[i] for i in perm], batch_size=4)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(shuffled, alone[perm], atol=1e-5)


def test_left_padding_and_last_token_pooling(pivot, tiny_qwen3):
    from transformers import AutoModel, AutoTokenizer

    pivot.encode_text(["warm up"])
    assert pivot._tokenizer.padding_side == "left"
    tok = AutoTokenizer.from_pretrained(str(tiny_qwen3))
    model = AutoModel.from_pretrained(str(tiny_qwen3)).eval()
    text = TEXTS[4]
    ids = tok([text], return_tensors="pt")
    assert ids["input_ids"][0, -1].item() == tok.eos_token_id  # the tokenizer appends EOS
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0, -1]  # unpadded: the last token's state
    expected = (hidden / hidden.norm()).numpy()
    got = pivot.encode_text([TEXTS[1], text], batch_size=2)[1]  # padded on the left in its batch
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_pool_helpers():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    hidden = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)
    assert last_token_pool(hidden, mask)[:, 0].tolist() == [2.0, 5.0]
    right_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert last_token_pool(hidden, right_mask)[:, 0].tolist() == [1.0, 5.0]
    assert length_sorted_order([2, 5, 5, 1]) == [1, 2, 0, 3]


def test_query_tower_uses_the_instruction_format(pivot):
    q = "what does a dog chase?"
    as_query = pivot.encode("query", [q])
    as_doc = pivot.encode("text", [format_query(DEFAULT_INSTRUCTION, q)])
    np.testing.assert_allclose(as_query, as_doc, atol=1e-6)
    assert format_query("Task", "q") == "Instruct: Task\nQuery:q"
    assert np.abs(as_query - pivot.encode("text", [q])).max() > 1e-3


def test_matryoshka_truncation_renormalises(tiny_qwen3, pivot):
    full = pivot.encode_text(TEXTS)
    short_enc = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu", dim=16)
    short = short_enc.encode_text(TEXTS)
    assert short.shape == (len(TEXTS), 16) and short_enc.dim == 16
    cut = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(short, cut, atol=1e-5)
    too_big = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu", dim=64)
    with pytest.raises(ValueError, match="dim 64 is larger than the model's hidden size 32"):
        too_big.dim


def test_token_budget_splits_long_batches(pivot, monkeypatch):
    real = qwen3_mod.embed_batch
    shapes: list[tuple[int, int]] = []

    def recording(model, seqs, *args, **kwargs):
        shapes.append((len(seqs), max(len(s) for s in seqs)))
        return real(model, seqs, *args, **kwargs)

    monkeypatch.setattr(qwen3_mod, "embed_batch", recording)
    texts = TEXTS + [TEXTS[2].replace("night", "noon"), TEXTS[2].replace("rains", "snows")]
    lengths = sorted((len(s) for s in pivot.tokenize("text", texts)), reverse=True)
    assert lengths[2] >= 0.75 * lengths[0]  # the three long texts could share a batch...
    pivot.max_batch_tokens = 2 * lengths[0]  # ...but only two fit the token budget
    got = pivot.encode_text(texts, batch_size=8)
    assert shapes[0] == (2, lengths[0]) and sum(n for n, _ in shapes) == len(texts)
    assert all(n * longest <= pivot.max_batch_tokens for n, longest in shapes)
    pivot.max_batch_tokens = None
    np.testing.assert_allclose(got, pivot.encode_text(texts, batch_size=8), atol=1e-5)


def test_truncation_at_max_length_is_reported(tiny_qwen3, caplog):
    enc = get_encoder("qwen3-embedding", path=str(tiny_qwen3), device="cpu", max_length=8)
    long_text = " ".join(TEXTS)
    seqs = enc.tokenize("text", [long_text, "A cat."])
    assert len(seqs[0]) == 8 and seqs[0][-1] == enc._tokenizer.eos_token_id
    assert "1 of 2 texts reach max_length=8" in caplog.text


SIMILAR = ["A dog runs across the grass.", "A cat runs across the grass.", "A bird sits on the table.",
           "A horse walks along the river.", "A child plays beside the wall.", "A robot waits at the station."]


def test_cuda_oom_halves_the_batch_and_continues(pivot, monkeypatch):
    lengths = [len(s) for s in pivot.tokenize("text", SIMILAR)]
    assert min(lengths) >= 0.75 * max(lengths)  # one batch by length: only memory splits it
    expected = pivot.encode_text(SIMILAR, batch_size=6)
    real = qwen3_mod.embed_batch
    sizes: list[int] = []

    def flaky(model, seqs, *args, **kwargs):
        sizes.append(len(seqs))
        if len(seqs) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, seqs, *args, **kwargs)

    monkeypatch.setattr(qwen3_mod, "embed_batch", flaky)
    got = pivot.encode_text(SIMILAR, batch_size=8)
    # a batch of all 6 fails; halved to 3: fits, and 3 is kept for the rest
    assert sizes == [6, 3, 3]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (["ok", ""], "text 1: empty string ''"),
    (["ok", "   "], "text 1: empty string"),
    (["ok", "fine", 3], "text 2: expected str, got int 3"),
    (["ok", None], "text 1: expected str, got NoneType None"),
    ("just one string", "expected a list of texts, got a single str"),
])
def test_bad_texts_are_named(pivot, bad, message):
    with pytest.raises(EncoderInputError, match=message):
        pivot.encode_text(bad)
    assert pivot._model is None  # refused before loading anything


def test_unknown_tower_and_empty_input(pivot):
    with pytest.raises(ValueError, match="has no tower 'modal'; towers: text, query"):
        pivot.encode_modal(["x.png"])
    assert pivot.encode_text([]).shape == (0, 32)
