"""The projection head P_e and its checkpoint files.

The head maps one encoder's (centred) embeddings into the pivot LLM's space:
Linear -> BatchNorm1d -> activation -> Linear -> BatchNorm1d, then L2 normalisation.
Module names follow the paper's released checkpoints exactly (`mlps.0`, `mlps.1`,
`mlps.3`, `mlps.4`; index 2 is the parameter-free activation), so those files load
into it unchanged.

Checkpoint layouts that `load_projection` accepts (all written by `torch.save`):

- a bare state dict (keys `mlps.*`);
- a dict holding it under `state_dict` (what the official trainer writes),
  `projector_state_dict` or `model_state_dict` (what the official evaluator reads).

Anything else is an error that names the file and the keys found. The official
evaluator silently keeps a freshly initialised head when neither of its two names is
present, which is exactly the case for checkpoints its own trainer writes; we refuse
instead of evaluating an untrained head.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Names under which a checkpoint may hold the head's state dict, in lookup order.
STATE_DICT_WRAPPERS = ("state_dict", "projector_state_dict", "model_state_dict")

#: The head's state-dict keys, as in the released checkpoints (index 2: the activation).
STATE_DICT_KEYS = tuple(
    [f"mlps.0.{p}" for p in ("weight", "bias")]
    + [f"mlps.1.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                               "num_batches_tracked")]
    + [f"mlps.3.{p}" for p in ("weight", "bias")]
    + [f"mlps.4.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                               "num_batches_tracked")]
)

#: Key of our own metadata block inside files written by `save_projection`.
METADATA_KEY = "textme"

_ACTIVATIONS = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "rrelu": nn.RReLU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "leakyrelu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}

_INIT_MODES = ("xav", "eye", "he")


class CheckpointError(ValueError):
    """A projection checkpoint that cannot be used as it is (names file and keys)."""


def get_activation(name: str) -> nn.Module:
    """Activation module by name; unknown names are an error (the official code
    falls back to ReLU silently, which would train a different model)."""
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(sorted(_ACTIVATIONS))}"
        ) from None


class ProjectionHead(nn.Module):
    """Two-layer MLP with BatchNorm, output L2-normalised.

    Args:
        in_dim: the encoder's embedding size.
        proj_dim: hidden size (the paper uses 2 * in_dim).
        out_dim: the pivot's embedding size (2560 for Qwen3-Embedding-4B).
        init_mode: "xav" (Xavier-uniform weights, the paper's), "eye" (identity-like),
            or "he" (Kaiming-uniform). Biases keep PyTorch's default init.
        dim_act: activation between the two blocks ("gelu" in the paper).
        generator: draws every initial weight and bias from this generator instead of
            the global RNG, so heads built in parallel threads stay reproducible.
    """

    def __init__(
        self,
        in_dim: int,
        proj_dim: int,
        out_dim: int,
        init_mode: str = "xav",
        dim_act: str = "gelu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("proj_dim", proj_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHead: {name} must be a positive int, got {value!r}")
        if init_mode not in _INIT_MODES:
            raise ValueError(f"unknown init_mode {init_mode!r}; known: {', '.join(_INIT_MODES)}")
        self.in_dim, self.proj_dim, self.out_dim = in_dim, proj_dim, out_dim
        self.init_mode, self.dim_act = init_mode, dim_act.lower()
        self.mlps = nn.Sequential(
            # skip_init: no draw from the global RNG; _init_weights sets every value.
            nn.utils.skip_init(nn.Linear, in_dim, proj_dim, bias=True),
            nn.BatchNorm1d(proj_dim),
            get_activation(dim_act),
            nn.utils.skip_init(nn.Linear, proj_dim, out_dim, bias=True),
            nn.BatchNorm1d(out_dim),
        )
        self._init_weights(init_mode, generator)

    def _init_weights(self, mode: str, generator: torch.Generator | None) -> None:
        for layer in (self.mlps[0], self.mlps[3]):
            if mode == "xav":
                nn.init.xavier_uniform_(layer.weight, generator=generator)
            elif mode == "eye":
                nn.init.eye_(layer.weight)
            else:
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=generator)
            # PyTorch's default Linear bias, drawn from `generator`.
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        """[batch, in_dim] -> [batch, out_dim], rows of unit norm."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(
                f"ProjectionHead expects input [batch, {self.in_dim}], got {list(x.shape)}"
            )
        return F.normalize(self.mlps(x), dim=-1)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able (stored in checkpoints)."""
        return {
            "in_dim": self.in_dim,
            "proj_dim": self.proj_dim,
            "out_dim": self.out_dim,
            "init_mode": self.init_mode,
            "dim_act": self.dim_act,
        }


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"projection checkpoint not found: {path}")
    try:
        # weights_only: a checkpoint is data; never run code from it.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint of plain tensors and values "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc


def _describe_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"[{shown}{more}]" if keys else "[] (empty)"


def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, Tensor], str | None]:
    """Return (state dict, wrapper name or None for a bare state dict)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict (a state dict or one wrapping it), got {type(obj).__name__}"
        )
    keys = [str(k) for k in obj.keys()]
    if any(k.startswith("mlps.") for k in keys):
        return dict(obj), None
    wrapped = [(n, obj[n]) for n in STATE_DICT_WRAPPERS if isinstance(obj.get(n), Mapping)]
    for name, inner in wrapped:  # prefer a wrapper that holds a head
        if any(str(k).startswith("mlps.") for k in inner):
            return dict(inner), name
    if wrapped:  # a wrapper with something else in it: _check_keys names what it holds
        return dict(wrapped[0][1]), wrapped[0][0]
    raise CheckpointError(
        f"{path}: no projection head found. Expected `mlps.*` keys, or a state dict under "
        f"one of {list(STATE_DICT_WRAPPERS)}; the file has keys {_describe_keys(keys)}"
    )


