"""The head input check (textme.head_check): a head's first BatchNorm against its inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textme import Offset, ProjectionHead, TrainConfig, train_projection
from textme.head_check import MAX_MEAN_SHIFT, VAR_RATIO_RANGE, check_head_inputs

from .helpers import unit_rows


def _data(rng, n=600, dim=32, out=16):
    """Unit text and modal vectors sharing a meaning, a constant gap between them, and
    pivot targets of the same meaning."""
    meaning = rng.standard_normal((n, 8))
    a = np.linalg.qr(rng.standard_normal((dim, 8)))[0]
    gap_t, gap_m = (0.8 * g / np.linalg.norm(g) for g in rng.standard_normal((2, dim)))
    text = unit_rows(meaning @ a.T / np.sqrt(8) + gap_t + 0.1 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    modal = unit_rows(meaning @ a.T / np.sqrt(8) + gap_m + 0.1 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    pivot = np.tanh(meaning @ rng.standard_normal((8, out))).astype(np.float32)
    return text, modal, pivot


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(7)
    text, modal, pivot = _data(rng)
    off = Offset.from_embeddings(text, modal)
    head, _ = train_projection(text[:400], pivot[:400], offset=off.text_mean,
                               config=TrainConfig(epochs=4, batch_size=64, device="cpu"))
    return head, text, modal, off


def test_unit_trained_head_fed_raw_scaled_vectors_is_a_mismatch(trained):
    head, _, modal, off = trained
    raw = modal[400:] * np.random.default_rng(0).uniform(8, 12, size=(200, 1)).astype(np.float32)
    check = check_head_inputs(head, raw - off.modal_mean)
    assert check.verdict == "mismatch" and not check.ok
    assert check.var_ratio > VAR_RATIO_RANGE[1] * 10 and check.mean_shift > MAX_MEAN_SHIFT
    assert check.n_rows == 200 and "median variance ratio" in check.figure()


def test_the_right_inputs_pass(trained):
    head, text, modal, off = trained
    for x in (modal[400:] - off.modal_mean, text[400:] - off.text_mean, modal[400:430] - off.modal_mean):
        check = check_head_inputs(head, x)
        assert check.verdict == "ok", check
        assert VAR_RATIO_RANGE[0] <= check.var_ratio <= VAR_RATIO_RANGE[1]


def test_a_raw_trained_head_fed_unit_vectors_is_a_mismatch(trained):
    _, text, modal, off = trained
    rng = np.random.default_rng(1)
    pivot = _data(np.random.default_rng(7))[2]
    raw_text = text * rng.uniform(8, 12, size=(len(text), 1)).astype(np.float32)
    head, _ = train_projection(raw_text[:400], pivot[:400], offset=off.text_mean,
                               config=TrainConfig(epochs=4, batch_size=64, device="cpu"))
    assert check_head_inputs(head, modal[400:] - off.modal_mean).var_ratio < VAR_RATIO_RANGE[0] / 10
    raw_modal = modal * rng.uniform(8, 12, size=(len(modal), 1)).astype(np.float32)
    assert check_head_inputs(head, raw_modal[400:] - off.modal_mean).verdict == "ok"


def test_short_training_is_de_biased(trained):
    """After a few batches the running statistics still hold much of their start values
    (mean 0, variance 1); the check corrects for that with num_batches_tracked."""
    head, text, _, off = trained
    bn = head.mlps[1]
    assert 0 < int(bn.num_batches_tracked) < 50
    w = 0.9 ** int(bn.num_batches_tracked)
    assert w > 0.005  # the start values still weigh: without the correction the check would fail
    check = check_head_inputs(head, text[:400] - off.text_mean)
    assert check.verdict == "ok" and abs(check.var_ratio - 1) < 0.2


def test_no_statistics_or_too_few_rows_give_no_verdict(trained):
    fresh = ProjectionHead(32, 64, 16).eval()
    assert check_head_inputs(fresh, np.zeros((100, 32), np.float32)).verdict == "skipped"
    head, text, _, off = trained
    few = check_head_inputs(head, text[:5] - off.text_mean)
    assert few.verdict == "skipped" and few.var_ratio is None and "only 5 rows" in few.reason
    with pytest.raises(ValueError, match=r"expected inputs \[n, 32\]"):
        check_head_inputs(head, np.zeros((10, 31), np.float32))


def test_a_checkpoint_without_num_batches_tracked_counts_as_converged(trained):
    head, text, _, off = trained
    state = {k: v for k, v in head.state_dict().items() if not k.endswith("num_batches_tracked")}
    copy = ProjectionHead(32, 64, 16)
    copy.load_state_dict(state, strict=False)
    assert int(copy.mlps[1].num_batches_tracked) == 0
    check = check_head_inputs(copy.eval(), torch.from_numpy(text[:400] - off.text_mean))
    assert check.verdict != "skipped" and check.var_ratio is not None
