"""Training losses: the paper's hard-negative contrastive loss, InfoNCE and MSE.

All losses take (predicted, target) of shape [batch, dim], L2-normalise both rows in
at least float32 (so bf16 autocast cannot blur the negative selection), and return a
scalar.

Hard-negative contrastive loss, per query row i, with s = A B^T (cosine similarities):

    N_i = { j != i : bottom * s_ii <= s_ij <= top * s_ii }        (valid negatives)
    l_i = -log( exp(s_ii / tau) / (exp(s_ii / tau) + sum_{j in N_i} exp(s_ij / tau)) )

Rows with empty N_i are skipped and the loss is the mean of l_i over the other rows
(0, still attached to the graph, when no row has a negative). With `max_neg`, N_i keeps
only its `max_neg` most similar members. `reference_hard_negative_loss` is the same
definition written row by row (the official code's shape); `HardNegativeContrastiveLoss`
computes it at once with a masked log-sum-exp, with no Python loop over rows.

Where the released code differs, this module follows the paper's definition: the
released constructor defaults to margins 0.95 / 0.05 (the paper and ours: 0.9 / 0.1);
its `max_neg` top-k takes max_neg + 1 entries over all columns, so it keeps one
negative more than asked and, in a row with fewer valid negatives, also keeps invalid
ones; its no-valid-row zero is a new leaf tensor, not connected to the model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(a: Tensor, b: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name}: expected two [batch, dim] tensors of the same shape, "
            f"got {list(a.shape)} and {list(b.shape)}"
        )
    return F.normalize(_at_least_fp32(a), dim=-1), F.normalize(_at_least_fp32(b), dim=-1)


def _at_least_fp32(x: Tensor) -> Tensor:
    # half-precision similarities would blur the negative window; float64 stays float64
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_margins(top: float, bottom: float, temperature: float, max_neg: int | None) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not bottom <= top:
        raise ValueError(f"bottom_perc_margin ({bottom}) must be <= top_perc_margin ({top})")
    if max_neg is not None and (not isinstance(max_neg, int) or max_neg < 1):
        raise ValueError(f"max_neg must be None or a positive int, got {max_neg!r}")


def hard_negative_mask(
    sim: Tensor, top_perc_margin: float, bottom_perc_margin: float, max_neg: int | None = None
) -> Tensor:
    """Boolean [n, n] mask of valid negatives for a similarity matrix `sim` [n, n].

    Same comparisons as the official code (`<=` top, `>=` bottom, diagonal excluded).
    A row whose positive similarity is negative gets an empty interval, hence no
    negatives. `max_neg` keeps the `max_neg` highest-similarity valid negatives per row.
    """
    n = sim.shape[0]
    with torch.no_grad():
        pos = sim.diagonal().unsqueeze(1)
        eye = torch.eye(n, dtype=torch.bool, device=sim.device)
        mask = (sim <= pos * top_perc_margin) & (sim >= pos * bottom_perc_margin) & ~eye
        if max_neg is not None and max_neg < n - 1:
            scores = sim.masked_fill(~mask, float("-inf"))
            top = scores.topk(max_neg, dim=1).indices
            keep = torch.zeros_like(mask).scatter_(1, top, True)
            mask = mask & keep  # topk may have picked -inf (invalid) slots: drop them
    return mask


class HardNegativeContrastiveLoss(nn.Module):
    """The paper's loss (tau 0.07, negatives within [0.1, 0.9] x the positive's score).

    Args:
        temperature: tau, logits are similarities / tau.
        top_perc_margin: a negative more similar than top * s_ii is too close to the
            positive (likely a paraphrase) and is left out.
        bottom_perc_margin: a negative below bottom * s_ii is too easy to teach much.
        max_neg: keep at most this many (the most similar) valid negatives per row.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        top_perc_margin: float = 0.9,
        bottom_perc_margin: float = 0.1,
        max_neg: int | None = None,
    ) -> None:
        super().__init__()
        _check_margins(top_perc_margin, bottom_perc_margin, temperature, max_neg)
        self.temperature = temperature
        self.top_perc_margin = top_perc_margin
        self.bottom_perc_margin = bottom_perc_margin
        self.max_neg = max_neg

    def forward(self, embedding_a: Tensor, embedding_b: Tensor) -> Tensor:
        """embedding_a: predictions [n, d]; embedding_b: targets [n, d] -> scalar."""
        a, b = _pair(embedding_a, embedding_b, "HardNegativeContrastiveLoss")
        sim = a @ b.T
        neg = hard_negative_mask(sim, self.top_perc_margin, self.bottom_perc_margin, self.max_neg)
        valid = neg.any(dim=1)
        if not bool(valid.any()):
            return sim.sum() * 0.0  # zero, but backward() still reaches the inputs
        logits = sim / self.temperature
        keep = neg | torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        lse = torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=1)
        per_row = lse - logits.diagonal()
        return per_row[valid].mean()

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, top_perc_margin={self.top_perc_margin}, "
                f"bottom_perc_margin={self.bottom_perc_margin}, max_neg={self.max_neg}")


