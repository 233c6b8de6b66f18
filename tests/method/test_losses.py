"""The hard-negative loss against its row-by-row definition, plus InfoNCE / MSE."""

import math

import pytest
import torch
import torch.nn.functional as F

from textme import HardNegativeContrastiveLoss, InfoNCELoss, MSEAlignmentLoss, make_loss
from textme.losses import hard_negative_mask, reference_hard_negative_loss


def _batch(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=dtype)
    # targets correlated with the predictions, so positives beat most negatives and
    # the [0.1, 0.9] x s_ii window holds some negatives and leaves others out
    b = a + 0.8 * torch.randn(n, d, generator=g, dtype=dtype)
    return a.requires_grad_(), b.requires_grad_()


def _value_and_grads(fn, a, b):
    a1, b1 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    loss = fn(a1, b1)
    loss.backward()
    return loss.detach(), a1.grad, b1.grad


CASES = [  # n, d, kwargs
    (2, 3, {}),
    (7, 5, {}),
    (32, 16, {}),
    (64, 8, {"temperature": 0.2}),
    (48, 12, {"top_perc_margin": 0.95, "bottom_perc_margin": 0.05}),
    (40, 6, {"max_neg": 1}),
    (40, 6, {"max_neg": 3}),
    (40, 6, {"max_neg": 39}),  # >= n - 1: all valid negatives
    (40, 6, {"max_neg": 100}),
    (33, 4, {"bottom_perc_margin": -1.0, "top_perc_margin": 1.0}),  # nearly all valid
]


