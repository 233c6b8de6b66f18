"""Training a projection head on text only, and projecting with it.

`train_projection` takes two aligned arrays (the encoder's text embeddings and the
pivot's embeddings of the same captions), centres the first with the text offset, and
fits a `ProjectionHead` so that P(E_text(c) - mu_text) lands on pivot(c). At inference
`project(head, E_modal(x), offset=mu_modal)` puts modal items in the same space.

Memory: float16 and float32 inputs are used as they are (no copy); each batch is cast
to float32 and centred when it is drawn, which computes exactly what centring every row
up front in float32 computed (the official code's order), so the weights are the same.
Holding the rows costs rows x (in_dim + out_dim) x itemsize bytes: float16 rows (what
the cache stores) halve it.

`train_projection_with_uncentred` also returns the `uncentred` ablation head without a
second training; see `UncentredShift` for the derivation and what it does not cover.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textme.losses import make_loss
from textme.offsets import as_vector, process_embeddings
from textme.projector import _ACTIVATIONS, _INIT_MODES, ProjectionHead

_SCHEDULES = ("cosine", "cosine_restarts", "constant")
_PRECISIONS = ("auto", "fp32", "bf16")
_LOSSES = ("hard_negative", "infonce", "mse")


def _two_betas(betas: Any) -> bool:
    try:
        return len(betas) == 2 and all(0 <= float(b) < 1 for b in betas)
    except (TypeError, ValueError):
        return False


def _is_device(device: Any) -> bool:
    if device == "auto":
        return True
    try:
        torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe; defaults are the paper's (arXiv 2602.03098, Table of settings).

    Where the released code differs from the paper, the paper wins by default and the
    official behaviour stays one field away (see `schedule`).
    """

    epochs: int = 50  # paper: 50 epochs
    batch_size: int = 512  # paper: 512 (the released train.py defaults to 256)
    lr: float = 5e-4  # paper: 5e-4, AdamW
    weight_decay: float = 0.01  # paper: 0.01 (AdamW's decoupled decay)
    betas: tuple[float, float] = (0.9, 0.999)  # paper: AdamW (0.9, 0.999)
    eps: float = 1e-8  # AdamW epsilon, PyTorch's and the official default
    # "cosine": one cosine decay from lr to min_lr over all steps (the paper's "cosine
    # annealing"); "cosine_restarts": what the released code runs, PyTorch's
    # CosineAnnealingWarmRestarts with T_0 = total_steps // restarts; "constant".
    schedule: str = "cosine"
    warmup_steps: int = 0  # paper: none; the official --warmup 500 flag is never used
    min_lr: float = 1e-6  # floor of both cosine schedules (official eta_min=1e-6)
    restarts: int = 10  # number of cycles for schedule="cosine_restarts"
    grad_clip: float | None = 1.0  # max global grad norm (official --grad_clip_norm 1.0)
    loss: str = "hard_negative"  # "hard_negative" | "infonce" | "mse"
    temperature: float = 0.07  # paper: tau = 0.07 (contrastive losses only)
    top_perc_margin: float = 0.9  # paper: negatives with s_ij <= 0.9 * s_ii ...
    bottom_perc_margin: float = 0.1  # ... and s_ij >= 0.1 * s_ii
    max_neg: int | None = None  # cap on hard negatives per row (None: all valid ones)
    proj_dim: int | None = None  # hidden width; None -> 2 * in_dim (paper)
    init_mode: str = "xav"  # Xavier-uniform weights (paper)
    dim_act: str = "gelu"  # activation between the two blocks (paper)
    seed: int = 0  # seeds head init and shuffling; same seed, same head on CPU
    device: str = "auto"  # "auto": cuda if available, else cpu; or any torch device
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; "fp32"; "bf16"
    drop_last: bool = True  # drop the ragged last batch, as the official DataLoader does

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs 2 rows)"),
            (self.lr > 0, "lr must be > 0"),
            (self.schedule in _SCHEDULES, f"schedule must be one of {_SCHEDULES}"),
            (self.precision in _PRECISIONS, f"precision must be one of {_PRECISIONS}"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.restarts >= 1, "restarts must be >= 1"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be None or > 0"),
            (self.proj_dim is None or self.proj_dim >= 1, "proj_dim must be None or >= 1"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.eps > 0, "eps must be > 0"),
            (self.min_lr >= 0, "min_lr must be >= 0"),
            (_two_betas(self.betas), "betas must be two numbers in [0, 1)"),
            (self.temperature > 0, "temperature must be > 0"),
            (0 <= self.bottom_perc_margin <= self.top_perc_margin,
             "bottom_perc_margin must be >= 0 and <= top_perc_margin"),
            (self.max_neg is None or self.max_neg >= 1, "max_neg must be None or >= 1"),
            (self.init_mode in _INIT_MODES, f"init_mode must be one of {_INIT_MODES}"),
            (self.dim_act.lower() in _ACTIVATIONS, f"dim_act must be one of {tuple(sorted(_ACTIVATIONS))}"),
            (self.loss in _LOSSES, f"loss must be one of {_LOSSES}"),
            (_is_device(self.device), f"device must be 'auto' or a torch device such as 'cpu', 'cuda:0'; "
                                      f"got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")
        object.__setattr__(self, "betas", tuple(self.betas))

    def loss_kwargs(self) -> dict[str, Any]:
        """The constructor arguments of `self.loss` (only those it takes)."""
        if self.loss == "hard_negative":
            return {"temperature": self.temperature, "top_perc_margin": self.top_perc_margin,
                    "bottom_perc_margin": self.bottom_perc_margin, "max_neg": self.max_neg}
        if self.loss == "infonce":
            return {"temperature": self.temperature}
        if self.loss == "mse":
            return {}
        raise ValueError(
            f"TrainConfig: unknown loss {self.loss!r}; known: hard_negative, infonce, mse"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists), e.g. for fingerprints and checkpoints."""
        items = dataclasses.asdict(self).items()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def training_memory_bytes(
    n_rows: int, in_dim: int, out_dim: int, config: TrainConfig | None = None, itemsize: int = 2
) -> int:
    """Estimated peak bytes of `train_projection` on n_rows rows of `itemsize` bytes.

    The rows (n x (in_dim + out_dim) x itemsize: they stay resident, as given), the
    head's parameters with their gradients and AdamW's two moments (4 x float32), and
    one batch's float32 activations and similarity matrices (a few copies each).
    """
    cfg = config or TrainConfig()
    hidden = cfg.proj_dim or 2 * in_dim
    params = in_dim * hidden + hidden * out_dim + 6 * hidden + 6 * out_dim
    batch = min(cfg.batch_size, n_rows)
    activations = batch * (in_dim + 4 * hidden + 4 * out_dim) + 6 * batch * batch
    return n_rows * (in_dim + out_dim) * itemsize + 4 * (4 * params + activations)


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    *,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr: float = 1e-6,
    restarts: int = 10,
) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`. Pure.

    Linear warmup from base_lr / warmup_steps to base_lr, then the schedule:
    "cosine" decays from base_lr to min_lr over the remaining steps; "cosine_restarts"
    repeats a cosine cycle of total_steps // restarts steps (PyTorch's
    CosineAnnealingWarmRestarts as the official trainer uses it); "constant" stays.
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    t = step - warmup_steps
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        frac = min(max(t / span, 0.0), 1.0)
    elif schedule == "cosine_restarts":
        cycle = max(1, (total_steps - warmup_steps) // restarts)
        frac = (t % cycle) / cycle
    else:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(_SCHEDULES)}")
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * frac))


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name}: expected [n, d], got shape {list(t.shape)}")
    return t.float().cpu()


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _batches(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """(start, stop) of each batch. With fewer rows than one batch there is one
    smaller batch of all rows; a trailing batch of a single row is skipped, since
    BatchNorm cannot train on it."""
    size = min(batch_size, n)
    stops = range(size, n + 1, size) if drop_last else range(size, n + size, size)
    bounds = [(s - size, min(s, n)) for s in stops]
    return [(a, b) for a, b in bounds if b - a >= 2]


#: Rows checked for NaN/inf at a time (bounds the check's temporary memory).
_CHECK_ROWS = 65536


def _as_rows(x: Any, name: str) -> torch.Tensor:
    """A 2-D CPU tensor over the same memory when x is float16 or float32, else float32."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name}: expected [n, d], got shape {list(t.shape)}")
    if t.dtype not in (torch.float16, torch.float32):
        t = t.float()
    return t.cpu()