def reference_hard_negative_loss(
    embedding_a: Tensor,
    embedding_b: Tensor,
    temperature: float = 0.07,
    top_perc_margin: float = 0.9,
    bottom_perc_margin: float = 0.1,
    max_neg: int | None = None,
) -> Tensor:
    """The hard-negative loss written row by row: slow, for tests and benchmarks only.

    Negatives are chosen one row at a time (sorting for `max_neg`), independently of
    `hard_negative_mask`, so the two implementations check each other. This is the
    shape of the official implementation, and the baseline of benchmarks/bench_loss.py.
    """
    a, b = _pair(embedding_a, embedding_b, "reference_hard_negative_loss")
    n = a.shape[0]
    sim_rows = (a @ b.T).detach()
    total, count = None, 0
    for i in range(n):
        row, s_ii = sim_rows[i], sim_rows[i, i]
        ok = (row >= s_ii * bottom_perc_margin) & (row <= s_ii * top_perc_margin)
        ok[i] = False
        negs = ok.nonzero().flatten()
        if max_neg is not None and negs.numel() > max_neg:
            order = torch.argsort(row[negs], descending=True, stable=True)
            negs = negs[order[:max_neg]]
        if negs.numel() == 0:
            continue
        idx = torch.cat([torch.tensor([i], device=a.device), negs])
        logits = (a[i : i + 1] @ b[idx].T) / temperature
        row = F.cross_entropy(logits, torch.zeros(1, dtype=torch.long, device=a.device))
        total = row if total is None else total + row
        count += 1
    if total is None:
        return (a @ b.T).sum() * 0.0
    return total / count


class InfoNCELoss(nn.Module):
    """Plain InfoNCE over the batch (every other row is a negative).

    symmetric=True averages both directions (a->b and b->a), the usual CLIP form;
    symmetric=False is a->b only, which is what the official `ContrastiveLoss` computes.
    """

    def __init__(self, temperature: float = 0.07, symmetric: bool = True) -> None:
        super().__init__()
        _check_margins(1.0, 0.0, temperature, None)
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(self, embedding_a: Tensor, embedding_b: Tensor) -> Tensor:
        a, b = _pair(embedding_a, embedding_b, "InfoNCELoss")
        logits = a @ b.T / self.temperature
        labels = torch.arange(a.shape[0], device=a.device)
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
        return loss


class MSEAlignmentLoss(nn.Module):
    """Mean squared error between the L2-normalised rows (the official `TextMSELoss`)."""

    def forward(self, embedding_a: Tensor, embedding_b: Tensor) -> Tensor:
        a, b = _pair(embedding_a, embedding_b, "MSEAlignmentLoss")
        return F.mse_loss(a, b)


_LOSSES: dict[str, type[nn.Module]] = {
    "hard_negative": HardNegativeContrastiveLoss,
    "infonce": InfoNCELoss,
    "mse": MSEAlignmentLoss,
}


def make_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name: "hard_negative" | "infonce" | "mse".

    Keyword arguments go to the loss's constructor; one it does not take is an error
    (silently dropping, say, a temperature would train something else than asked).
    """
    try:
        cls = _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(_LOSSES)}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TypeError(f"loss {name!r}: {exc}") from None
