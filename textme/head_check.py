"""Does a head get the kind of inputs it was trained on? A check from its BatchNorm.

A projection head's first BatchNorm keeps the running mean and variance of what its
first Linear produced in training: `z = W0 x + b0` over centred training texts. Feeding
it other inputs (raw encoder outputs to a head trained on unit vectors, inputs centred
with the wrong offset, another model's embeddings) moves those statistics, so running
the first Linear on the actual centred inputs and comparing, feature by feature, says
whether the head is being used as trained, before any number is scored with it.

Two figures, each a median over the hidden features j (robust to a few odd ones):

- `var_ratio`: median of var(z_j) / running_var_j. A scale error of s in the inputs
  gives s**2 (raw CLIP outputs, norm ~10, into a head trained on unit vectors: ~100).
- `mean_shift`: median of |mean(z_j) - running_mean_j| / sqrt(running_var_j), in
  running standard deviations. A constant left in the inputs (the modality gap of an
  uncentred or wrongly centred input, a wrong offset) shifts every feature.

Thresholds, measured (`benchmarks/calibrate_head_check.py` prints the table): inputs fed
as the head was trained give var_ratio 0.96-1.59 and mean_shift <= 0.72 (toy heads
after 3 and 125 steps, a synthetic 256-d CLIP-like head, 30 to 4000 rows, and a head
trained on raw vectors fed raw vectors as the official CLIP wrapper does). The mistakes
give var_ratio >= 102 (raw x10 vectors into a head trained on unit ones), <= 0.016
(unit vectors into a raw-trained head), 0.16 (another encoder's vectors of the same
width), or mean_shift >= 4.9 (an offset computed from raw, not unit, vectors). The
thresholds sit in between: var_ratio outside [1/4, 4], or mean_shift above 3.

What it cannot see: an offset error no larger than the modality gap (items not centred,
or centred with the text centroid: mean_shift 0.56-1.6). The gap is itself a mean shift
of that size, and the official raw-CLIP path (raw outputs minus a centroid of unit
vectors) leaves about that much in by design, so a lower threshold would warn on the
paper's own evaluation. Nor another encoder whose outputs have the same statistics
(the demo's isotropic toy towers). It does see towers that were never aligned: the
demo's tiny random CLIP gives var_ratio 0.14 on its images (their vectors barely spread
compared with its captions'), and warns, rightly: that encoder scores at chance.

Running statistics are an exponential average (PyTorch: momentum 0.1) that starts at
mean 0, variance 1; after n training batches that start still weighs (1 - momentum)**n.
Heads trained for few steps (the demo, tests) would look mismatched for that reason
alone, so the running values are de-biased with `num_batches_tracked` first:
est = (running - w * start) / (1 - w), w = (1 - momentum)**n. A checkpoint without
`num_batches_tracked` (the loader tolerates it) is taken as trained to convergence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["HeadInputCheck", "check_head_inputs", "VAR_RATIO_RANGE", "MAX_MEAN_SHIFT", "MAX_ROWS",
           "MIN_ROWS", "LIKELY_CAUSES"]

#: A head used as trained has its median variance ratio in this range (see module doc).
VAR_RATIO_RANGE = (0.25, 4.0)
#: ... and its median mean shift (in running standard deviations) at most this.
MAX_MEAN_SHIFT = 3.0
#: Rows used (a deterministic subset when more are given): statistics settle well before.
MAX_ROWS = 4096
#: Fewer rows than this give no verdict ("skipped").
MIN_ROWS = 8

LIKELY_CAUSES = ("unit-normalised vs raw encoder outputs (the encoder's `normalize` option)",
                 "the wrong offset", "other encoder weights than the head was trained on",
                 "towers whose modal and text outputs do not spread alike (untrained or unaligned weights)")


@dataclass(frozen=True)
class HeadInputCheck:
    """The figures of one check; verdict "ok", "mismatch" or "skipped" (with why)."""

    n_rows: int
    var_ratio: float | None
    mean_shift: float | None
    verdict: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict != "mismatch"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def figure(self) -> str:
        """The figures in words, for a one-line warning."""
        if self.var_ratio is None:
            return self.reason
        lo, hi = VAR_RATIO_RANGE
        return (f"median variance ratio {self.var_ratio:.3g} (expected {lo:g}..{hi:g}), "
                f"median mean shift {self.mean_shift:.2f} running std (expected <= {MAX_MEAN_SHIFT:g}), "
                f"{self.n_rows} rows")


def _running_stats(bn: torch.nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray] | None:
    """De-biased running mean and variance, or None when the BatchNorm never trained."""
    mean = bn.running_mean.detach().double().cpu().numpy()
    var = bn.running_var.detach().double().cpu().numpy()
    n = int(bn.num_batches_tracked.item()) if bn.num_batches_tracked is not None else 0
    untouched = not mean.any() and np.all(var == 1.0)
    if n == 0:
        # Absent from the file (the loader keeps 0) but trained values: take them as converged.
        return None if untouched else (mean, var)
    if bn.momentum is None:  # cumulative average: no weight left on the start values
        return mean, var
    w = (1.0 - float(bn.momentum)) ** n
    if w < 1e-12:
        return mean, var
    return mean / (1.0 - w), (var - w) / (1.0 - w)


def check_head_inputs(head: torch.nn.Module, centred: Any, *, seed: int = 0) -> HeadInputCheck:
    """Compare the head's first Linear on `centred` [n, in_dim] (the inputs exactly as
    the head will get them) with its first BatchNorm's running statistics."""
    linear, bn = head.mlps[0], head.mlps[1]
    x = np.asarray(centred.detach().cpu().numpy() if isinstance(centred, torch.Tensor) else centred,
                   dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != linear.in_features:
        raise ValueError(f"check_head_inputs: expected inputs [n, {linear.in_features}], got {list(x.shape)}")
    n = x.shape[0]
    if n > MAX_ROWS:
        x = x[np.sort(np.random.default_rng(seed).choice(n, size=MAX_ROWS, replace=False))]
    n = x.shape[0]
    if n < MIN_ROWS:
        return HeadInputCheck(n, None, None, "skipped", f"only {n} rows (need {MIN_ROWS})")
    stats = _running_stats(bn)
    if stats is None:
        return HeadInputCheck(n, None, None, "skipped", "the head's BatchNorm has no running statistics")
    run_mean, run_var = stats
    w = linear.weight.detach().double().cpu().numpy()
    b = linear.bias.detach().double().cpu().numpy()
    z = x @ w.T + b
    floor = 1e-12
    run_var = np.maximum(run_var, floor)
    ratio = z.var(axis=0, ddof=1) / run_var
    shift = np.abs(z.mean(axis=0) - run_mean) / np.sqrt(run_var)
    var_ratio, mean_shift = float(np.median(ratio)), float(np.median(shift))
    lo, hi = VAR_RATIO_RANGE
    bad = not (lo <= var_ratio <= hi) or mean_shift > MAX_MEAN_SHIFT or not math.isfinite(var_ratio)
    return HeadInputCheck(n, var_ratio, mean_shift, "mismatch" if bad else "ok")