def _check_keys(state: dict[str, Tensor], path: Path, wrapper: str | None) -> None:
    where = f"{path}" + (f" (under {wrapper!r})" if wrapper else "")
    expected = set(STATE_DICT_KEYS)
    # num_batches_tracked does not change eval outputs; tolerate its absence.
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    found = set(state)
    missing, foreign = sorted(required - found), sorted(found - expected)
    if missing or foreign:
        raise CheckpointError(
            f"{where}: state dict does not match ProjectionHead. "
            f"missing {_describe_keys(missing)}; unexpected {_describe_keys(foreign)}; "
            f"keys found {_describe_keys(sorted(found))}"
        )
    for key in required:
        if not isinstance(state[key], Tensor):
            raise CheckpointError(f"{where}: {key!r} is {type(state[key]).__name__}, not a tensor")


def _dims(state: dict[str, Tensor], path: Path) -> tuple[int, int, int]:
    w0, w3 = state["mlps.0.weight"], state["mlps.3.weight"]
    if w0.dim() != 2 or w3.dim() != 2 or w3.shape[1] != w0.shape[0]:
        raise CheckpointError(
            f"{path}: inconsistent weights: mlps.0.weight {list(w0.shape)}, "
            f"mlps.3.weight {list(w3.shape)} (expected [proj, in] and [out, proj])"
        )
    proj_dim, in_dim = (int(s) for s in w0.shape)
    return in_dim, proj_dim, int(w3.shape[0])


def _dim_act(obj: Mapping) -> str:
    ours = obj.get(METADATA_KEY)
    if isinstance(ours, Mapping) and isinstance(ours.get("head"), Mapping):
        return str(ours["head"].get("dim_act", "gelu"))
    args = obj.get("args")
    if isinstance(args, Mapping) and isinstance(args.get("dim_act"), str):
        return args["dim_act"]
    return "gelu"


def load_projection(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> ProjectionHead:
    """Load a head from a checkpoint file, dimensions inferred from its weights.

    The activation comes from our metadata or the official `args["dim_act"]` when
    present, else GELU (the paper's). The head is returned in eval mode on `device`.
    Raises `CheckpointError` (a `ValueError`) naming the file and the keys it holds
    when no usable state dict is found.
    """
    path = Path(path)
    obj = _load_file(path)
    state, wrapper = _find_state_dict(obj, path)
    _check_keys(state, path, wrapper)
    in_dim, proj_dim, out_dim = _dims(state, path)
    head = ProjectionHead(in_dim, proj_dim, out_dim, dim_act=_dim_act(obj if wrapper else {}))
    try:
        head.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch inside (e.g. BN size != Linear size)
        raise CheckpointError(f"{path}: {exc}") from exc
    return head.to(device).eval()


def read_projection_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint says about itself, without building the head.

    Returns a dict with `in_dim`, `proj_dim`, `out_dim`, `dim_act`, `wrapper` (the key
    holding the state dict, None if bare), `metadata` (what `save_projection` was given;
    {} for files we did not write), `method_version` (None for foreign files) and `args`
    (the official training arguments when present, else {}).
    """
    path = Path(path)
    obj = _load_file(path)
    state, wrapper = _find_state_dict(obj, path)
    _check_keys(state, path, wrapper)
    in_dim, proj_dim, out_dim = _dims(state, path)
    outer = obj if wrapper else {}
    ours = outer.get(METADATA_KEY) if isinstance(outer.get(METADATA_KEY), Mapping) else {}
    args = outer.get("args") if isinstance(outer.get("args"), Mapping) else {}
    return {
        "in_dim": in_dim,
        "proj_dim": proj_dim,
        "out_dim": out_dim,
        "dim_act": _dim_act(outer),
        "wrapper": wrapper,
        "metadata": dict(ours.get("metadata", {})),
        "method_version": ours.get("method_version"),
        "args": dict(args),
    }


def _json_checked(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata must survive JSON (and so `weights_only` loading) unchanged."""
    for key, value in metadata.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"save_projection: metadata[{key!r}] is not JSON-able "
                f"({type(value).__name__}): {exc}"
            ) from None
    return json.loads(json.dumps(metadata))


def save_projection(head: ProjectionHead, path: str | os.PathLike, **metadata: Any) -> Path:
    """Write `head` so that both we and the official loaders can read it.

    Layout: `{"state_dict": ..., "args": {...}, "out_dim": ..., "textme": {...}}`.
    `state_dict` and `args` (head arguments plus any training arguments passed as
    metadata, e.g. epochs, lr) follow the official trainer; `textme` holds our block:
    format version, method version, head config and the caller's metadata (encoder
    identity, offset used, pivot, epochs, final loss, ...), which must be JSON-able.
    The file is written to a temporary name and renamed into place.
    """
    from textme import METHOD_VERSION  # late: textme/__init__ imports this module

    if not isinstance(head, ProjectionHead):
        raise TypeError(f"save_projection expects a ProjectionHead, got {type(head).__name__}")
    meta = _json_checked(metadata)
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    args = {**{k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))},
            **head.config(), "use_projection": True}
    payload = {
        "state_dict": state,
        "args": args,
        "out_dim": head.out_dim,
        METADATA_KEY: {
            "format": "textme-projection",
            "format_version": 1,
            "method_version": METHOD_VERSION,
            "head": head.config(),
            "metadata": meta,
        },
    }
    if isinstance(meta.get("epochs"), int):
        payload["epoch"] = meta["epochs"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