def _training_inputs(
    text: Any, pivot: Any, offset: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Checked CPU tensors (float16 or float32, not copied) and the float32 offset."""
    x = _as_rows(text, "text_embeddings")
    y = _as_rows(pivot, "pivot_embeddings")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"text_embeddings has {x.shape[0]} rows but pivot_embeddings has {y.shape[0]}; "
            "rows must be paired by index"
        )
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 training rows (BatchNorm), got {x.shape[0]}")
    for name, t in (("text_embeddings", x), ("pivot_embeddings", y)):
        for start in range(0, t.shape[0], _CHECK_ROWS):
            finite = torch.isfinite(t[start : start + _CHECK_ROWS])
            if not bool(finite.all()):
                bad = start + int((~finite).any(dim=1).nonzero()[0])
                raise ValueError(f"{name}: row {bad} contains NaN or inf")
    off = None if offset is None else torch.from_numpy(as_vector(offset, x.shape[1], "offset"))
    return x, y, off


def _batch_rows(x: torch.Tensor, idx: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """float32 rows x[idx], centred: the same float32 subtraction `process_embeddings`
    does on all rows at once, so the values are bit for bit what the official order gives."""
    rows = x[idx].float()
    return rows if offset is None else process_embeddings(rows, offset)


class UncentredShift:
    """The uncentred twin of a centred training run, tracked alongside it.

    Training on x - mu (centred) and on x (uncentred) from the same seed and batches
    gives the same head but for the first BatchNorm's running mean: BatchNorm after the
    first Linear removes any constant from its inputs in training mode, so forward
    outputs, losses and every gradient are equal (the gradient of W1 is
    sum_i g_i (x_i - mu)^T with sum_i g_i = 0 under batch statistics). The running mean
    is an average of batch means of W1_t x + b1_t, so the twin's is the centred one's
    plus the same average of W1_t mu, with the W1_t of each step: this class keeps that
    average (`shift`), with BatchNorm's own momentum. The running variance is
    shift-invariant.

    In float32 the twins are equal up to rounding, with one visible exception: the
    biases of both Linears have a zero gradient in exact arithmetic (a BatchNorm
    follows each), and what rounding leaves there (~1e-9) AdamW normalises into steps
    of up to lr, so those biases drift by noise in either run and are not comparable
    between two runs. They enter eval outputs only as bias - running mean, which
    agrees to rounding; `tests/method/test_training.py` checks the derived head against
    a trained uncentred one at that tolerance.
    """

    def __init__(self, head: ProjectionHead, offset: torch.Tensor, start: torch.Tensor | None = None):
        bn = head.mlps[1]
        self._linear, self._bn = head.mlps[0], bn
        self._mu = offset.to(device=bn.running_mean.device, dtype=torch.float32)
        self.shift = (torch.zeros_like(bn.running_mean, dtype=torch.float32) if start is None
                      else start.to(device=bn.running_mean.device, dtype=torch.float32).clone())

    def update(self) -> None:
        """Call once per step, after the forward and before optimizer.step(): the
        forward's W1 and BatchNorm's update factor are the ones to use."""
        bn = self._bn
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        with torch.no_grad():
            w1_mu = self._linear.weight.detach().float() @ self._mu
            self.shift.mul_(1.0 - factor).add_(w1_mu, alpha=factor)

    def derive(self, head: ProjectionHead) -> ProjectionHead:
        """A copy of the trained centred `head` that is the uncentred twin."""
        twin = copy.deepcopy(head)
        with torch.no_grad():
            twin.mlps[1].running_mean.add_(self.shift.to(twin.mlps[1].running_mean.dtype))
        return twin


def _build(
    cfg: TrainConfig, in_dim: int, out_dim: int, device: torch.device, start: ProjectionHead | None = None
) -> tuple[ProjectionHead, torch.optim.Optimizer]:
    """A head seeded by its own generator (never the global RNG, which concurrent
    training threads would share), or a copy of `start` (warm start), and its AdamW
    optimizer (fresh: checkpoints hold no optimizer state)."""
    init = torch.Generator().manual_seed(cfg.seed)
    head = ProjectionHead(in_dim, cfg.proj_dim or 2 * in_dim, out_dim,
                          init_mode=cfg.init_mode, dim_act=cfg.dim_act, generator=init)
    if start is not None:
        shape = ("in_dim", "proj_dim", "out_dim", "dim_act")  # init_mode no longer matters
        if [start.config()[k] for k in shape] != [head.config()[k] for k in shape]:
            raise ValueError(f"warm start: the starting head is {start.config()}, this training builds "
                             f"{head.config()}; train from scratch or start from a head of the same shape")
        head.load_state_dict(start.state_dict())
    head = head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=cfg.betas,
                                  eps=cfg.eps, weight_decay=cfg.weight_decay)
    return head, optimizer


def train_projection(
    text_embeddings: Any,
    pivot_embeddings: Any,
    *,
    offset: Any,
    config: TrainConfig | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    init: ProjectionHead | None = None,
) -> tuple[ProjectionHead, list[dict[str, Any]]]:
    """Fit a projection head from text embeddings [n, d_in] to pivot embeddings [n, d_out].

    offset: mu_text ([d_in] or [1, d_in], numpy or torch) subtracted from every text
    row before the head, or None to train on raw embeddings. Rows are paired by index;
    float16 or float32 rows are used without a copy (each batch is cast to float32).
    Returns the head in eval mode (on the training device) and one history row per
    epoch: {"epoch" (1-based), "loss" (mean over the epoch's rows), "lr" (of its last
    step), "seconds"}; `progress`, when given, is called with each row as it is made.

    init: a head to continue from (warm start; same shape) instead of the seeded init.
    The optimizer starts fresh and the schedule runs over `config.epochs`.

    Batches: shuffled each epoch; `drop_last` drops the ragged tail, but when the data
    has fewer rows than `batch_size` each epoch is one batch of all rows, so training
    never silently does zero steps. Needs at least 2 rows (BatchNorm).
    Deterministic on CPU for a given seed; on CUDA the default precision is bf16 autocast.
    """
    head, _, history = _fit(text_embeddings, pivot_embeddings, offset, config, progress, init, None)
    return head, history


def train_projection_with_uncentred(
    text_embeddings: Any,
    pivot_embeddings: Any,
    *,
    offset: Any,
    config: TrainConfig | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    init: ProjectionHead | None = None,
    init_shift: Any = None,
) -> tuple[ProjectionHead, ProjectionHead, list[dict[str, Any]]]:
    """`train_projection` with an offset, plus the uncentred ablation head of the same
    run: what `train_projection(..., offset=None)` with the same seed would train, up to
    rounding (`UncentredShift`). Returns (centred head, uncentred head, history).

    init_shift: with `init` (warm start), the starting head's uncentred twin's first
    running mean minus its own ([proj_dim]); None: zeros (the twins start equal).
    """
    if offset is None:
        raise ValueError("train_projection_with_uncentred needs the offset the centred head is trained with")
    return _fit(text_embeddings, pivot_embeddings, offset, config, progress, init,
                None if init_shift is None else torch.as_tensor(np.asarray(init_shift, dtype=np.float32)),
                twin=True)


def _fit(
    text_embeddings: Any,
    pivot_embeddings: Any,
    offset: Any,
    config: TrainConfig | None,
    progress: Callable[[dict[str, Any]], None] | None,
    init: ProjectionHead | None,
    init_shift: torch.Tensor | None,
    twin: bool = False,
) -> tuple[ProjectionHead, ProjectionHead | None, list[dict[str, Any]]]:
    """The training loop; with `twin`, also the derived uncentred head (else None)."""
    cfg = config or TrainConfig()
    x, y, off = _training_inputs(text_embeddings, pivot_embeddings, offset)
    device = _resolve_device(cfg.device)
    head, optimizer = _build(cfg, x.shape[1], y.shape[1], device, init)
    x, y = x.to(device), y.to(device)
    off = None if off is None else off.to(device)
    criterion = make_loss(cfg.loss, **cfg.loss_kwargs())
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    tracker = UncentredShift(head, off, init_shift) if twin else None

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    shuffle = torch.Generator().manual_seed(cfg.seed)
    batches = _batches(x.shape[0], cfg.batch_size, cfg.drop_last)
    total_steps = cfg.epochs * len(batches)
    schedule = dict(schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                    min_lr=cfg.min_lr, restarts=cfg.restarts)

    history: list[dict[str, Any]] = []
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(x.shape[0], generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)  # summed on device: one sync per epoch
        rows = 0
        for start, stop in batches:
            lr = lr_at(step, total_steps, cfg.lr, **schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[start:stop]
            with autocast():
                loss = criterion(head(_batch_rows(x, idx, off)), y[idx].float())
            if tracker is not None:
                tracker.update()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.detach().float() * (stop - start)
            rows += stop - start
            step += 1
        mean_loss = float(loss_sum) / rows
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"train_projection: loss became {mean_loss} in epoch {epoch}")
        row = {"epoch": epoch, "loss": mean_loss, "lr": lr,
               "seconds": time.perf_counter() - started}
        history.append(row)
        if progress is not None:
            progress(dict(row))
    head.eval()
    return head, None if tracker is None else tracker.derive(head), history


def project(
    head: ProjectionHead, embeddings: Any, offset: Any = None, batch_size: int = 4096
) -> np.ndarray:
    """Map embeddings [n, in_dim] through `head` -> float32 [n, out_dim], rows of unit norm.

    offset: the centroid of the embeddings' own modality (mu_modal for modal items,
    mu_text for text), or None. Runs in eval mode without gradients on the head's
    device, in `batch_size` chunks; the head's train/eval mode is restored afterwards.
    """
    x = _as_tensor(embeddings, "embeddings")
    if x.shape[1] != head.in_dim:
        raise ValueError(f"embeddings have dim {x.shape[1]}, the head expects {head.in_dim}")
    off = None if offset is None else torch.from_numpy(as_vector(offset, head.in_dim, "offset"))
    device = next(head.parameters()).device
    was_training = head.training
    head.eval()
    out = np.empty((x.shape[0], head.out_dim), dtype=np.float32)
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                chunk = process_embeddings(x[start : start + batch_size], off).to(device)
                out[start : start + len(chunk)] = head(chunk).float().cpu().numpy()
    finally:
        head.train(was_training)
    return out