@pytest.mark.parametrize("n,d,kwargs", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_row_by_row_definition(n, d, kwargs, seed):
    a, b = _batch(n, d, seed)
    fast = _value_and_grads(HardNegativeContrastiveLoss(**kwargs), a, b)
    slow = _value_and_grads(lambda x, y: reference_hard_negative_loss(x, y, **kwargs), a, b)
    for got, want in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if n >= 32:  # the comparison is not vacuous: some negatives kept, some left out
        sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
        kept = int(hard_negative_mask(sim, kwargs.get("top_perc_margin", 0.9),
                                      kwargs.get("bottom_perc_margin", 0.1)).sum())
        assert 0 < kept < n * (n - 1) and fast[0] > 0


def test_float32_matches_too():
    a, b = _batch(128, 32, 7, dtype=torch.float32)
    fast = _value_and_grads(HardNegativeContrastiveLoss(), a, b)
    slow = _value_and_grads(reference_hard_negative_loss, a, b)
    for got, want in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_rows_without_valid_negatives_are_skipped_not_averaged_in():
    # rows 0, 1: orthogonal-ish pairs whose negatives fall inside the window;
    # row 2: its only candidates are above 0.9 * s_22 (too close), so it has none.
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.6, 0.1]], dtype=torch.float64)
    b = torch.tensor([[0.9, 0.3, 0.0], [0.3, 0.9, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    mask = hard_negative_mask(sim, 0.9, 0.1)
    assert mask.any(dim=1).tolist() == [True, True, False]
    loss = HardNegativeContrastiveLoss()(a, b)
    # by hand: mean of the two valid rows' cross-entropies, row 2 not counted
    logits = sim / 0.07
    by_hand = [
        torch.logsumexp(logits[i, [i] + mask[i].nonzero().flatten().tolist()], 0) - logits[i, i]
        for i in (0, 1)
    ]
    torch.testing.assert_close(loss, (by_hand[0] + by_hand[1]) / 2)
    torch.testing.assert_close(loss, reference_hard_negative_loss(a, b))


def test_batch_of_one_is_zero_with_gradient_path():
    a = torch.randn(1, 4, requires_grad=True)
    b = torch.randn(1, 4, requires_grad=True)
    loss = HardNegativeContrastiveLoss()(a, b)
    assert loss.shape == () and loss.item() == 0.0
    loss.backward()  # must not raise: the zero is attached to the inputs
    assert a.grad is not None and torch.all(a.grad == 0)
    assert reference_hard_negative_loss(a.detach(), b.detach()).item() == 0.0


def test_no_valid_row_anywhere_gives_attached_zero():
    a = torch.eye(4, requires_grad=True)
    b = torch.eye(4)  # s_ii = 1, all negatives 0 < 0.1: every row has none
    loss = HardNegativeContrastiveLoss()(a, b)
    assert loss.item() == 0.0 and loss.requires_grad


def test_max_neg_keeps_the_most_similar_valid_negatives():
    sim = torch.tensor([[1.0, 0.85, 0.5, 0.2, 0.95, 0.05],
                        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    # row 0: valid are 0.85, 0.5, 0.2 (0.95 > 0.9, 0.05 < 0.1)
    assert hard_negative_mask(sim, 0.9, 0.1)[0].nonzero().flatten().tolist() == [1, 2, 3]
    assert hard_negative_mask(sim, 0.9, 0.1, max_neg=2)[0].nonzero().flatten().tolist() == [1, 2]
    # fewer valid than max_neg: the invalid ones are not dragged in (the official
    # top-k would take max_neg + 1 slots, -inf ones included)
    assert hard_negative_mask(sim, 0.9, 0.1, max_neg=4)[0].nonzero().flatten().tolist() == [1, 2, 3]


def test_value_depends_on_temperature_and_window():
    a, b = _batch(32, 8, 3)
    base = HardNegativeContrastiveLoss()(a, b)
    assert not torch.isclose(base, HardNegativeContrastiveLoss(temperature=0.5)(a, b))
    assert not torch.isclose(base, HardNegativeContrastiveLoss(bottom_perc_margin=-1)(a, b))


def test_infonce_symmetric_and_one_way():
    a, b = _batch(16, 8, 4)
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = an @ bn.T / 0.07
    labels = torch.arange(16)
    one_way = F.cross_entropy(logits, labels)
    both = (one_way + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(InfoNCELoss(symmetric=False)(a, b), one_way)
    torch.testing.assert_close(InfoNCELoss()(a, b), both)


def test_mse_on_normalised_rows():
    a = torch.tensor([[3.0, 0.0]])
    b = torch.tensor([[0.0, 2.0]])
    # unit vectors (1, 0) and (0, 1): mean of squared differences = (1 + 1) / 2
    assert MSEAlignmentLoss()(a, b).item() == pytest.approx(1.0)


def test_make_loss_names_and_errors():
    assert isinstance(make_loss("hard_negative", max_neg=5), HardNegativeContrastiveLoss)
    assert make_loss("hard_negative", max_neg=5).max_neg == 5
    assert isinstance(make_loss("infonce", temperature=0.1), InfoNCELoss)
    assert isinstance(make_loss("mse"), MSEAlignmentLoss)
    with pytest.raises(ValueError, match="known: hard_negative, infonce, mse"):
        make_loss("triplet")
    with pytest.raises(TypeError, match="'mse'"):
        make_loss("mse", temperature=0.07)


def test_bad_inputs_are_rejected_with_shapes():
    loss = HardNegativeContrastiveLoss()
    with pytest.raises(ValueError, match=r"\[4, 3\] and \[4, 5\]"):
        loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="temperature"):
        HardNegativeContrastiveLoss(temperature=0)
    with pytest.raises(ValueError, match="max_neg"):
        HardNegativeContrastiveLoss(max_neg=0)
    with pytest.raises(ValueError, match="bottom_perc_margin"):
        HardNegativeContrastiveLoss(top_perc_margin=0.1, bottom_perc_margin=0.9)


def test_loss_is_finite_for_identical_pairs():
    a = torch.randn(8, 4)
    value = HardNegativeContrastiveLoss(bottom_perc_margin=-1, top_perc_margin=1)(a, a)
    assert math.isfinite(value.item())
