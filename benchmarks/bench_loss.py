"""Hard-negative loss, forward + backward: vectorised vs row-by-row, same run.

The row-by-row form (`reference_hard_negative_loss`) has the official implementation's
shape: one cross-entropy per query row in a Python loop. Both are timed on the same
random batch (paper sizes by default: batch 512, pivot dim 2560); the script checks
that they agree, then prints median times and the speed-up.

    .venv/bin/python benchmarks/bench_loss.py                 # CPU
    .venv/bin/python benchmarks/bench_loss.py --device cuda   # GPU, if there is one
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from textme.losses import HardNegativeContrastiveLoss, reference_hard_negative_loss


def _once(fn, a, b, device: torch.device) -> float:
    a.grad = b.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(a, b).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _time_pair(fast, slow, a, b, repeats: int, device: torch.device):
    """Median seconds of each, measured alternately so that load from other processes
    on a shared machine hits both alike; one warm-up call each is dropped."""
    _once(fast, a, b, device), _once(slow, a, b, device)
    t_fast, t_slow = [], []
    for _ in range(repeats):
        t_fast.append(_once(fast, a, b, device))
        t_slow.append(_once(slow, a, b, device))
    return statistics.median(t_fast), statistics.median(t_slow)


def _batch(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets with embedding-like structure: rows share a common
    direction and a low-rank topic part, so negatives sit at 0.1-0.9 x the positive's
    similarity as in real batches (independent random rows would all be near 0 in
    high dimension, leave almost every row without a negative, and flatter the loop)."""
    g = torch.Generator().manual_seed(0)
    common = torch.randn(dim, generator=g)
    topics = torch.randn(n, 16, generator=g) @ torch.randn(16, dim, generator=g) / 4
    latent = common + topics + 0.6 * torch.randn(n, dim, generator=g)
    a = latent + 0.5 * torch.randn(n, dim, generator=g)
    b = latent + 0.5 * torch.randn(n, dim, generator=g)
    return a, b


def _window_stats(a: torch.Tensor, b: torch.Tensor, max_neg: int | None) -> str:
    from textme.losses import hard_negative_mask

    an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    sim = an @ bn.T
    mask = hard_negative_mask(sim, 0.9, 0.1, max_neg)
    off_diagonal = sim[~torch.eye(len(sim), dtype=torch.bool)]
    return (f"positives {sim.diagonal().mean():.2f}, negatives {off_diagonal.mean():.2f} "
            f"(mean cosine); rows with negatives {int(mask.any(1).sum())}/{len(sim)}, "
            f"negatives kept per row {mask.sum(1).float().mean():.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-neg", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    a, b = _batch(args.batch, args.dim)
    a, b = a.to(device).requires_grad_(), b.to(device).requires_grad_()
    fast = HardNegativeContrastiveLoss(max_neg=args.max_neg)

    def slow(x, y):
        return reference_hard_negative_loss(x, y, max_neg=args.max_neg)

    diff = (fast(a, b) - slow(a, b)).abs().item()
    assert diff < 1e-5, f"implementations disagree by {diff}"

    t_fast, t_slow = _time_pair(fast, slow, a, b, args.repeats, device)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} "
          f"dim={args.dim} max_neg={args.max_neg} repeats={args.repeats}")
    print(f"batch: {_window_stats(a.detach(), b.detach(), args.max_neg)}")
    print(f"row-by-row (official shape): {t_slow * 1e3:9.2f} ms  (median fwd+bwd)")
    print(f"vectorised masked LSE      : {t_fast * 1e3:9.2f} ms  (median fwd+bwd)")
    print(f"speed-up                   : {t_slow / t_fast:9.1f} x  (|loss diff| {diff:.1e})")


if __name__ == "__main__":
    main()
